"""U-Net mask branch over the RoI's image (``mask_head.branch = "unet"``; not in the paper).

The paper's branch (:mod:`rfnet.model.mask_head`) sees each RoI only through the pyramid
pooled at 56 x 56 from P2..P5, whose finest level has stride 4; on Drishti-GS it draws an
average cup whatever the eye (docs/results.md). This branch segments the input image itself,
pooled over the RoI at ``S x S`` (stride about 1 at the 768 px input), with a small U-Net,
and feeds it the Fusion Feature Pooling streams where their resolution matches::

    image [R,3,S,S] -> enc0 (c)  at S
                    -> enc1 (2c) at S/2   <- low stream  [R,Cf,S/2,S/2] (P2, P3 max), 1x1 to c
                    -> enc2 (4c) at S/4   <- high stream [R,Cf,S/4,S/4] (P4, P5 max), 1x1 to c
                    -> enc3 .. enc_depth  (max-pool x2 each)
    decoder: 2x2 transposed conv, concatenation with the encoder level, two 3x3 convs, up to S
    -> 1x1 predictor -> logits [R, num_classes, S, S]

``unet_pyramid = False`` drops the two pyramid inputs (an image-only U-Net over the RoI).
Every block is two 3x3 conv + BatchNorm + ReLU (BatchNorm folds into the convs at export).
``S = mask_size`` must be divisible by ``2 ** unet_depth``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rfnet.config import MaskHeadConfig
from rfnet.model.mask_head import init_mask_branch


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def _reduce(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetMaskHead(nn.Module):
    """``forward(low [R,Cf,S/2,S/2], high [R,Cf,S/4,S/4], image [R,3,S,S]) -> logits [R,num_classes,S,S]``.

    With ``unet_pyramid`` off, ``low`` and ``high`` are ignored (pass None): an image-only U-Net.
    """

    uses_image = True

    def __init__(self, in_channels: int, cfg: MaskHeadConfig) -> None:
        super().__init__()
        depth, c = cfg.unet_depth, cfg.unet_channels
        if depth < 2 or c <= 0:
            raise ValueError(f"mask_head: unet_depth must be >= 2 and unet_channels > 0, got {depth}, {c}")
        if cfg.mask_size % (2 ** depth):
            raise ValueError(f"mask_head.mask_size ({cfg.mask_size}) must be divisible by 2 ** unet_depth "
                             f"({2 ** depth}) for the U-Net branch")
        self.pyramid_size = cfg.mask_size // 2  # the low stream joins the encoder at S/2
        self.uses_pyramid = cfg.unet_pyramid
        widths = [c * 2 ** i for i in range(depth + 1)]
        extra: dict[int, int] = {}
        if self.uses_pyramid:
            self.reduce_low = _reduce(in_channels, c)
            self.reduce_high = _reduce(in_channels, c)
            extra = {1: c, 2: c}  # FFP channels concatenated at encoder levels 1 (S/2) and 2 (S/4)
        self.encoder = nn.ModuleList(
            _block((3 if i == 0 else widths[i - 1]) + extra.get(i, 0), widths[i]) for i in range(depth + 1))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2) for i in range(depth, 0, -1))
        self.decoder = nn.ModuleList(_block(2 * widths[i - 1], widths[i - 1]) for i in range(depth, 0, -1))
        self.predictor = nn.Conv2d(c, cfg.num_classes, 1)
        init_mask_branch(self)

    def forward(self, low: Tensor | None, high: Tensor | None, image: Tensor | None = None) -> Tensor:
        if image is None:
            raise ValueError("the U-Net mask branch segments the pooled image: pass it")
        side: dict[int, Tensor] = {}
        if self.uses_pyramid:
            if low is None or high is None:
                raise ValueError("this U-Net mask branch (unet_pyramid) needs the pooled pyramid streams")
            side = {1: self.reduce_low(low), 2: self.reduce_high(high)}
        skips: list[Tensor] = []
        x = image
        for i, block in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            if i in side:
                x = torch.cat((x, side[i]), dim=1)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat((up(x), skips.pop()), dim=1))
        return self.predictor(x)
