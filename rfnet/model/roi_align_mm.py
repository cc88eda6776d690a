"""RoIAlign as two small matrix products per RoI: the same numbers as torchvision's, a faster
backward on CPUs.

With a fixed ``sampling_ratio`` RoIAlign is separable: every output bin averages
``sampling_ratio**2`` bilinear samples, and a bilinear sample is a product of a row weight and
a column weight, so for one RoI and one channel ``out = Wy @ F @ Wx.T`` with ``Wy``
[S, h] and ``Wx`` [S, w] the (sparse) interpolation weights over the RoI's window ``F`` [h, w]
of the feature map. The weights follow ``torchvision.ops.roi_align(aligned=True)`` exactly
(samples beyond one pixel outside the map are zero, others are clamped to the border).

Why: torchvision's CPU ``roi_align`` backward walks every output element with scalar
scatter-adds; for the mask branch (56x56 bins, up to 8 RoIs per image, pooled from four
levels) it was the largest single cost of a CPU training iteration (``rfnet.training.speed``).
Here the backward is two batched GEMMs per RoI. Used only where it pays: CPU tensors that
need gradients; export and inference keep ``torchvision.ops.roi_align`` (ONNX ``RoiAlign``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _axis_weights(start: Tensor, end: Tensor, size: int, length: int, sr: int) -> Tensor:
    """Interpolation weights along one axis: RoI edges [R] (feature pixels, half-pixel aligned)
    -> [R, size, length], each output bin averaging ``sr`` samples (times the other axis's)."""
    r = start.shape[0]
    bin_size = (end - start) / size
    i = torch.arange(size, dtype=start.dtype, device=start.device).view(1, size, 1)
    k = (torch.arange(sr, dtype=start.dtype, device=start.device).view(1, 1, sr) + 0.5) / sr
    pos = start.view(r, 1, 1) + (i + k) * bin_size.view(r, 1, 1)  # [R, size, sr]
    valid = ((pos >= -1.0) & (pos <= length)).to(start.dtype)
    pos = pos.clamp(min=0.0)
    low = pos.floor().long()
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(pos), pos - low.to(pos.dtype))
    w = torch.zeros(r, size, length, dtype=start.dtype, device=start.device)
    w.scatter_add_(2, low.view(r, size, sr), (1.0 - frac) * valid / sr)
    w.scatter_add_(2, high.view(r, size, sr), frac * valid / sr)
    return w


def _window(w: Tensor) -> list[tuple[int, int]]:
    """Per RoI, the [lo, hi) range of map pixels with a non-zero weight (at least one pixel)."""
    nz = w.abs().sum(1) > 0  # [R, length]
    length = nz.shape[1]
    first = torch.where(nz.any(1), nz.float().argmax(1), torch.zeros(nz.shape[0], dtype=torch.long))
    last = length - 1 - nz.flip(1).float().argmax(1)
    return [(int(a), max(int(a) + 1, int(b) + 1)) for a, b in zip(first.tolist(), last.tolist())]


class _RoIAlignMM(torch.autograd.Function):
    """Forward and backward over the RoIs' windows; the feature gradient is accumulated in
    place (autograd's own slicing would allocate a full-size gradient per RoI)."""

    @staticmethod
    def forward(ctx: Any, feat: Tensor, wy: Tensor, wx: Tensor, batch: list[int], rows: list[tuple[int, int]],
                cols: list[tuple[int, int]]) -> Tensor:
        out = feat.new_empty((len(batch), feat.shape[1], wy.shape[1], wx.shape[1]))
        with torch.autocast(feat.device.type, enabled=False):  # float32 throughout, as torchvision's
            for j, (b, (y0, y1), (x0, x1)) in enumerate(zip(batch, rows, cols)):
                torch.matmul(wy[j, :, y0:y1], torch.matmul(feat[b, :, y0:y1, x0:x1], wx[j, :, x0:x1].t()), out=out[j])
        ctx.save_for_backward(wy, wx)
        ctx.meta = (feat.shape, batch, rows, cols)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        wy, wx = ctx.saved_tensors
        shape, batch, rows, cols = ctx.meta
        grad = grad_out.new_zeros(shape, dtype=wy.dtype)
        grad_out = grad_out.to(wy.dtype)
        with torch.autocast(grad_out.device.type, enabled=False):
            for j, (b, (y0, y1), (x0, x1)) in enumerate(zip(batch, rows, cols)):
                # out = Wy F Wx^T  =>  dF = Wy^T dOut Wx
                grad[b, :, y0:y1, x0:x1] += torch.matmul(wy[j, :, y0:y1].t(), torch.matmul(grad_out[j], wx[j, :, x0:x1]))
        return grad, None, None, None, None, None


def roi_align_mm(feat: Tensor, rois: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int) -> Tensor:
    """``torchvision.ops.roi_align(feat, rois, (S, S), spatial_scale, sampling_ratio, aligned=True)``.

    Args:
        feat: [B, C, H, W] feature map.
        rois: [R, 5] rows (batch index, x0, y0, x1, y1) in input pixels.
    Returns:
        [R, C, S, S], differentiable with respect to ``feat`` (not ``rois``, as torchvision).
    """
    if sampling_ratio < 1:
        raise ValueError("roi_align_mm needs a fixed sampling_ratio >= 1")
    r, (_, c, h, w) = rois.shape[0], feat.shape
    if r == 0:
        return feat.new_zeros((0, c, output_size, output_size))
    if feat.dtype in (torch.bfloat16, torch.float16):
        feat = feat.float()  # under autocast the features arrive in 16 bits; pool in float32 as torchvision
    with torch.no_grad():
        batch = rois[:, 0].long().tolist()
        box = rois[:, 1:].to(feat.dtype) * spatial_scale - 0.5
        wy = _axis_weights(box[:, 1], box[:, 3], output_size, h, sampling_ratio)
        wx = _axis_weights(box[:, 0], box[:, 2], output_size, w, sampling_ratio)
    out: Tensor = _RoIAlignMM.apply(feat.contiguous(), wy, wx, batch, _window(wy), _window(wx))
    return out
