"""RF-Net model (PyTorch): ``build_model(cfg) -> RFNet``.

Modules: ``backbone`` (MobileNet-v1), ``fpn``, ``anchors``, ``rpn``, ``roi_heads`` (box head),
``pooling`` (Fusion / Pyramid Feature Pooling), ``mask_head`` (multi-class mask branch),
``losses`` (mask losses), ``boxes`` (box coding, matching, sampling), ``rfnet`` (top level).
"""
from __future__ import annotations

from rfnet.config import ModelConfig
from rfnet.common.contract import OUTPUT_NAMES
from rfnet.model.rfnet import RFNet, recalibrate_batchnorm

__all__ = ["OUTPUT_NAMES", "RFNet", "build_model", "recalibrate_batchnorm"]


def build_model(cfg: ModelConfig) -> RFNet:
    """Build RF-Net from its typed config (randomly initialised; backbone weights loaded if
    ``cfg.backbone.pretrained_path`` is set)."""
    return RFNet(cfg)
