"""Second detection stage: optic disc vs background + class-agnostic box regression.

Box features are pooled with Mask R-CNN's one-level-per-RoI rule (``pool_size`` x
``pool_size`` RoIAlign) and go through two fully connected layers (``representation_size``).
Only one class is detected (the disc), so the classifier has 2 logits (background, disc)
and the regression 4 class-agnostic deltas.

Training (paper 4.2): GT boxes are appended to the proposals, RoIs with IoU >= 0.5 are
positive, the rest negative, and ``batch_size_per_image`` (200) RoIs are sampled per image
with ``positive_fraction`` (1:3). Inference: decode, clip, one batched NMS, then a static
top-K (scores scattered into a fixed-length vector, ``topk``): outputs are always K wide. NMS and
top-K run per image, so a batch gives each image the detections it gets alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfnet.config import MaskHeadConfig, RoIHeadConfig
from rfnet.model.boxes import (BoxCoder, box_sizes_ok, clip_boxes, jitter_boxes, match_boxes, per_image_nms,
                               sample_labels, smooth_l1)
from rfnet.model.pooling import level_select, make_rois
from rfnet.model.tracing import static_int

#: Detections smaller than this (pixels) are dropped (as torchvision).
_MIN_DET_SIZE = 1e-2


class BoxHead(nn.Module):
    """``[R,C,s,s] -> (class logits [R,2], deltas [R,4])`` via two FC layers."""

    def __init__(self, in_channels: int, pool_size: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels * pool_size * pool_size, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.cls_score = nn.Linear(representation_size, 2)
        self.bbox_pred = nn.Linear(representation_size, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))
        return self.cls_score(x), self.bbox_pred(x)


@dataclass
class PositiveRoIs:
    """Positive training RoIs handed to the mask branch.

    ``rois`` [R,5] (batch index, xyxy), ``gt_index`` [R] int64 into the concatenation of all
    images' GT masks (image order).
    """

    rois: Tensor
    gt_index: Tensor


class RoIHeads(nn.Module):
    """Box head with training sampling/losses and static-shape inference.

    ``mask`` says which training RoIs go to the mask branch (``train_rois``: the sampled
    positives, at most ``max_positive_rois`` per image, or jittered copies of the GT boxes);
    None: all positives.
    """

    def __init__(self, cfg: RoIHeadConfig, channels: int, mask: MaskHeadConfig | None = None,
                 min_level: int = 2) -> None:
        super().__init__()
        self.min_level = min_level  # the pyramid handed to loss() / detect() starts at P<min_level>
        if cfg.detections_per_img < 1:
            raise ValueError(f"roi_heads.detections_per_img must be >= 1, got {cfg.detections_per_img}")
        mask = mask or MaskHeadConfig()
        if mask.train_rois not in ("proposals", "jittered_gt"):
            raise ValueError(f"mask_head.train_rois must be 'proposals' or 'jittered_gt', got {mask.train_rois!r}")
        if len(mask.gt_scale) != 2 or not 0 < mask.gt_scale[0] <= mask.gt_scale[1]:
            raise ValueError(f"mask_head.gt_scale must be [lo, hi] with 0 < lo <= hi, got {list(mask.gt_scale)}")
        self.cfg = cfg
        self.mask = mask
        self.head = BoxHead(channels, cfg.pool_size, cfg.representation_size)
        self.coder = BoxCoder(cfg.box_weights)

    def _features(self, feats: list[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(level_select(feats, rois, self.cfg.pool_size, self.cfg.sampling_ratio,
                                      min_level=self.min_level))

    # ------------------------------------------------------------------ training
    def loss(self, feats: list[Tensor], proposals: Tensor, targets: list[dict[str, Tensor]]
             ) -> tuple[dict[str, Tensor], PositiveRoIs]:
        """Sample RoIs, compute classifier + box losses, return the positives for the mask branch."""
        cfg = self.cfg
        rois, labels, reg_targets, pos_rois, pos_gt = [], [], [], [], []
        gt_offset = 0
        for i, t in enumerate(targets):
            gt = t["boxes"]
            cand = torch.cat((proposals[i], gt), 0)  # GT appended: positives from the start
            matched, label = match_boxes(gt, cand, cfg.fg_iou_thresh, cfg.bg_iou_thresh, allow_low_quality=False)
            pos, neg = sample_labels(label, cfg.batch_size_per_image, cfg.positive_fraction)
            idx = torch.cat((pos, neg))
            boxes = cand[idx]
            bidx = torch.full((idx.numel(), 1), float(i), dtype=boxes.dtype, device=boxes.device)
            rois.append(torch.cat((bidx, boxes), 1))
            lab = torch.zeros(idx.numel(), dtype=torch.int64, device=boxes.device)
            lab[: pos.numel()] = 1
            labels.append(lab)
            if pos.numel():
                reg_targets.append(self.coder.encode(gt[matched[pos]], cand[pos]))
            mask_rois, mask_gt = self._mask_rois(i, gt, rois[-1][: pos.numel()], matched[pos])
            pos_rois.append(mask_rois)
            pos_gt.append(mask_gt + gt_offset)
            gt_offset += gt.shape[0]
        all_rois = torch.cat(rois)
        all_labels = torch.cat(labels)
        cls_logits, deltas = self._features(feats, all_rois)
        loss_cls = F.cross_entropy(cls_logits, all_labels)
        pos_mask = all_labels == 1
        if reg_targets:
            loss_box = smooth_l1(deltas[pos_mask], torch.cat(reg_targets), beta=1.0 / 9) / max(all_labels.numel(), 1)
        else:
            loss_box = deltas.sum() * 0.0
        positives = PositiveRoIs(rois=torch.cat(pos_rois), gt_index=torch.cat(pos_gt))
        return {"loss_classifier": loss_cls, "loss_box": loss_box}, positives

    def _mask_rois(self, image: int, gt: Tensor, pos_rois: Tensor, pos_gt: Tensor) -> tuple[Tensor, Tensor]:
        """One image's mask-branch RoIs [R,5] and their GT indices [R] (into this image's boxes
        ``gt`` [G,4]), from its positive RoIs ``pos_rois`` [P,5] matched to ``pos_gt`` [P]."""
        m = self.mask
        if m.train_rois == "jittered_gt":  # like the detections the branch runs on at test time
            boxes = jitter_boxes(gt, m.gt_rois_per_image, m.gt_jitter, (m.gt_scale[0], m.gt_scale[1]))
            index = torch.arange(gt.shape[0], device=gt.device).repeat_interleave(m.gt_rois_per_image)
            return torch.cat((torch.full_like(boxes[:, :1], float(image)), boxes), 1), index
        n = pos_rois.shape[0] if m.max_positive_rois is None else min(pos_rois.shape[0], m.max_positive_rois)
        return pos_rois[:n], pos_gt[:n]

    # ----------------------------------------------------------------- inference
    def detect(self, feats: list[Tensor], proposals: Tensor, image_size: tuple[int, int]
               ) -> tuple[Tensor, Tensor]:
        """Proposals [B,P,4] -> (boxes [B,K,4], scores [B,K]) sorted by score, padded with zeros.

        Static shapes: K = detections_per_img regardless of how many boxes survive NMS.
        """
        cfg = self.cfg
        b, p = proposals.shape[0], proposals.shape[1]
        cls_logits, deltas = self._features(feats, make_rois(proposals))
        scores = F.softmax(cls_logits, dim=-1)[:, 1]  # [B*P] disc probability
        boxes = clip_boxes(self.coder.decode(deltas, proposals.reshape(-1, 4)), *image_size)  # [B*P,4]
        ok = box_sizes_ok(boxes, _MIN_DET_SIZE) & (scores > cfg.score_thresh)
        scores = torch.where(ok, scores, torch.full_like(scores, -1.0))
        # one NMS per image (a batch gives each image the detections it gets alone)
        kept = per_image_nms(boxes.reshape(b, p, 4), scores.reshape(b, p), cfg.nms_thresh)
        k = min(cfg.detections_per_img, static_int(p))
        top_scores, top_idx = kept.topk(k, dim=1)
        top_boxes = torch.gather(boxes.reshape(b, p, 4), 1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
        valid = top_scores > 0  # NMS-suppressed / filtered entries carry -1
        top_scores = torch.where(valid, top_scores, torch.zeros_like(top_scores))
        top_boxes = top_boxes * valid.unsqueeze(-1).to(top_boxes.dtype)
        if k < cfg.detections_per_img:  # fewer proposals than K (tiny inputs): pad statically
            pad = cfg.detections_per_img - k
            top_scores = F.pad(top_scores, (0, pad))
            top_boxes = F.pad(top_boxes, (0, 0, 0, pad))
        return top_boxes, top_scores
