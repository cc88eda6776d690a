"""RF-Net checkpoints: weights + the full typed config in one file.

Format (a dict saved with ``torch.save``, loaded with ``torch.load(weights_only=True)``)::

    {"format": "rfnet-checkpoint", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {...}, "extra": {...}}

``extra`` holds only weights_only-safe values (tensors, numbers, strings, bools, None,
lists/tuples and dicts of these), e.g. epoch, metrics, optimizer state.
"""
from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rfnet.common.fileio import atomic_open
from rfnet.common.preprocess import check_margin
from rfnet.config import ModelConfig
from rfnet.errors import RFNetError, UsageError

FORMAT = "rfnet-checkpoint"
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]


class CheckpointError(RFNetError, ValueError):
    """A checkpoint file is missing, not an RF-Net checkpoint, or does not fit its config."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``config`` rebuilt as a :class:`ModelConfig`."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _check_safe(value: Any, where: str) -> None:
    """Raise ``TypeError`` if ``value`` would not load under ``weights_only=True``."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_safe(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: dict key {k!r} must be a str or int")
            _check_safe(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where}: {type(value).__name__} is not allowed in a checkpoint "
                    "(use tensors, numbers, strings, lists and dicts)")


def save_checkpoint(path: PathLike, model: torch.nn.Module, cfg: ModelConfig, extra: dict[str, Any] | None = None
                    ) -> Path:
    """Write ``model``'s weights and ``cfg`` to ``path`` atomically; returns the path.

    ``extra`` must be weights_only-safe (``TypeError`` naming the offending entry otherwise).
    Tensors are stored on the CPU so the file loads anywhere.
    """
    extra = dict(extra or {})
    _check_safe(extra, "extra")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict(),
               "state_dict": state, "extra": extra}
    dest = Path(path)
    with atomic_open(dest, "wb") as fh:
        torch.save(payload, fh)
    return dest


def _describe(cfg_dict: Any) -> str:
    if isinstance(cfg_dict, dict):
        return f"preset {cfg_dict.get('name', '?')!r}"
    return "an unreadable config"


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (naming the
    file) for anything that is not an RF-Net checkpoint of this format version.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, unsafe globals ...
        raise CheckpointError(f"{p}: not a readable RF-Net checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an RF-Net checkpoint (no format={FORMAT!r} field)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format_version {version!r} is not supported "
                              f"(this code reads version {FORMAT_VERSION})")
    for key in ("config", "state_dict"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f"{p}: checkpoint has no valid {key!r} entry")
    try:
        cfg = ModelConfig.from_dict(data["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{p}: invalid config in checkpoint: {exc}") from exc
    extra = data.get("extra") or {}
    return Checkpoint(config=cfg, state_dict=data["state_dict"], extra=extra, path=p)


def apply_test_settings(cfg: ModelConfig, *, top_k: int | None = None, proposals: int | None = None,
                        crop_margin: float | None = None) -> None:
    """Override the inference-only settings of ``cfg`` in place (no weight depends on them):
    ``top_k`` detections per image that get a mask (``roi_heads.detections_per_img``),
    ``proposals``, the RPN proposals per image kept at test (``rpn.post_nms_top_n_test``), and
    ``crop_margin``, the letterbox margin of disc-centred crops (``input.crop_margin``).

    Raises:
        UsageError: a value below 1 (or a margin that is not a finite number).
    """
    for name, value in (("top-k", top_k), ("proposals", proposals)):
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    if crop_margin is not None:
        try:
            cfg.input.crop_margin = check_margin(crop_margin)
        except ValueError as exc:
            raise UsageError(f"--crop-margin {exc}") from None
    if top_k is not None:
        cfg.roi_heads.detections_per_img = top_k
    if proposals is not None:
        cfg.rpn.post_nms_top_n_test = proposals


def load_model(path: PathLike, device: str | torch.device = "cpu", *, top_k: int | None = None,
               proposals: int | None = None, crop_margin: float | None = None) -> tuple[torch.nn.Module, ModelConfig]:
    """Build the model described by the checkpoint, load its weights, move it to ``device``, eval mode.

    ``top_k``, ``proposals`` and ``crop_margin`` override the stored inference settings
    (:func:`apply_test_settings`);
    the returned config carries them. A state dict that does not fit the stored config raises
    :class:`CheckpointError` naming the file, the preset, and the first mismatching keys/shapes.
    """
    from rfnet.model import build_model  # local: keeps `import rfnet.checkpoint` light

    ckpt = load_checkpoint(path)
    cfg = ckpt.config
    apply_test_settings(cfg, top_k=top_k, proposals=proposals, crop_margin=crop_margin)
    # The stored weights supersede any backbone.pretrained_path recorded at training time
    # (that file need not exist here): build from a copy without it.
    build_cfg = copy.deepcopy(cfg)
    build_cfg.backbone.pretrained_path = None
    model = build_model(build_cfg)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in msg[:4])
        raise CheckpointError(f"{ckpt.path}: weights do not fit the config stored in the checkpoint "
                              f"({_describe(ckpt.config.to_dict())}, width {cfg.backbone.width_mult}, "
                              f"FPN {cfg.fpn.out_channels}): {detail}") from exc
    return model.to(device).eval(), cfg


def checkpoint_sha256(path: PathLike) -> str:
    """Hex SHA-256 of the checkpoint file (recorded in ONNX metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
