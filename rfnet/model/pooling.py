"""RoI feature pooling from the pyramid P2..P5.

* :class:`FusionFeaturePooling` (RF-Net, paper section 3.2 / Fig. 3b): every RoI is pooled
  from *every* level: P2 and P3 at ``mask_size`` and fused by an elementwise max (low-level
  stream), P4 and P5 at ``mask_size // 2`` and fused by max (high-level stream).
* :class:`PyramidFeaturePooling` (Mask R-CNN, Fig. 3a; the Table 2 ablation): each RoI is
  pooled from ONE level chosen by the FPN level-assignment rule.

Both use ``torchvision.ops.roi_align(aligned=True)`` with an explicit ``sampling_ratio``,
which exports to ONNX ``RoiAlign(coordinate_transformation_mode="half_pixel")`` at opset >= 16.
One-level-per-RoI pooling (the box head, and the pyramid ablation's mask pooling) pools each
RoI on its own level only, in eager mode and in the exported graph alike
(:func:`level_select`); the old fixed-shape export form, every RoI on every level and a
``Where`` per level, is kept as ``static=True``.

RoIs are given as ``[R,5]`` rows ``(batch_index, x0, y0, x1, y1)`` in input pixels.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from rfnet.model.boxes import fpn_levels
from rfnet.model.roi_align_mm import roi_align_mm
from rfnet.model.tracing import is_exporting, quiet_tracer

#: Strides of P2..P5.
STRIDES = (4, 8, 16, 32)


def level_stride(level: int, min_level: int = 2) -> int:
    """Stride of ``feats[level]`` in a pyramid that starts at ``P<min_level>``."""
    return 2 ** (min_level + level)


def _pool(feat: Tensor, rois: Tensor, size: int, stride: int, sampling_ratio: int) -> Tensor:
    if feat.requires_grad and feat.device.type == "cpu" and sampling_ratio > 0 and not is_exporting():
        # CPU training: same values, a backward several times faster (rfnet/model/roi_align_mm.py)
        return roi_align_mm(feat, rois, size, 1.0 / stride, sampling_ratio)
    with quiet_tracer():  # torchvision's own shape assert trips a TracerWarning
        return roi_align(feat, rois, output_size=(size, size), spatial_scale=1.0 / stride,
                         sampling_ratio=sampling_ratio, aligned=True)


def pool_image(images: Tensor, rois: Tensor, size: int, sampling_ratio: int) -> Tensor:
    """The input image itself over each RoI: images ``[B,3,H,W]``, rois ``[R,5]`` -> ``[R,3,size,size]``."""
    return _pool(images, rois, size, 1, sampling_ratio)


def level_select(feats: list[Tensor], rois: Tensor, size: int, sampling_ratio: int,
                 static: bool = False, min_level: int = 2) -> Tensor:
    """One-level-per-RoI pooling (Mask R-CNN): ``[R,5] -> [R,C,size,size]``.

    Each RoI is pooled only on the level the FPN rule assigns it. Eager mode gathers the RoIs
    of each level and copies the results back (empty levels skipped; training's RoIAlign
    backward dominates there). While exporting, the same gather is traced as pure ONNX
    (:func:`_gather_levels`: ``NonZero`` -> ``Gather`` -> one ``RoiAlign`` per level ->
    ``Concat`` -> the inverse permutation), so the graph pools R RoIs once instead of R on
    every level. ``static=True``: the fixed-shape form exported before, every RoI on every
    level kept by ``Where`` (4x the RoIAlign work, no data-dependent shapes). All give
    identical values. ``feats`` start at ``P<min_level>`` (2: P2..P5; 3: P3..P5).
    """
    levels = fpn_levels(rois[:, 1:], k_min=min_level, k_max=min_level - 1 + len(feats))
    if static:
        out = _pool(feats[0], rois, size, level_stride(0, min_level), sampling_ratio)
        for lvl in range(1, len(feats)):
            pooled = _pool(feats[lvl], rois, size, level_stride(lvl, min_level), sampling_ratio)
            out = torch.where((levels == lvl).view(-1, 1, 1, 1), pooled, out)
        return out
    if is_exporting():
        return _gather_levels(feats, rois, levels, size, sampling_ratio, min_level)
    out = rois.new_zeros((rois.shape[0], feats[0].shape[1], size, size))
    for lvl, feat in enumerate(feats):
        idx = torch.nonzero(levels == lvl, as_tuple=True)[0]
        if idx.numel():
            out = out.index_copy(0, idx, _pool(feat, rois[idx], size, level_stride(lvl, min_level), sampling_ratio))
    return out


def _gather_levels(feats: list[Tensor], rois: Tensor, levels: Tensor, size: int, sampling_ratio: int,
                   min_level: int = 2) -> Tensor:
    """Traceable per-level pooling: the RoIs of each level (``NonZero`` on ``levels == l``, a
    bool input TensorRT's INonZeroLayer takes; ``Gather``) through that level's ``RoiAlign``,
    concatenated in level order, then put back in RoI order by gathering with the inverse
    permutation (a ``ScatterElements`` of positions into the concatenated indices: no TopK over
    the R = B x P RoIs, which TensorRT limits to K <= 3840). No output-sized zero tensor: nothing
    R x C x size x size is constant-folded into the file.
    A level without RoIs gives an empty ``RoiAlign`` (0 RoIs), which ONNX Runtime handles.
    """
    order, pooled = [], []
    for lvl, feat in enumerate(feats):
        idx = torch.nonzero(levels == lvl).reshape(-1)
        order.append(idx)
        pooled.append(_pool(feat, rois[idx], size, level_stride(lvl, min_level), sampling_ratio))
    perm = torch.cat(order)
    # the inverse permutation by a scatter of positions, not an argsort: an argsort is a TopK over
    # all B x P RoIs, which TensorRT refuses beyond K = 3840 (1000 proposals from batch 4)
    inverse = torch.zeros_like(perm).scatter(0, perm, torch.arange(perm.shape[0], device=perm.device))
    return torch.cat(pooled)[inverse]


class _TwoStreamPooling(nn.Module):
    """Shared settings of the poolings that feed the two-stream mask branch."""

    def __init__(self, mask_size: int, sampling_ratio: int) -> None:
        super().__init__()
        if mask_size < 2 or mask_size % 2:
            raise ValueError(f"mask_head.mask_size must be an even number >= 2, got {mask_size}")
        self.mask_size = mask_size
        self.sampling_ratio = sampling_ratio


class FusionFeaturePooling(_TwoStreamPooling):
    """``forward([P2..P5], rois [R,5]) -> (low [R,C,S,S], high [R,C,S/2,S/2])`` with S = mask_size."""

    def forward(self, feats: list[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        s, r = self.mask_size, self.sampling_ratio
        low = torch.maximum(_pool(feats[0], rois, s, STRIDES[0], r), _pool(feats[1], rois, s, STRIDES[1], r))
        high = torch.maximum(_pool(feats[2], rois, s // 2, STRIDES[2], r),
                             _pool(feats[3], rois, s // 2, STRIDES[3], r))
        return low, high


class PyramidFeaturePooling(_TwoStreamPooling):
    """Mask R-CNN pooling for the ablation: each RoI from its assigned level only.

    The mask branch takes two streams, so the same assigned level is pooled twice: at
    ``mask_size`` (low stream) and at ``mask_size // 2`` (high stream). The branch then sees
    one level of the pyramid per RoI, which is exactly what Table 2 contrasts with FFP.
    """

    def forward(self, feats: list[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        low = level_select(feats, rois, self.mask_size, self.sampling_ratio)
        high = level_select(feats, rois, self.mask_size // 2, self.sampling_ratio)
        return low, high


def build_mask_pooler(kind: str, mask_size: int, sampling_ratio: int) -> nn.Module:
    """``"fusion"`` -> :class:`FusionFeaturePooling`, ``"pyramid"`` -> :class:`PyramidFeaturePooling`."""
    if kind == "fusion":
        return FusionFeaturePooling(mask_size, sampling_ratio)
    if kind == "pyramid":
        return PyramidFeaturePooling(mask_size, sampling_ratio)
    raise ValueError(f"mask_head.pooling must be 'fusion' or 'pyramid', got {kind!r}")


def make_rois(boxes: Tensor) -> Tensor:
    """Batched boxes [B,N,4] -> RoIs [B*N,5] with the batch index in column 0 (export-safe)."""
    b, n = boxes.shape[0], boxes.shape[1]
    idx = torch.arange(b, device=boxes.device, dtype=boxes.dtype).view(-1, 1, 1).expand(-1, n, 1)
    return torch.cat((idx, boxes), dim=2).reshape(-1, 5)
