"""RF-Net: MobileNet-v1 + FPN, RPN, box head, Fusion Feature Pooling, multi-class mask branch.

Contract (docs/design.md, "Model outputs"):

* ``model.eval(); model(images [B,3,S,S])`` -> ``{"boxes" [B,K,4], "scores" [B,K],
  "masks" [B,K,2,M,M]}`` (xyxy input pixels, sorted by score, padded slots score 0 / box 0 /
  mask 0; masks are sigmoid probabilities, channel 0 disc incl. cup, channel 1 cup, covering
  each box scaled by ``mask_head.box_scale`` about its centre).
* ``model.train(); model(images, targets)`` -> dict of scalar losses.

The eval path uses tensor ops with static shapes only, so it traces to ONNX
(``torch.onnx.export(..., opset_version=17, dynamo=False)``).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfnet.common.contract import OUTPUT_NAMES
from rfnet.config import MaskHeadConfig, ModelConfig
from rfnet.model.anchors import AnchorGenerator
from rfnet.model.backbone import build_backbone
from rfnet.model.boxes import scale_boxes
from rfnet.model.fpn import FPN
from rfnet.model.losses import mask_loss, mask_targets
from rfnet.model.mask_head import MultiClassMaskHead
from rfnet.model.pooling import build_mask_pooler, make_rois, pool_image
from rfnet.model.roi_heads import RoIHeads
from rfnet.model.rpn import RegionProposalNetwork
from rfnet.model.tracing import static_int
from rfnet.model.unet_head import build_unet_head


class MaskBranch(Protocol):
    """What a mask head gives :class:`RFNet`: which pooled inputs it reads and its logits.

    ``uses_pyramid``: it reads the two Fusion Feature Pooling streams, pooled at ``pyramid_size``
    (low [R,Cf,P,P], high [R,Cf,P/2,P/2]); ``uses_image``: it reads the input image pooled over the
    RoI at [R,3,S,S]. Calling it gives logits [R,num_classes,S,S].
    """

    uses_pyramid: bool
    uses_image: bool
    pyramid_size: int

    def __call__(self, low: Tensor | None, high: Tensor | None, image: Tensor | None = None) -> Tensor: ...


def build_mask_head(in_channels: int, cfg: MaskHeadConfig) -> MaskBranch:
    """``"streams"`` -> :class:`MultiClassMaskHead` (the paper's), ``"unet"`` -> the Cartesian or the
    polar U-Net (:func:`rfnet.model.unet_head.build_unet_head`)."""
    if cfg.branch == "streams":
        return MultiClassMaskHead(in_channels, cfg)
    if cfg.branch == "unet":
        return build_unet_head(in_channels, cfg)
    raise ValueError(f"mask_head.branch must be 'streams' or 'unet', got {cfg.branch!r}")


class RFNet(nn.Module):
    """Region Focus Network built from one :class:`~rfnet.config.ModelConfig`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.mask_head.num_classes != 2:
            raise ValueError(f"mask_head.num_classes must be 2 (disc, cup), got {cfg.mask_head.num_classes}")
        self.cfg = cfg
        min_level, self.stride = cfg.fpn.min_level, cfg.backbone.input_stride
        if min_level not in (2, 3, 4):
            raise ValueError(f"fpn.min_level must be 2, 3 or 4 (the finest of P2..P5), got {min_level}")
        if self.stride < 1:
            raise ValueError(f"backbone.input_stride must be >= 1, got {self.stride}")
        self.backbone = build_backbone(cfg.backbone)
        self.fpn = FPN(self.backbone.out_channels[min_level - 2:], cfg.fpn.out_channels)
        self.anchors = AnchorGenerator(cfg.anchors)
        levels = 6 - min_level
        if len(cfg.anchors.sizes) != levels:
            raise ValueError(f"anchors.sizes needs one size per level P{min_level}..P5 ({levels}), "
                             f"got {len(cfg.anchors.sizes)}")
        self.rpn = RegionProposalNetwork(cfg.rpn, cfg.fpn.out_channels, self.anchors.num_anchors)
        self.roi_heads = RoIHeads(cfg.roi_heads, cfg.fpn.out_channels, cfg.mask_head, min_level=min_level)
        self.mask_head = build_mask_head(cfg.fpn.out_channels, cfg.mask_head)
        if self.mask_head.uses_pyramid and min_level != 2:
            raise ValueError("a mask branch fed by the pyramid (the two-stream branch, or the U-Net with "
                             "unet_pyramid) needs fpn.min_level = 2")
        if (self.mask_head.uses_pyramid or not self.mask_head.uses_image) and self.stride != 1:
            raise ValueError("backbone.input_stride > 1 needs an image-only mask branch (branch=unet, unet_pyramid=false)")
        self.mask_pooler = build_mask_pooler(cfg.mask_head.pooling, self.mask_head.pyramid_size,
                                             cfg.mask_head.sampling_ratio)

    def _check_images(self, images: Tensor) -> None:
        if images.dim() != 4 or static_int(images.shape[1]) != 3:
            raise ValueError(f"images must be [B,3,H,W], got {tuple(images.shape)}")
        m = 32 * self.stride
        if static_int(images.shape[-1]) % m or static_int(images.shape[-2]) % m:
            raise ValueError(f"image height and width must be multiples of {m} (stride of P5 times "
                             f"backbone.input_stride), got {tuple(images.shape)}")

    def detector_input(self, images: Tensor) -> Tensor:
        """[B,3,H,W] -> [B,3,H/s,W/s]: what the detector sees (s = ``backbone.input_stride``; an
        ONNX ``AveragePool``). Box coordinates scale exactly by s (pixel edges)."""
        return images if self.stride == 1 else F.avg_pool2d(images, self.stride)

    def features(self, images: Tensor) -> list[Tensor]:
        """Pyramid P_min..P5 for the detector's ``images`` [B,3,H,W] (see :meth:`detector_input`)."""
        return self.fpn(self.backbone(images)[self.cfg.fpn.min_level - 2:])

    def mask_logits(self, images: Tensor, feats: list[Tensor], rois: Tensor) -> Tensor:
        """RoIs [R,5] -> mask logits [R,2,M,M] (``images`` [B,3,S,S] feed the optional image stream)."""
        low = high = None
        if self.mask_head.uses_pyramid:
            low, high = self.mask_pooler(feats, rois)
        image = None
        if self.mask_head.uses_image:
            image = pool_image(images, rois, self.cfg.mask_head.mask_size, self.cfg.mask_head.sampling_ratio)
        return self.mask_head(low, high, image)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict[str, Tensor]:
        self._check_images(images)
        det = self.detector_input(images)
        image_size = (static_int(det.shape[-2]), static_int(det.shape[-1]))
        feats = self.features(det)
        anchors = self.anchors([(static_int(f.shape[-2]), static_int(f.shape[-1])) for f in feats], image_size, images.device)
        if self.training:
            if targets is None or len(targets) != images.shape[0]:
                raise ValueError("training mode needs one target dict per image: model(images, targets)")
            return self._losses(images, feats, anchors, image_size, targets)
        proposals, _ = self.rpn(feats, anchors, image_size)
        boxes, scores = self.roi_heads.detect(feats, proposals, image_size)
        if self.stride != 1:
            boxes = boxes * float(self.stride)  # detector pixels -> input pixels
        masks = torch.sigmoid(self.mask_logits(images, feats, make_rois(scale_boxes(boxes, self.cfg.mask_head.box_scale))))
        b, k, m = boxes.shape[0], boxes.shape[1], self.cfg.mask_head.mask_size
        masks = masks.reshape(b, k, 2, m, m) * (scores > 0).to(masks.dtype).view(b, k, 1, 1, 1)
        return dict(zip(OUTPUT_NAMES, (boxes, scores, masks)))

    def _losses(self, images: Tensor, feats: list[Tensor], anchors: list[Tensor], image_size: tuple[int, int],
                targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training losses; ``image_size`` is the detector's (the input's / ``input_stride``)."""
        full_size = (static_int(images.shape[-2]), static_int(images.shape[-1]))
        for i, t in enumerate(targets):
            for key in ("boxes", "masks"):
                if key not in t:
                    raise ValueError(f"target {i} has no {key!r}")
            if t["masks"].shape[0] != t["boxes"].shape[0] or tuple(t["masks"].shape[-2:]) != full_size:
                raise ValueError(f"target {i}: masks {tuple(t['masks'].shape)} do not fit boxes "
                                 f"{tuple(t['boxes'].shape)} and image size {full_size}")
        det_targets = targets if self.stride == 1 else [dict(t, boxes=t["boxes"] / self.stride) for t in targets]
        proposals, rpn_losses = self.rpn(feats, anchors, image_size, det_targets)
        box_losses, positives = self.roi_heads.loss(feats, proposals, det_targets)
        cfg = self.cfg
        rois = positives.rois
        if self.stride != 1:
            rois = torch.cat((rois[:, :1], rois[:, 1:] * self.stride), dim=1)
        if cfg.mask_head.box_scale != 1.0:
            rois = torch.cat((rois[:, :1], scale_boxes(rois[:, 1:], cfg.mask_head.box_scale)), dim=1)
        logits = self.mask_logits(images, feats, rois)
        with torch.no_grad():
            gt_masks = torch.cat([t["masks"].to(images.dtype) for t in targets])
            tgt = mask_targets(gt_masks, rois, positives.gt_index, cfg.mask_head.mask_size,
                               cfg.mask_head.sampling_ratio)
        losses = {
            "loss_objectness": rpn_losses["loss_objectness"] * cfg.loss.rpn_weight,
            "loss_rpn_box": rpn_losses["loss_rpn_box"] * cfg.loss.rpn_weight,
            "loss_classifier": box_losses["loss_classifier"],
            "loss_box": box_losses["loss_box"] * cfg.loss.box_weight,
            "loss_mask": mask_loss(logits, tgt, cfg.loss) * cfg.loss.mask_weight,
        }
        return losses


@torch.no_grad()
def recalibrate_batchnorm(model: RFNet, batches: Iterable[Tensor]) -> None:
    """Re-estimate the backbone's BatchNorm running statistics on ``batches`` ([B,3,S,S] each).

    After a short from-scratch run the running averages lag behind the fast-changing
    weights, so eval-mode outputs differ from train-mode ones; a pass over a few batches
    with a cumulative average (``momentum=None``) fixes that. The model's train/eval mode and
    the BN momenta are restored afterwards.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    try:
        for images in batches:
            model.features(images)
    finally:
        for bn, mom in zip(bns, momenta):
            bn.momentum = mom
        model.train(was_training)
