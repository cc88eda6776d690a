"""MobileNet-v1 backbone (Howard et al. 2017) with a width multiplier, returning C2..C5.

RF-Net trains it from scratch (paper section 4.2); ``cfg.backbone.pretrained_path`` can
optionally point to a state dict for this module (e.g. one saved from a previous run).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from rfnet.config import BackboneConfig

log = logging.getLogger(__name__)

# (out_channels, stride) of the 13 depthwise-separable blocks; the stem is a stride-2 conv to 32.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2), (128, 1),  # -> stride 4  (C2)
    (256, 2), (256, 1),  # -> stride 8  (C3)
    (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),  # -> stride 16 (C4)
    (1024, 2), (1024, 1),  # -> stride 32 (C5)
)
# Index (in _BLOCKS) of the last block of each stage C2..C5.
_STAGE_ENDS = (2, 4, 10, 12)


def scaled_channels(channels: int, width_mult: float, min_channels: int = 8) -> int:
    """Channel count under a width multiplier (TF-slim rule: ``max(int(c * w), 8)``)."""
    return max(int(channels * width_mult), min_channels)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        # ReLU6 as in the reference implementation; its bounded range also suits INT8.
        nn.ReLU6(inplace=True),
    )


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv + BN + ReLU6, then 1x1 pointwise conv + BN + ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1, 1))


class MobileNetV1(nn.Module):
    """MobileNet-v1 feature extractor.

    ``forward(x [B,3,H,W]) -> [C2 [B,c2,H/4,W/4], C3 [.,H/8], C4 [.,H/16], C5 [.,H/32]]``;
    ``out_channels`` lists c2..c5 (128, 256, 512, 1024 times the width multiplier).
    """

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"backbone.width_mult must be > 0, got {width_mult}")
        stem = scaled_channels(32, width_mult)
        self.stem = _conv_bn(3, stem, 3, 2)
        blocks: list[nn.Module] = []
        cin = stem
        chans: list[int] = []
        for cout, stride in _BLOCKS:
            cout = scaled_channels(cout, width_mult)
            blocks.append(DepthwiseSeparable(cin, cout, stride))
            chans.append(cout)
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels: list[int] = [chans[i] for i in _STAGE_ENDS]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _STAGE_ENDS:
                feats.append(x)
        return feats


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a state dict (optionally wrapped as ``{"state_dict": ...}``) into ``backbone``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing or does
    not fit the backbone (e.g. another width multiplier).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: backbone weights (backbone.pretrained_path) not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{p}: cannot read backbone weights: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{p}: expected a state dict, got {type(state).__name__}")
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{p}: backbone weights do not fit this backbone: {exc}") from exc
    log.info("loaded backbone weights from %s", p)


def build_backbone(cfg: BackboneConfig) -> MobileNetV1:
    """MobileNet-v1 of ``cfg.width_mult``, with ``cfg.pretrained_path`` loaded when set."""
    backbone = MobileNetV1(cfg.width_mult)
    if cfg.pretrained_path:
        load_backbone_weights(backbone, cfg.pretrained_path)
    return backbone
