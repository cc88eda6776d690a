"""Reading and writing the ``rfnet.*`` metadata of ONNX files (torch-free; needs ``onnx``).

The keys, their typed form and their one writer / parser are the contract's
(:mod:`rfnet.common.contract`); this module only moves them in and out of an
``onnx.ModelProto``'s ``metadata_props`` (all values are strings). The runtime reads the
same strings through ONNX Runtime (``rfnet.runtime.backends.onnxrt``) and parses them with the
same :func:`rfnet.common.contract.parse_metadata`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from rfnet.common.contract import MetadataError, ModelMetadata, parse_metadata

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx


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


def write_model_metadata(model: "onnx.ModelProto", meta: ModelMetadata) -> None:
    """Write ``meta`` (:meth:`ModelMetadata.to_strings`) into ``model``; other properties are kept."""
    set_metadata(model, meta.to_strings())


def model_metadata(model: "onnx.ModelProto", where: str = "model") -> ModelMetadata:
    """The parsed ``rfnet.*`` metadata of an in-memory model (:class:`MetadataError` otherwise)."""
    return parse_metadata(get_metadata(model), where)


def derived_metadata(meta: ModelMetadata, *, precision: str, extra: Mapping[str, str]) -> ModelMetadata:
    """``meta`` of a model converted to ``precision``, with ``extra`` ``rfnet.*`` strings added
    (``rfnet.fp16``, ``rfnet.quantization``: how it was converted)."""
    return dataclasses.replace(meta, precision=precision, extra={**meta.extra, **extra})


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """All ``metadata_props`` of the ONNX file ``path`` (external weight data is not loaded).

    Raises :class:`MetadataError` naming the file when it is missing or not an ONNX model.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise MetadataError(f"{p}: no such ONNX file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / ValueError variants
        raise MetadataError(f"{p}: not a readable ONNX model ({exc})") from exc
    return get_metadata(model)


def load_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """:func:`read_metadata` + :func:`~rfnet.common.contract.parse_metadata` for the ONNX file ``path``."""
    return parse_metadata(read_metadata(path), where=str(path))


def load_fp32_model(path: str | os.PathLike[str]) -> tuple["onnx.ModelProto", ModelMetadata]:
    """Load an FP32 RF-Net ONNX (the input of the FP16 and INT8 converters) and its metadata.

    Raises:
        MetadataError: no file at ``path``, missing/invalid rfnet metadata, or a model that is not fp32.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise MetadataError(f"{p}: no such ONNX model")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError / ValueError variants
        raise MetadataError(f"{p}: not a readable ONNX model ({exc})") from exc
    meta = model_metadata(model, where=str(p))
    if meta.precision != "fp32":
        raise MetadataError(f"{p}: expected an fp32 model, its rfnet.precision is {meta.precision!r}")
    return model, meta


def exporter_versions() -> dict[str, Any]:
    """Versions of the installed export libraries (those importable), for ``rfnet.exporter``."""
    from importlib import metadata as importlib_metadata

    versions: dict[str, Any] = {}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "onnxsim", "onnxconverter-common", "rfnet-trt"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions
