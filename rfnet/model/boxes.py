"""Box utilities shared by the RPN and the RoI heads: delta coding, matching, sampling.

Everything on the inference path here is written with tensor ops only (no ``.item()``, no
data-dependent Python branches) so that it traces into a static ONNX graph. The matching and
sampling helpers are training-only and may use data-dependent shapes.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_iou, nms

from rfnet.model.tracing import is_exporting, static_int

#: Largest log-scale of a width/height delta (as in Detectron): exp(4.135) = 62.5x.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    """Faster R-CNN box parameterisation (dx, dy, dw, dh) scaled by ``weights``."""

    def __init__(self, weights: tuple[float, float, float, float]) -> None:
        self.weights = tuple(float(w) for w in weights)

    def encode(self, gt: Tensor, ref: Tensor) -> Tensor:
        """Deltas that turn ``ref`` [N,4] xyxy into ``gt`` [N,4] xyxy -> [N,4]."""
        wx, wy, ww, wh = self.weights
        rw = ref[:, 2] - ref[:, 0]
        rh = ref[:, 3] - ref[:, 1]
        rx = ref[:, 0] + 0.5 * rw
        ry = ref[:, 1] + 0.5 * rh
        gw = gt[:, 2] - gt[:, 0]
        gh = gt[:, 3] - gt[:, 1]
        gx = gt[:, 0] + 0.5 * gw
        gy = gt[:, 1] + 0.5 * gh
        return torch.stack(
            (wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * torch.log(gw / rw), wh * torch.log(gh / rh)), dim=-1
        )

    def decode(self, deltas: Tensor, ref: Tensor) -> Tensor:
        """Apply ``deltas`` [...,4] to reference boxes ``ref`` [...,4] (broadcastable) -> [...,4] xyxy."""
        wx, wy, ww, wh = self.weights
        rw = ref[..., 2] - ref[..., 0]
        rh = ref[..., 3] - ref[..., 1]
        rx = ref[..., 0] + 0.5 * rw
        ry = ref[..., 1] + 0.5 * rh
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        # Clamp before exp so an untrained head cannot produce inf boxes.
        dw = torch.clamp(deltas[..., 2] / ww, max=BBOX_XFORM_CLIP)
        dh = torch.clamp(deltas[..., 3] / wh, max=BBOX_XFORM_CLIP)
        cx = dx * rw + rx
        cy = dy * rh + ry
        w = torch.exp(dw) * rw
        h = torch.exp(dh) * rh
        return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clip xyxy boxes [...,4] to the image ``[0,width] x [0,height]`` (static sizes)."""
    x = boxes[..., 0::2].clamp(min=0.0, max=float(width))
    y = boxes[..., 1::2].clamp(min=0.0, max=float(height))
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def scale_boxes(boxes: Tensor, factor: float) -> Tensor:
    """Scale boxes [..., 4] xyxy by ``factor`` about their centres (1.0: unchanged)."""
    if factor == 1.0:
        return boxes
    centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    half = (boxes[..., 2:] - boxes[..., :2]) * (0.5 * factor)
    return torch.cat((centre - half, centre + half), dim=-1)


def jitter_boxes(boxes: Tensor, copies: int, jitter: float, scale: tuple[float, float] = (1.0, 1.0)) -> Tensor:
    """``copies`` jittered copies of each box: [N,4] xyxy -> [N * copies, 4] (box-major).

    Each side moves independently by ``U(-jitter, jitter)`` times the box's width (x sides) or
    height (y sides); then each copy is scaled about its centre by a factor log-uniform in
    ``scale`` (lo, hi) (both axes alike; (1, 1): none). The result keeps at least 1 % of the
    original width and height. Draws from torch's default generator (the trainer seeds it).
    """
    lo_s, hi_s = scale
    if copies < 1 or jitter < 0 or not 0 < lo_s <= hi_s:
        raise ValueError(f"jitter_boxes: copies must be >= 1, jitter >= 0 and 0 < scale[0] <= scale[1], "
                         f"got {copies}, {jitter}, {scale}")
    rep = boxes.repeat_interleave(copies, dim=0)
    size = (rep[:, 2:] - rep[:, :2]).repeat(1, 2)  # [w, h, w, h]
    moved = rep + (torch.rand_like(rep) * 2 - 1) * jitter * size
    if hi_s > lo_s or lo_s != 1.0:
        u = torch.rand_like(rep[:, :1])
        factor = torch.exp(math.log(lo_s) + u * (math.log(hi_s) - math.log(lo_s)))
        centre = (moved[:, :2] + moved[:, 2:]) * 0.5
        half = (moved[:, 2:] - moved[:, :2]) * 0.5 * factor
        moved = torch.cat((centre - half, centre + half), dim=1)
    min_size = size[:, :2] * 0.01
    lo = torch.minimum(moved[:, :2], moved[:, 2:] - min_size)
    hi = torch.maximum(moved[:, 2:], lo + min_size)
    return torch.cat((lo, hi), dim=1)


def box_sizes_ok(boxes: Tensor, min_size: float) -> Tensor:
    """Bool [...] mask of boxes whose width and height are both >= ``min_size``."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def match_boxes(
    gt: Tensor, candidates: Tensor, fg_thresh: float, bg_thresh: float, allow_low_quality: bool
) -> tuple[Tensor, Tensor]:
    """Match candidates [M,4] to ground truth [N,4] (training only).

    Returns ``(matched_idx [M] int64, label [M] float)`` where label is 1 (IoU >= fg_thresh),
    0 (IoU < bg_thresh) or -1 (between: ignored). With ``allow_low_quality`` every GT box's
    best candidates are positive too (RPN rule, so that small objects get anchors).
    With no GT box every candidate is background.
    """
    m = candidates.shape[0]
    if gt.numel() == 0:
        return (torch.zeros(m, dtype=torch.int64, device=candidates.device),
                torch.zeros(m, dtype=candidates.dtype, device=candidates.device))
    iou = box_iou(gt, candidates)  # [N, M]
    best_iou, matched = iou.max(dim=0)
    label = torch.full((m,), -1.0, dtype=candidates.dtype, device=candidates.device)
    label[best_iou < bg_thresh] = 0.0
    label[best_iou >= fg_thresh] = 1.0
    if allow_low_quality:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        gt_idx, cand_idx = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        label[cand_idx] = 1.0
        matched[cand_idx] = gt_idx
    return matched, label


def sample_labels(label: Tensor, batch_size: int, positive_fraction: float, generator: torch.Generator | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Randomly sample at most ``batch_size`` of the labelled entries (training only).

    ``label`` [M] holds 1 (positive), 0 (negative), -1 (ignore). Returns the indices of the
    sampled positives and negatives (int64, positives first used for box/mask losses).
    """
    pos = torch.nonzero(label == 1, as_tuple=True)[0]
    neg = torch.nonzero(label == 0, as_tuple=True)[0]
    num_pos = min(pos.numel(), int(batch_size * positive_fraction))
    num_neg = min(neg.numel(), batch_size - num_pos)
    pos = pos[torch.randperm(pos.numel(), device=pos.device, generator=generator)[:num_pos]]
    neg = neg[torch.randperm(neg.numel(), device=neg.device, generator=generator)[:num_neg]]
    return pos, neg


def fpn_levels(boxes: Tensor, k_min: int = 2, k_max: int = 5, canonical_size: float = 224.0,
               canonical_level: int = 4) -> Tensor:
    """FPN level-assignment rule (Lin et al. eq. 1): boxes [R,4] -> level index [R] in 0..k_max-k_min.

    ``k = floor(k0 + log2(sqrt(w*h) / 224))`` clamped to ``[k_min, k_max]``; returned relative to
    ``k_min`` (0 = P2). Tensor ops only, so it exports.
    """
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6) * (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    k = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_size + 1e-6))
    return (k.clamp(min=k_min, max=k_max) - k_min).to(torch.int64)


def smooth_l1(input: Tensor, target: Tensor, beta: float) -> Tensor:
    """Summed smooth-L1 loss (caller normalises)."""
    return torch.nn.functional.smooth_l1_loss(input, target, beta=beta, reduction="sum")


class _PerImageNMS(torch.autograd.Function):
    """NMS within each image of a batch: boxes [B,N,4], scores [B,N] -> selected [S,3] int64 rows
    ``(image, 0, box)``, as ONNX ``NonMaxSuppression`` returns them (its batch axis: one NMS per
    image, which TensorRT's INMSLayer also runs per batch item, at most its TopK box limit each)."""

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, iou_threshold: float, n: int) -> Tensor:  # type: ignore[override]
        rows = []
        for b in range(boxes.shape[0]):
            keep = nms(boxes[b], scores[b], iou_threshold)
            rows.append(torch.stack((torch.full_like(keep, b), torch.zeros_like(keep), keep), dim=1))
        return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, iou_threshold: float, n: int) -> Any:
        # max_output_boxes_per_class = n, the (static) candidates per image: every box may stay
        scores3 = g.op("Unsqueeze", scores, g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64)))
        return g.op("NonMaxSuppression", boxes, scores3,
                    g.op("Constant", value_t=torch.tensor([n], dtype=torch.int64)),
                    g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)))


def per_image_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, groups: Tensor | None = None,
                  max_coordinate: float = 0.0, removed: float = -1.0) -> Tensor:
    """NMS of each image on its own: boxes [B,N,4], scores [B,N] -> scores [B,N] with every
    suppressed box set to ``removed``.

    ``groups`` [B,N] (e.g. pyramid levels) keeps boxes of different groups from suppressing each
    other: each group's boxes are offset by ``group * (max_coordinate + 1)``, a constant when
    tracing. The selection is one ONNX ``NonMaxSuppression`` over the batch axis (one NMS per
    image), so a batch of B images gives each image the result it gets alone, and neither ONNX
    Runtime nor TensorRT (INMSLayer keeps at most its TopK box limit *per batch item*) ever sees
    more than N boxes at once. The scatter back is per image too: no index spans two images.
    """
    b, n = boxes.shape[0], boxes.shape[1]
    if groups is not None:
        boxes = boxes + (groups.to(boxes.dtype) * (float(max_coordinate) + 1.0)).unsqueeze(-1)
    if not is_exporting():
        kept = torch.full_like(scores, removed)
        for i in range(static_int(b) if b else 0):
            keep = nms(boxes[i], scores[i], iou_threshold)
            kept[i, keep] = scores[i, keep]
        return kept
    selected = _PerImageNMS.apply(boxes, scores, iou_threshold, static_int(n))
    flat = selected[:, 0] * n + selected[:, 2]
    kept = torch.full_like(scores, removed).reshape(-1)
    kept = kept.scatter(0, flat, scores.reshape(-1).gather(0, flat))
    return kept.reshape(scores.shape)
