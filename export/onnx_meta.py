"""RF-Net metadata stored in an ONNX model's ``metadata_props`` (torch-free).

The deployment runtime, ``export/build.py`` and the exporters all read and write the same
``rfnet.*`` keys through this module (docs/design.md, "ONNX metadata"), so the
preprocessing a deployed model expects travels inside the model file itself. All values are
strings; lists and mappings are JSON.

Imports: numpy-free and torch-free. :func:`read_metadata` uses the ``onnx`` package when it
is installed and falls back to ONNX Runtime (the runtime-only install has no ``onnx``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from rfnet.config import CLASS_NAMES, InputConfig, ModelConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

PREFIX = "rfnet."
KEY_PRESET = "rfnet.preset"
KEY_INPUT_SIZE = "rfnet.input_size"
KEY_MEAN = "rfnet.mean"
KEY_STD = "rfnet.std"
KEY_MASK_SIZE = "rfnet.mask_size"
KEY_TOP_K = "rfnet.top_k"
KEY_CLASS_NAMES = "rfnet.class_names"
KEY_PRECISION = "rfnet.precision"
KEY_CHECKPOINT_SHA256 = "rfnet.checkpoint_sha256"
KEY_CONFIG = "rfnet.config"
KEY_EXPORTER = "rfnet.exporter"

#: Every key docs/design.md requires; :func:`parse_metadata` rejects a model missing any.
REQUIRED_KEYS: tuple[str, ...] = (
    KEY_PRESET,
    KEY_INPUT_SIZE,
    KEY_MEAN,
    KEY_STD,
    KEY_MASK_SIZE,
    KEY_TOP_K,
    KEY_CLASS_NAMES,
    KEY_PRECISION,
    KEY_CHECKPOINT_SHA256,
    KEY_CONFIG,
    KEY_EXPORTER,
)

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


class MetadataError(ValueError):
    """The model's ``rfnet.*`` metadata is missing or invalid; the message names the model."""


@dataclass(frozen=True)
class RFNetMetadata:
    """Typed view of the ``rfnet.*`` metadata of one ONNX model."""

    preset: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mask_size: int
    top_k: int
    class_names: tuple[str, ...]
    precision: str
    checkpoint_sha256: str
    config: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # other rfnet.* keys (e.g. quantization)

    def input_config(self) -> InputConfig:
        """The preprocessing settings to use with ``rfnet.common.preprocess``."""
        return InputConfig(size=self.input_size, mean=self.mean, std=self.std)

    def model_config(self) -> ModelConfig:
        """The full :class:`ModelConfig` the model was exported from."""
        return ModelConfig.from_dict(self.config)


def build_metadata(
    cfg: ModelConfig,
    *,
    precision: str,
    checkpoint_sha256: str,
    exporter: Mapping[str, Any],
) -> dict[str, str]:
    """Return the ``rfnet.*`` key -> string mapping for a model exported from ``cfg``.

    ``cfg.roi_heads.detections_per_img`` must already hold the exported K (``--top-k``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {
        KEY_PRESET: cfg.name,
        KEY_INPUT_SIZE: str(int(cfg.input.size)),
        KEY_MEAN: json.dumps([float(v) for v in cfg.input.mean]),
        KEY_STD: json.dumps([float(v) for v in cfg.input.std]),
        KEY_MASK_SIZE: str(int(cfg.mask_head.mask_size)),
        KEY_TOP_K: str(int(cfg.roi_heads.detections_per_img)),
        KEY_CLASS_NAMES: json.dumps(list(CLASS_NAMES)),
        KEY_PRECISION: precision,
        KEY_CHECKPOINT_SHA256: checkpoint_sha256,
        KEY_CONFIG: json.dumps(cfg.to_dict(), sort_keys=True),
        KEY_EXPORTER: json.dumps(dict(exporter), sort_keys=True),
    }


def set_metadata(model: "onnx.ModelProto", values: Mapping[str, str]) -> None:
    """Set (add or replace) string entries of ``model.metadata_props`` in place."""
    for key, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata value for {key!r} must be a string, got {type(value).__name__}")
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = value
        else:
            prop = model.metadata_props.add()
            prop.key = key
            prop.value = value


def get_metadata(model: "onnx.ModelProto") -> dict[str, str]:
    """All ``metadata_props`` of an in-memory ONNX model as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read all ``metadata_props`` of the ONNX file ``path``.

    Uses ``onnx`` (without loading external weight data) when installed, else ONNX Runtime.
    Raises :class:`MetadataError` naming the file when it is missing or not an ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        raise MetadataError(f"{p}: no such ONNX file")
    try:
        import onnx
    except ImportError:
        onnx = None  # type: ignore[assignment]
    if onnx is not None:
        try:
            model = onnx.load(str(p), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError / ValueError variants
            raise MetadataError(f"{p}: not a readable ONNX model ({exc})") from exc
        return get_metadata(model)
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - the runtime always has one of the two
        raise MetadataError(f"{p}: neither onnx nor onnxruntime is installed to read it") from exc
    try:
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise MetadataError(f"{p}: ONNX Runtime cannot load it ({exc})") from exc
    return dict(sess.get_modelmeta().custom_metadata_map)


def _json(raw: Mapping[str, str], key: str, where: str) -> Any:
    try:
        return json.loads(raw[key])
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{where}: metadata {key!r} is not valid JSON ({exc})") from exc


def _triple(value: Any, key: str, where: str) -> tuple[float, float, float]:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise MetadataError(f"{where}: metadata {key!r} must be a JSON list of 3 numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _int(raw: Mapping[str, str], key: str, where: str) -> int:
    try:
        value = int(raw[key])
    except ValueError:
        raise MetadataError(f"{where}: metadata {key!r} must be an integer, got {raw[key]!r}") from None
    if value <= 0:
        raise MetadataError(f"{where}: metadata {key!r} must be positive, got {value}")
    return value


def parse_metadata(raw: Mapping[str, str], where: str = "model") -> RFNetMetadata:
    """Validate and type the ``rfnet.*`` entries of ``raw``; ``where`` names the model in errors."""
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise MetadataError(
            f"{where}: missing RF-Net metadata {missing}; re-export it with export/export_onnx.py"
        )
    precision = raw[KEY_PRECISION]
    if precision not in PRECISIONS:
        raise MetadataError(f"{where}: metadata {KEY_PRECISION!r} must be one of {PRECISIONS}, got {precision!r}")
    names = _json(raw, KEY_CLASS_NAMES, where)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and names):
        raise MetadataError(f"{where}: metadata {KEY_CLASS_NAMES!r} must be a JSON list of strings, got {names!r}")
    config = _json(raw, KEY_CONFIG, where)
    exporter = _json(raw, KEY_EXPORTER, where)
    if not isinstance(config, dict) or not isinstance(exporter, dict):
        raise MetadataError(f"{where}: metadata {KEY_CONFIG!r} and {KEY_EXPORTER!r} must be JSON objects")
    return RFNetMetadata(
        preset=raw[KEY_PRESET],
        input_size=_int(raw, KEY_INPUT_SIZE, where),
        mean=_triple(_json(raw, KEY_MEAN, where), KEY_MEAN, where),
        std=_triple(_json(raw, KEY_STD, where), KEY_STD, where),
        mask_size=_int(raw, KEY_MASK_SIZE, where),
        top_k=_int(raw, KEY_TOP_K, where),
        class_names=tuple(names),
        precision=precision,
        checkpoint_sha256=raw[KEY_CHECKPOINT_SHA256],
        config=config,
        exporter=exporter,
        extra={k: v for k, v in raw.items() if k.startswith(PREFIX) and k not in REQUIRED_KEYS},
    )


def load_metadata(path: str | os.PathLike[str]) -> RFNetMetadata:
    """:func:`read_metadata` + :func:`parse_metadata` for the ONNX file ``path``."""
    return parse_metadata(read_metadata(path), where=str(path))


def load_fp32_model(path: str | os.PathLike[str]) -> tuple["onnx.ModelProto", RFNetMetadata]:
    """Load an FP32 RF-Net ONNX (the input of the FP16 and INT8 converters) and its metadata.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: missing/invalid rfnet metadata, or a model that is not fp32.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such ONNX model")
    model = onnx.load(str(p))
    meta = parse_metadata(get_metadata(model), where=str(p))
    if meta.precision != "fp32":
        raise ValueError(f"{p}: expected an fp32 model, its rfnet.precision is {meta.precision!r}")
    return model, meta


def exporter_versions() -> dict[str, str]:
    """Versions of the installed export libraries (those importable), for ``rfnet.exporter``."""
    from importlib import metadata as importlib_metadata

    versions: dict[str, str] = {}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "onnxsim", "onnxconverter-common", "rfnet-trt"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions
