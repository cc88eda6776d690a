"""Multi-class mask branch (paper section 3.3, Fig. 2 right / Fig. 4b).

Two streams from the pooling: low-level ``[R,C,S,S]`` and high-level ``[R,C,S/2,S/2]``.
Each gets ``num_convs`` 3x3 conv + ReLU; the high stream is upsampled x2 with a learned
2x2 stride-2 transposed conv (as Mask R-CNN's mask head) and added to the low stream; then
``num_fused_convs`` 3x3 convs and a 1x1 predictor give ``num_classes`` logits per pixel
(channel 0 disc incl. cup, channel 1 cup): ``[R, num_classes, S, S]``. The two channels are
independent binary problems (sigmoid), as the paper treats OD and OC.
"""
from __future__ import annotations

from torch import Tensor, nn

from rfnet.config import MaskHeadConfig


def _conv_stack(cin: int, cout: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def init_mask_branch(branch: nn.Module) -> None:
    """He-initialise ``branch``'s convs, zero their biases; its ``predictor`` starts near zero (std 1e-3)."""
    for m in branch.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    predictor = branch.get_submodule("predictor")
    assert isinstance(predictor, nn.Conv2d)
    nn.init.normal_(predictor.weight, std=0.001)


class MultiClassMaskHead(nn.Module):
    """``forward(low [R,Cin,S,S], high [R,Cin,S/2,S/2], image=None) -> logits [R,num_classes,S,S]``
    (the image is not used: the paper's branch reads the pooled pyramid only)."""

    def __init__(self, in_channels: int, cfg: MaskHeadConfig) -> None:
        super().__init__()
        if cfg.num_convs < 0 or cfg.num_fused_convs < 0 or cfg.channels <= 0:
            raise ValueError("mask_head: num_convs/num_fused_convs must be >= 0 and channels > 0")
        c = cfg.channels
        self.pyramid_size = cfg.mask_size  # side of the pooled pyramid it takes (low stream)
        self.low = _conv_stack(in_channels, c, cfg.num_convs) if cfg.num_convs else nn.Conv2d(in_channels, c, 1)
        self.high = _conv_stack(in_channels, c, cfg.num_convs) if cfg.num_convs else nn.Conv2d(in_channels, c, 1)
        self.upsample = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.fused = _conv_stack(c, c, cfg.num_fused_convs)
        self.predictor = nn.Conv2d(c, cfg.num_classes, 1)
        init_mask_branch(self)

    uses_pyramid = True  # forward reads the two pooled pyramid streams
    uses_image = False  # and not the pooled input image

    def forward(self, low: Tensor, high: Tensor, image: Tensor | None = None) -> Tensor:
        x = self.low(low) + self.relu(self.upsample(self.high(high)))
        return self.predictor(self.fused(x))
