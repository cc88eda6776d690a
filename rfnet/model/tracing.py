"""Helpers for code that must trace to a static ONNX graph.

The input size of an exported RF-Net is fixed, so feature-map sizes, anchor counts and
top-k sizes are Python ints baked into the graph as constants. ``static_int`` makes that
explicit and silences the tracer's warning for exactly these conversions (and no others).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch


def is_exporting() -> bool:
    """True while tracing / exporting (``torch.jit.trace``, ``torch.onnx.export``, ``torch.compile``)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


@contextmanager
def quiet_tracer() -> Iterator[None]:
    """Silence ``TracerWarning`` inside (for library checks that the tracer flags harmlessly)."""
    if not torch.jit.is_tracing():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def static_int(value: Any) -> int:
    """``int(value)`` for a shape entry that is intentionally a constant of the traced graph."""
    if not torch.jit.is_tracing():
        return int(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(value)
