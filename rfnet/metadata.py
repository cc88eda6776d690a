"""A model's ``rfnet.*`` metadata from its training config, and back (torch-free).

The deployment contract (:mod:`rfnet.common.contract`) knows only what a runtime needs: the
input settings, the verdict's thresholds, tensor names. Building it from the full
:class:`rfnet.config.ModelConfig` (the exporter, the PyTorch backend) and reading that config back
out of a model happen here, so that the contract does not depend on the training config.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from rfnet.common.contract import ModelMetadata
from rfnet.config import CLASS_NAMES, ModelConfig


def metadata_from_config(cfg: ModelConfig, *, precision: str, checkpoint_sha256: str = "",
                         exporter: Mapping[str, Any] | None = None) -> ModelMetadata:
    """The metadata of a model built from ``cfg`` (``cfg.roi_heads.detections_per_img`` = K)."""
    scale = cfg.grading.vcdr_expert_scale
    return ModelMetadata.from_values({
        "preset": cfg.name, "input_size": cfg.input.size, "mean": list(cfg.input.mean),
        "std": list(cfg.input.std), "mask_size": cfg.mask_head.mask_size,
        "top_k": cfg.roi_heads.detections_per_img, "class_names": list(CLASS_NAMES), "precision": precision,
        "mask_box_scale": cfg.mask_head.box_scale, "min_disc_score": cfg.grading.min_disc_score,
        "vcdr_expert_scale": list(scale) if scale is not None else None, "grading_limits": dict(cfg.grading.limits),
        "referral_vcdr": cfg.grading.referral_vcdr, "crop_margin": cfg.input.crop_margin,
        "checkpoint_sha256": checkpoint_sha256,
        # JSON values, as a parsed model has them (tuples become lists)
        "config": json.loads(json.dumps(cfg.to_dict())), "exporter": json.loads(json.dumps(dict(exporter or {}))),
    }, where=f"config {cfg.name!r}")


def config_from_metadata(meta: ModelMetadata) -> ModelConfig:
    """The full :class:`ModelConfig` a model was exported from (its ``rfnet.config`` key)."""
    return ModelConfig.from_dict(meta.config)
