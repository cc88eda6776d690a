"""Feature Pyramid Network (Lin et al. 2017): top-down pathway + lateral connections, P2..P5."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """``forward([C2..C5]) -> [P2..P5]``, each ``[B, out_channels, H/2^l, W/2^l]``.

    1x1 lateral convs bring every C_l to ``out_channels``; the coarser level is upsampled
    (nearest, to the exact lateral size) and added; a 3x3 conv smooths each sum.
    """

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        if out_channels <= 0:
            raise ValueError(f"fpn.out_channels must be > 0, got {out_channels}")
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        inner = self.lateral[-1](feats[-1])
        outs = [self.output[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[i](feats[i])
            # Sizes are static for a fixed input, so this traces to a constant-size Resize.
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](inner))
        return outs
