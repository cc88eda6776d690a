"""U-Net mask branch over the RoI's image (``mask_head.branch = "unet"``; not in the paper).

The paper's branch (:mod:`rfnet.model.mask_head`) sees each RoI only through the pyramid
pooled at 56 x 56 from P2..P5, whose finest level has stride 4; on Drishti-GS it draws an
average cup whatever the eye (docs/lab/results-log.md). This branch segments the input image itself,
pooled over the RoI at ``S x S`` (stride about 1 at the 768 px input), with a small U-Net,
and feeds it the Fusion Feature Pooling streams where their resolution matches::

    image [R,3,S,S] -> enc0 (c)  at S
                    -> enc1 (2c) at S/2   <- low stream  [R,Cf,S/2,S/2] (P2, P3 max), 1x1 to c
                    -> enc2 (4c) at S/4   <- high stream [R,Cf,S/4,S/4] (P4, P5 max), 1x1 to c
                    -> enc3 .. enc_depth  (max-pool x2 each)
    decoder: 2x2 transposed conv, concatenation with the encoder level, two 3x3 convs, up to S
    -> 1x1 predictor -> logits [R, num_classes, S, S]

``unet_pyramid = False`` drops the two pyramid inputs (an image-only U-Net over the RoI).
``unet_polar = True`` (image-only only; :class:`PolarUNetMaskHead`) segments the RoI in polar
coordinates about its centre, as M-Net does (Fu et al., IEEE TMI 2018): the pooled image is
resampled onto a radius x angle grid (rows: radius 0 .. half the RoI's side; columns: angle
0 .. 2 pi), where disc and cup become
stacked bands whose boundaries run across the image, and the U-Net's logits are resampled back onto
the RoI's Cartesian grid, so outputs, losses and the export contract do not change. Both resamplings
are fixed bilinear ``grid_sample`` grids (:func:`polar_grids`; ONNX ``GridSample``, opset 16).
``unet_polar_circular = True`` pads every 3x3 convolution of the U-Net circularly along the angle
(:class:`AngleCircularConv2d`), so no level sees an edge at angle 0 and the polar logits shift with
the polar image.
Every block is two 3x3 conv + BatchNorm + ReLU (BatchNorm folds into the convs at export).
``S = mask_size`` must be divisible by ``2 ** unet_depth``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfnet.config import MaskHeadConfig
from rfnet.model.mask_head import init_mask_branch


class AngleCircularConv2d(nn.Conv2d):
    """3x3 convolution over a polar map [R,C,H (radius),W (angle)] that pads the angle axis
    circularly and the radius axis with zeros, so no layer sees an edge at angle 0 / 2 pi.

    Parameters and state-dict keys are those of ``nn.Conv2d(cin, cout, 3, padding=1)``; in ONNX the
    padding is a Slice/Concat (angle) and a Pad (radius) before a Conv without padding.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(wrap_columns(x, 1), (0, 0, 1, 1)))


def _conv3(cin: int, cout: int, circular: bool) -> nn.Conv2d:
    return AngleCircularConv2d(cin, cout) if circular else nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def _block(cin: int, cout: int, circular: bool = False) -> nn.Sequential:
    return nn.Sequential(
        _conv3(cin, cout, circular), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        _conv3(cout, cout, circular), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def _reduce(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def polar_grids(size: int) -> tuple[Tensor, Tensor]:
    """``(to_polar, to_cartesian)``: ``grid_sample`` grids [1,S,S,2] (x, y normalised to [-1, 1],
    ``align_corners=False``) for an S x S RoI image.

    ``to_polar`` samples the RoI image at polar pixel (row i, column j) = radius (i + 0.5) / S of
    half the side, angle 2 pi (j + 0.5) / S (0 along +x, towards +y). ``to_cartesian`` samples a
    polar map *circularly padded by one column on each side* (:func:`wrap_columns` by 1, width S + 2) at
    each Cartesian pixel's radius and angle, so the angle wraps without a seam; radii beyond the
    inscribed circle (the RoI's corners) clamp to the outermost ring (``padding_mode="border"``).
    """
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size  # (0, 1): radii, angle fractions
    r, frac = torch.meshgrid(centres, centres, indexing="ij")
    theta = 2.0 * math.pi * frac
    to_polar = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1)
    y, x = torch.meshgrid(2.0 * centres - 1.0, 2.0 * centres - 1.0, indexing="ij")
    angle = torch.remainder(torch.atan2(y, x), 2.0 * math.pi)
    column = angle * size / (2.0 * math.pi) - 0.5 + 1.0  # pixel index in the padded map
    to_cartesian = torch.stack(((2.0 * column + 1.0) / (size + 2) - 1.0, 2.0 * torch.sqrt(x * x + y * y) - 1.0), dim=-1)
    return to_polar.float().unsqueeze(0), to_cartesian.float().unsqueeze(0)


def wrap_columns(x: Tensor, width: int) -> Tensor:
    """[..., W0] -> [..., W0 + 2 width]: the last ``width`` columns before the first, the first after the last."""
    return torch.cat((x[..., -width:], x, x[..., :width]), dim=-1) if width else x


def _resample(x: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), mode="bilinear", padding_mode="border",
                         align_corners=False)


class UNetMaskHead(nn.Module):
    """The Cartesian U-Net: ``forward(low [R,Cf,S/2,S/2], high [R,Cf,S/4,S/4], image [R,3,S,S]) ->
    logits [R,num_classes,S,S]``.

    With ``unet_pyramid`` off, ``low`` and ``high`` are ignored (pass None): an image-only U-Net.
    """

    uses_image = True

    def __init__(self, in_channels: int, cfg: MaskHeadConfig, circular: bool = False) -> None:
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
            _block((3 if i == 0 else widths[i - 1]) + extra.get(i, 0), widths[i], circular) for i in range(depth + 1))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2) for i in range(depth, 0, -1))
        self.decoder = nn.ModuleList(_block(2 * widths[i - 1], widths[i - 1], circular) for i in range(depth, 0, -1))
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
        return self._unet(image, side)

    def _unet(self, x: Tensor, side: dict[int, Tensor]) -> Tensor:
        skips: list[Tensor] = []
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


class PolarUNetMaskHead(UNetMaskHead):
    """The image-only U-Net in polar coordinates about the RoI's centre (``mask_head.unet_polar``):
    ``forward(_, _, image [R,3,S,S]) -> logits [R,num_classes,S,S]``, the image resampled to polar
    (rows radius, columns angle), segmented, and resampled back. Same parameters (and checkpoint
    keys) as :class:`UNetMaskHead`; ``unet_polar_circular`` pads its convolutions along the angle."""

    # fixed sampling grids [1,S,S,2], constants of the graph rebuilt from the config (not saved)
    to_polar: Tensor
    to_cartesian: Tensor

    def __init__(self, in_channels: int, cfg: MaskHeadConfig) -> None:
        if cfg.unet_pyramid:
            raise ValueError("mask_head.unet_polar needs unet_pyramid=false: the pyramid streams are Cartesian")
        super().__init__(in_channels, cfg, circular=cfg.unet_polar_circular)
        to_polar, to_cartesian = polar_grids(cfg.mask_size)
        self.register_buffer("to_polar", to_polar, persistent=False)
        self.register_buffer("to_cartesian", to_cartesian, persistent=False)

    def forward(self, low: Tensor | None, high: Tensor | None, image: Tensor | None = None) -> Tensor:
        if image is None:
            raise ValueError("the U-Net mask branch segments the pooled image: pass it")
        polar = self.polar_logits(_resample(image, self.to_polar))
        return _resample(wrap_columns(polar, 1), self.to_cartesian)

    def polar_logits(self, polar: Tensor) -> Tensor:
        """[R,3,S,S] polar image (rows radius, columns angle) -> [R,num_classes,S,S] polar logits."""
        return self._unet(polar, {})


def build_unet_head(in_channels: int, cfg: MaskHeadConfig) -> UNetMaskHead:
    """The polar head when ``cfg.unet_polar`` is on, else the Cartesian one."""
    if cfg.unet_polar:
        return PolarUNetMaskHead(in_channels, cfg)
    if cfg.unet_polar_circular:
        raise ValueError("mask_head.unet_polar_circular needs unet_polar=true")
    return UNetMaskHead(in_channels, cfg)
