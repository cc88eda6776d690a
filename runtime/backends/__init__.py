"""Inference backends behind one interface (:class:`rfnet.common.backend.Backend`).

Neither TensorRT, PyCUDA nor ONNX Runtime is imported here: each backend imports its
library in ``load()``, so the runtime starts (and fails with a clear message) on machines
that have only one of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rfnet.errors import UsageError
from rfnet.common.backend import (
    Backend,
    BackendError,
    BackendUnavailableError,
    InputError,
    ModelLoadError,
    TensorSpec,
)

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "InputError",
    "ModelLoadError",
    "TensorSpec",
    "BACKENDS",
    "ENGINE_SUFFIXES",
    "ONNX_SUFFIXES",
    "resolve_backend",
    "create_backend",
]

BACKENDS = ("auto", "tensorrt", "onnxruntime")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)


def resolve_backend(model: str | Path, backend: str = "auto") -> str:
    """``auto`` -> ``tensorrt`` for an engine, ``onnxruntime`` for an ONNX; check explicit choices.

    Raises:
        UsageError (a ValueError): unknown backend, unknown model suffix, or a backend that
        cannot run this file.
    """
    p = Path(model)
    suffix = p.suffix.lower()
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    kind = "tensorrt" if suffix in ENGINE_SUFFIXES else "onnxruntime" if suffix in ONNX_SUFFIXES else None
    if kind is None:
        raise UsageError(
            f"{p}: cannot tell the model type from the suffix {p.suffix!r}; "
            f"expected {'/'.join(ENGINE_SUFFIXES)} (TensorRT engine) or .onnx"
        )
    if backend != "auto" and backend != kind:
        what = "a TensorRT engine" if kind == "tensorrt" else "an ONNX model"
        raise UsageError(f"{p}: is {what}; the {backend} backend cannot run it (use --backend {kind} or auto)")
    return kind


def create_backend(model: str | Path, backend: str = "auto", **options: Any) -> Backend:
    """Construct (not load) the backend for ``model``.

    Options: ``cuda_graph`` (TensorRT), ``providers``, ``intra_op_threads`` and ``spinning`` (ONNX Runtime);
    options that do not apply to the chosen backend are ignored.
    """
    kind = resolve_backend(model, backend)
    if kind == "tensorrt":
        from rfnet.runtime.backends.trt_pycuda import TensorRTBackend

        return TensorRTBackend(model, cuda_graph=bool(options.get("cuda_graph", False)))
    from rfnet.runtime.backends.onnxrt import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        model, providers=options.get("providers"), intra_op_threads=options.get("intra_op_threads"),
        spinning=options.get("spinning"),
    )
