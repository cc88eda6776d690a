"""The deployment contract of an RF-Net model, defined once (torch-free).

What every producer and consumer of a model agrees on -- the PyTorch model, the ONNX
exporter and converters, the TensorRT builder and its engine manifest, the runtime, the
benchmarks -- lives here and nowhere else (docs/design.md, "Model outputs" and "ONNX
metadata"):

* tensor names: input :data:`INPUT_NAME` float32 ``[B,3,S,S]``; outputs :data:`OUTPUT_NAMES`
  ``boxes [B,K,4]``, ``scores [B,K]``, ``masks [B,K,2,M,M]``, checked by :func:`check_outputs`;
* precisions: :data:`PRECISIONS`;
* the ``rfnet.*`` metadata keys (``KEY_*``) and their typed form :class:`ModelMetadata`, with
  one writer (:meth:`ModelMetadata.to_strings`, and :meth:`ModelMetadata.deploy_fields` for the
  engine manifest, whose field names are the keys without ``rfnet.``) and one parser
  (:func:`parse_metadata` for ONNX strings, :func:`metadata_from_manifest` for an engine
  manifest, :func:`metadata_from_backend` for whichever a backend carries).

Where the precision of a model is needed, it is :attr:`ModelMetadata.precision`: the metadata
is the one source (never the file name, never a guess from the graph).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from rfnet.common.gradability import GradingLimits
from rfnet.common.preprocess import check_margin
from rfnet.config import CLASS_NAMES, DEFAULT_MIN_DISC_SCORE, InputConfig
from rfnet.errors import RFNetError

#: The network input: float32 [B,3,S,S], preprocessed (rfnet.common.preprocess).
INPUT_NAME = "image"
#: The outputs, in export order: boxes [B,K,4], scores [B,K], masks [B,K,2,M,M].
OUTPUT_NAMES: tuple[str, ...] = ("boxes", "scores", "masks")
#: Model / engine precisions.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

#: ``format`` of an engine manifest (``X.engine.json``, runtime/manifest.py).
MANIFEST_FORMAT = "rfnet-engine-manifest"

#: Prefix of every key this project writes into an ONNX model's ``metadata_props``.
PREFIX = "rfnet."
KEY_PRESET = "rfnet.preset"
KEY_INPUT_SIZE = "rfnet.input_size"
KEY_MEAN = "rfnet.mean"  # JSON list of 3 numbers (RGB, 0..255 scale)
KEY_STD = "rfnet.std"  # JSON list of 3 numbers
KEY_MASK_SIZE = "rfnet.mask_size"  # M
KEY_TOP_K = "rfnet.top_k"  # K
KEY_CLASS_NAMES = "rfnet.class_names"  # JSON list: mask channel order
KEY_PRECISION = "rfnet.precision"  # one of PRECISIONS
KEY_MASK_BOX_SCALE = "rfnet.mask_box_scale"  # masks cover each box scaled by this about its centre
KEY_MIN_DISC_SCORE = "rfnet.min_disc_score"  # below it a detection backs no CDR (rfnet.common.gradability)
KEY_VCDR_EXPERT_SCALE = "rfnet.vcdr_expert_scale"  # JSON [a, b] or null: vCDR on the experts' scale = a * vcdr + b
KEY_GRADING_LIMITS = "rfnet.grading_limits"  # JSON object: rfnet.common.gradability.GradingLimits
KEY_REFERRAL_VCDR = "rfnet.referral_vcdr"  # JSON number or null: refer a gradable eye at this vCDR or above
KEY_CROP_MARGIN = "rfnet.crop_margin"  # JSON number >= 1: a disc-centred crop fills 1 / this of the input side
KEY_CHECKPOINT_SHA256 = "rfnet.checkpoint_sha256"
KEY_CONFIG = "rfnet.config"  # JSON of ModelConfig
KEY_EXPORTER = "rfnet.exporter"  # JSON: library versions, opset, batch, simplification
KEY_QUANTIZATION = "rfnet.quantization"  # JSON, INT8 Q/DQ models (export/quantize.py)
KEY_FP16 = "rfnet.fp16"  # JSON, FP16 models (export/fp16.py)

#: Keys every exported model has (:func:`parse_metadata` rejects a model missing any).
#: ``rfnet.mask_box_scale`` is optional: models exported before it existed mean 1.0;
#: ``rfnet.min_disc_score`` too: absent means ``rfnet.config.DEFAULT_MIN_DISC_SCORE``;
#: ``rfnet.vcdr_expert_scale`` too: absent (or null) means no vCDR on the experts' scale;
#: ``rfnet.grading_limits``: absent means the default limits; ``rfnet.referral_vcdr``: absent or
#: null means no referral threshold (results leave ``refer`` empty); ``rfnet.crop_margin``: absent
#: means 1 (every image letterboxed to fill the input).
REQUIRED_KEYS: tuple[str, ...] = (
    KEY_PRESET, KEY_INPUT_SIZE, KEY_MEAN, KEY_STD, KEY_MASK_SIZE, KEY_TOP_K, KEY_CLASS_NAMES,
    KEY_PRECISION, KEY_CHECKPOINT_SHA256, KEY_CONFIG, KEY_EXPORTER,
)
#: What the runtime needs to run a model; an engine manifest carries these as fields named
#: like the keys without ``rfnet.`` (``input_size``, ``mean``, ...).
DEPLOY_KEYS: tuple[str, ...] = (
    KEY_PRESET, KEY_INPUT_SIZE, KEY_MEAN, KEY_STD, KEY_MASK_SIZE, KEY_TOP_K, KEY_CLASS_NAMES,
    KEY_PRECISION, KEY_MASK_BOX_SCALE, KEY_MIN_DISC_SCORE, KEY_VCDR_EXPERT_SCALE, KEY_GRADING_LIMITS,
    KEY_REFERRAL_VCDR, KEY_CROP_MARGIN,
)
#: Keys whose value is a plain string; every other known key holds JSON.
_PLAIN_KEYS = frozenset({KEY_PRESET, KEY_PRECISION, KEY_CHECKPOINT_SHA256})
_OPTIONAL_KEYS = frozenset({KEY_MASK_BOX_SCALE, KEY_MIN_DISC_SCORE, KEY_VCDR_EXPERT_SCALE, KEY_GRADING_LIMITS,
                            KEY_REFERRAL_VCDR, KEY_CROP_MARGIN})
_KNOWN_KEYS = frozenset(REQUIRED_KEYS) | frozenset(DEPLOY_KEYS)


def field_name(key: str) -> str:
    """``rfnet.input_size`` -> ``input_size``: the :class:`ModelMetadata` / manifest field of a key."""
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


#: Engine-manifest fields a manifest must have (runtime/manifest.py adds its own).
MANIFEST_REQUIRED_FIELDS: tuple[str, ...] = tuple(field_name(k) for k in DEPLOY_KEYS if k not in _OPTIONAL_KEYS)


class ContractError(RFNetError, ValueError):
    """A model, its metadata or its outputs break the contract; the message names the model."""


class MetadataError(ContractError):
    """The model's ``rfnet.*`` metadata (or an engine manifest's copy of it) is missing or invalid."""


@dataclass(frozen=True)
class ModelMetadata:
    """Typed view of the ``rfnet.*`` metadata of one model.

    Attributes:
        preset: config preset name (``paper``, ``light``, ...).
        input_size: S of the network input [B,3,S,S].
        mean, std: per-channel normalisation (RGB, 0..255 scale).
        mask_size: M of the mask outputs [B,K,2,M,M].
        top_k: K, detections per image.
        class_names: mask channel order (``disc``, ``cup``).
        precision: one of :data:`PRECISIONS`.
        mask_box_scale: masks cover each detection box scaled by this about its centre
            (``mask_head.box_scale``; 1.0 for models exported before the key existed).
        min_disc_score: a detection scoring below it backs no CDR (``grading.min_disc_score``;
            ``DEFAULT_MIN_DISC_SCORE`` for models exported before the key existed).
        vcdr_expert_scale: ``(a, b)``: results also carry the vertical CDR on the experts' scale,
            ``a * vcdr + b`` (``grading.vcdr_expert_scale``); None: not fitted.
        grading_limits: the detection checks' limits (``grading.limits``,
            :class:`rfnet.common.gradability.GradingLimits`); empty: the defaults.
        referral_vcdr: a gradable image whose vCDR (on the experts' scale when the model has
            one) is at least this is referred (``grading.referral_vcdr``); None: no referral.
        crop_margin: an image whose fundus field's edge does not show (a disc-centred crop) is
            letterboxed to fill ``1 / crop_margin`` of the input side (``input.crop_margin``;
            1 for models exported before the key existed).
        checkpoint_sha256, config, exporter: provenance (empty in an engine manifest's copy).
        extra: other ``rfnet.*`` strings carried along (``rfnet.quantization``, ``rfnet.fp16``).
    """

    preset: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mask_size: int
    top_k: int
    class_names: tuple[str, ...]
    precision: str
    mask_box_scale: float = 1.0
    min_disc_score: float = DEFAULT_MIN_DISC_SCORE
    vcdr_expert_scale: tuple[float, float] | None = None
    grading_limits: dict[str, float] = field(default_factory=dict)
    referral_vcdr: float | None = None
    crop_margin: float = 1.0
    checkpoint_sha256: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    def input_config(self) -> InputConfig:
        """The preprocessing settings to use with ``rfnet.common.preprocess``."""
        return InputConfig(size=self.input_size, mean=self.mean, std=self.std, crop_margin=self.crop_margin)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str) -> "ModelMetadata":
        """Checked metadata from ``{field: value}`` (JSON values: lists, not tuples); what an exporter
        builds from its config (``rfnet.metadata.metadata_from_config``)."""
        return _typed(values, where=where)

    def to_strings(self) -> dict[str, str]:
        """The ``rfnet.*`` key -> string mapping written into ``metadata_props`` (the one writer)."""
        values: dict[str, str] = {}
        for key in (*REQUIRED_KEYS, *sorted(_OPTIONAL_KEYS)):
            value = getattr(self, field_name(key))
            if key in _PLAIN_KEYS:
                values[key] = str(value)
            elif isinstance(value, dict):
                values[key] = json.dumps(value, sort_keys=True)
            elif isinstance(value, tuple):
                values[key] = json.dumps(list(value))
            else:
                values[key] = json.dumps(value)
        values.update(self.extra)
        return values

    def deploy_fields(self) -> dict[str, Any]:
        """``{field: JSON value}`` of :data:`DEPLOY_KEYS`: the engine manifest's copy, summaries."""
        return {field_name(k): _plain(getattr(self, field_name(k))) for k in DEPLOY_KEYS}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- the one parser ----------------------------------------------------------------------------
def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < float("inf"):
        raise ValueError(f"must be a positive number, got {value!r}")
    return float(value)


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) < 1:
        raise ValueError(f"must be a number in [0, 1), got {value!r}")
    return float(value)


def _triple(value: Any) -> tuple[float, float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"must be a list of 3 numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _std(value: Any) -> tuple[float, float, float]:
    t = _triple(value)
    if min(t) <= 0:
        raise ValueError(f"must be 3 positive numbers, got {value!r}")
    return t


def _class_names(value: Any) -> tuple[str, ...]:
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(n, str) for n in value)):
        raise ValueError(f"must be a list of strings, got {value!r}")
    if tuple(value[:2]) != CLASS_NAMES:
        raise ValueError(f"mask channels are {list(value)}, this code expects {list(CLASS_NAMES)}")
    return tuple(value)


def _precision(value: Any) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"must be one of {list(PRECISIONS)}, got {value!r}")
    return str(value)


def _line(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ValueError(f"must be null or a list of 2 finite numbers [a, b], got {value!r}")
    return (float(value[0]), float(value[1]))


def _limits(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object of limits, got {value!r}")
    GradingLimits.from_mapping(value)  # known keys, numbers >= 0
    return {str(k): float(v) for k, v in value.items()}


def _optional_probability(value: Any) -> float | None:
    return None if value is None else _probability(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")
    return dict(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "preset": _string, "input_size": _positive_int, "mean": _triple, "std": _std, "mask_size": _positive_int,
    "top_k": _positive_int, "class_names": _class_names, "precision": _precision,
    "mask_box_scale": _positive_float, "min_disc_score": _probability,
    "vcdr_expert_scale": _line, "grading_limits": _limits, "referral_vcdr": _optional_probability,
    "crop_margin": check_margin,
    "checkpoint_sha256": _string, "config": _object, "exporter": _object,
}


def _typed(values: Mapping[str, Any], where: str, extra: Mapping[str, str] | None = None,
           keys: Mapping[str, str] | None = None) -> ModelMetadata:
    """Check decoded ``{field: value}`` and build the dataclass; ``keys`` names fields in errors."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            out[name] = _CHECKS[name](value)
        except ValueError as exc:
            label = (keys or {}).get(name, name)
            raise MetadataError(f"{where}: metadata {label!r} {exc}") from None
    return ModelMetadata(**out, extra=dict(extra or {}))


def parse_metadata(raw: Mapping[str, str], where: str = "model") -> ModelMetadata:
    """Validate and type the ``rfnet.*`` strings of an ONNX model; ``where`` names it in errors.

    Raises:
        MetadataError: a required key is missing, or a value is malformed or out of range.
    """
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise MetadataError(f"{where}: missing RF-Net metadata {missing}; this is not an RF-Net export "
                            f"(export the model with export/export_onnx.py, which records its preprocessing)")
    values: dict[str, Any] = {}
    for key in _KNOWN_KEYS & set(raw):
        text = raw[key]
        if key in _PLAIN_KEYS:
            values[field_name(key)] = text
            continue
        try:
            values[field_name(key)] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetadataError(f"{where}: metadata {key!r} is not valid JSON ({exc}): {text!r}") from None
    extra = {k: v for k, v in raw.items() if k.startswith(PREFIX) and k not in _KNOWN_KEYS}
    return _typed(values, where, extra, keys={field_name(k): k for k in _KNOWN_KEYS})


def metadata_from_manifest(manifest: Mapping[str, Any], where: str = "engine manifest") -> ModelMetadata:
    """The metadata an engine manifest copied from its ONNX (fields named as :meth:`ModelMetadata.deploy_fields`)."""
    missing = [f for f in MANIFEST_REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise MetadataError(f"{where}: engine manifest lacks {missing}; rebuild the engine with export/build.py")
    values = {field_name(k): manifest[field_name(k)] for k in DEPLOY_KEYS if field_name(k) in manifest}
    return _typed(values, where)


def metadata_from_backend(metadata: Mapping[str, Any], where: str) -> ModelMetadata:
    """Parse what a backend loaded: an engine manifest (``format`` = :data:`MANIFEST_FORMAT`) or ONNX strings."""
    if metadata.get("format") == MANIFEST_FORMAT:
        return metadata_from_manifest(metadata, where)
    return parse_metadata(metadata, where)


# -- outputs -----------------------------------------------------------------------------------
def check_outputs(outputs: Mapping[str, Any], batch: int, meta: ModelMetadata | None = None,
                  where: str = "model") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The contract's outputs of one call as float32 ``(boxes [B,K,4], scores [B,K], masks [B,K,2,M,M])``.

    With ``meta``, K must be its ``top_k`` and M its ``mask_size``.

    Raises:
        ContractError: an output is missing or has the wrong shape.
    """
    missing = [k for k in OUTPUT_NAMES if k not in outputs]
    if missing:
        raise ContractError(f"{where}: outputs {sorted(outputs)} lack {missing} (expected {list(OUTPUT_NAMES)})")
    boxes, scores, masks = (np.asarray(outputs[k], dtype=np.float32) for k in OUTPUT_NAMES)
    k = meta.top_k if meta is not None else (boxes.shape[1] if boxes.ndim == 3 else -1)
    m = meta.mask_size if meta is not None else (masks.shape[-1] if masks.ndim == 5 else -1)
    want = {"boxes": (batch, k, 4), "scores": (batch, k), "masks": (batch, k, 2, m, m)}
    for name, arr in zip(OUTPUT_NAMES, (boxes, scores, masks)):
        if arr.shape != want[name]:
            raise ContractError(f"{where}: output {name} has shape {list(arr.shape)}, expected "
                                f"{list(want[name])} ([B,K,4], [B,K], [B,K,2,M,M] with B={batch}, K={k}, M={m})")
    return boxes, scores, masks
