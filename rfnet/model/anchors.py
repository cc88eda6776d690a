"""Anchor generation: one anchor size per pyramid level, several aspect ratios.

Anchors depend only on the (static) feature-map sizes, so they are computed in Python from
the shapes and become constants in an exported graph.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from rfnet.config import AnchorConfig


def cell_anchors(size: float, aspect_ratios: tuple[float, ...]) -> Tensor:
    """Zero-centred anchors [A,4] xyxy of area ``size**2``; ratio = height / width."""
    out = []
    for r in aspect_ratios:
        h = size * math.sqrt(r)
        w = size / math.sqrt(r)
        out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


class AnchorGenerator(nn.Module):
    """Anchors for each pyramid level: ``size x scale`` for every scale, at every aspect ratio
    (``A = len(scales) * len(aspect_ratios)`` per cell, scale-major).

    ``forward(feature_sizes, image_size) -> list of [H_l*W_l*A, 4]`` ordered (y, x, anchor),
    which matches ``head_output.permute(0, 2, 3, 1)`` flattening in the RPN.
    """

    def __init__(self, cfg: AnchorConfig) -> None:
        super().__init__()
        if not cfg.sizes or not cfg.aspect_ratios or not cfg.scales:
            raise ValueError("anchors.sizes, anchors.aspect_ratios and anchors.scales must be non-empty")
        if min(cfg.scales) <= 0:
            raise ValueError(f"anchors.scales must be > 0, got {cfg.scales}")
        self.sizes = tuple(cfg.sizes)
        self.aspect_ratios = tuple(cfg.aspect_ratios)
        self.scales = tuple(cfg.scales)
        self.num_anchors = len(self.aspect_ratios) * len(self.scales)
        # Per-instance cache keyed by the static sizes (inputs have a fixed size).
        self._cache: dict[tuple, list[Tensor]] = {}

    def forward(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int],
                device: torch.device) -> list[Tensor]:
        if len(feature_sizes) != len(self.sizes):
            raise ValueError(f"{len(feature_sizes)} feature maps but {len(self.sizes)} anchor sizes")
        key = (tuple(feature_sizes), tuple(image_size), str(device))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with warnings.catch_warnings():
            # Anchors are constants of a fixed-size graph by design: silence the tracer about it.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            out = self._make(feature_sizes, image_size, device)
        self._cache[key] = out
        return out

    def _make(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int],
              device: torch.device) -> list[Tensor]:
        out = []
        for (fh, fw), size in zip(feature_sizes, self.sizes):
            sy, sx = image_size[0] / fh, image_size[1] / fw  # the level's stride
            ys = torch.arange(fh, dtype=torch.float32) * sy
            xs = torch.arange(fw, dtype=torch.float32) * sx
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
            cells = torch.cat([cell_anchors(size * scale, self.aspect_ratios) for scale in self.scales])
            out.append((shifts + cells[None]).reshape(-1, 4).to(device))
        return out
