"""Region Proposal Network: objectness + box deltas per anchor, proposals, training loss.

Proposal selection is static-shaped and per image so it exports to ONNX unchanged and a
batch gives each image what it gets alone: per-level ``topk`` with Python-int sizes, one NMS
per image with the levels kept apart (:func:`rfnet.model.boxes.per_image_nms`: one ONNX
``NonMaxSuppression`` over the batch axis), kept scores scattered back into each image's
fixed-length vector and a final ``topk`` per image (field notes, section 2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfnet.config import RPNConfig
from rfnet.model.boxes import (BoxCoder, box_sizes_ok, clip_boxes, match_boxes, per_image_nms, sample_labels,
                               smooth_l1)
from rfnet.model.tracing import static_int

#: Score given to proposals that NMS or the size filter removed (sigmoid scores are >= 0).
_REMOVED = -1.0


class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then 1x1 objectness [B,A,H,W] and deltas [B,4A,H,W] per level."""

    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, 4 * num_anchors, 1)
        for m in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Returns per level objectness [B, H*W*A] and deltas [B, H*W*A, 4]."""
        logits, deltas = [], []
        for f in feats:
            t = F.relu(self.conv(f))
            b = f.shape[0]
            logits.append(self.cls_logits(t).permute(0, 2, 3, 1).reshape(b, -1))
            deltas.append(self.bbox_pred(t).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """RPN over P2..P5.

    ``forward(feats, anchors, image_size, targets=None)`` ->
    ``(proposals [B,P,4] xyxy (detached), losses dict)`` where
    P = min(post_nms_top_n, sum of per-level pre-NMS counts) is a Python int.
    """

    def __init__(self, cfg: RPNConfig, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = RPNHead(channels, num_anchors)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

    def _top_n(self) -> tuple[int, int]:
        if self.training:
            return self.cfg.pre_nms_top_n_train, self.cfg.post_nms_top_n_train
        return self.cfg.pre_nms_top_n_test, self.cfg.post_nms_top_n_test

    def propose(self, logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor],
                image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Select proposals: returns boxes [B,P,4] and scores [B,P] (removed ones scored -1)."""
        pre_n, post_n = self._top_n()
        cand_boxes, cand_scores, cand_levels = [], [], []
        for lvl, (lg, dl, an) in enumerate(zip(logits, deltas, anchors)):
            k = min(pre_n, static_int(an.shape[0]))  # Python int: static for a fixed input size
            top, idx = lg.detach().topk(k, dim=1)  # [B,k]
            d = torch.gather(dl.detach(), 1, idx.unsqueeze(-1).expand(-1, -1, 4))
            boxes = clip_boxes(self.coder.decode(d, an[idx]), *image_size)
            cand_boxes.append(boxes)
            cand_scores.append(torch.sigmoid(top))
            cand_levels.append(torch.full_like(idx, lvl))
        boxes = torch.cat(cand_boxes, 1)  # [B,M,4]
        scores = torch.cat(cand_scores, 1)  # [B,M]
        levels = torch.cat(cand_levels, 1)
        b, m = scores.shape[0], scores.shape[1]
        # Tiny boxes get score -1 instead of being removed: shapes stay static.
        scores = torch.where(box_sizes_ok(boxes, self.cfg.min_size), scores, torch.full_like(scores, _REMOVED))
        # one NMS per image, levels kept apart: a batch gives each image its own proposals
        kept_scores = per_image_nms(boxes, scores, self.cfg.nms_thresh, levels, max(image_size), _REMOVED)
        p = min(post_n, static_int(m))
        top_scores, top_idx = kept_scores.topk(p, dim=1)
        top_boxes = torch.gather(boxes, 1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
        # Slots past the surviving proposals tie at score -1 and topk may order ties differently
        # in PyTorch and ONNX Runtime: zero their boxes so whichever is picked is the same empty box.
        top_boxes = top_boxes * (top_scores > 0).unsqueeze(-1).to(top_boxes.dtype)
        return top_boxes, top_scores

    def loss(self, logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor],
             targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """BCE objectness on sampled anchors + smooth-L1 deltas on positives (training only)."""
        all_logits = torch.cat(logits, 1)  # [B, A_total]
        all_deltas = torch.cat(deltas, 1)  # [B, A_total, 4]
        all_anchors = torch.cat(anchors, 0)  # [A_total, 4]
        cls_in, cls_tgt, reg_in, reg_tgt = [], [], [], []
        for i, t in enumerate(targets):
            gt = t["boxes"]
            matched, label = match_boxes(gt, all_anchors, self.cfg.fg_iou_thresh, self.cfg.bg_iou_thresh,
                                         allow_low_quality=True)
            pos, neg = sample_labels(label, self.cfg.batch_size_per_image, self.cfg.positive_fraction)
            idx = torch.cat((pos, neg))
            cls_in.append(all_logits[i, idx])
            cls_tgt.append(label[idx])
            if pos.numel():
                reg_in.append(all_deltas[i, pos])
                reg_tgt.append(self.coder.encode(gt[matched[pos]], all_anchors[pos]))
        logits_s = torch.cat(cls_in)
        n = max(logits_s.numel(), 1)
        loss_obj = F.binary_cross_entropy_with_logits(logits_s, torch.cat(cls_tgt), reduction="sum") / n
        if reg_in:
            loss_box = smooth_l1(torch.cat(reg_in), torch.cat(reg_tgt), beta=1.0 / 9) / n
        else:
            loss_box = all_deltas.sum() * 0.0
        return {"loss_objectness": loss_obj, "loss_rpn_box": loss_box}

    def forward(self, feats: list[Tensor], anchors: list[Tensor], image_size: tuple[int, int],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits, deltas = self.head(feats)
        proposals, _ = self.propose(logits, deltas, anchors, image_size)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN in training mode needs targets")
            losses = self.loss(logits, deltas, anchors, targets)
        return proposals.detach(), losses
