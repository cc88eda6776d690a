"""The TensorRT backend's engine I/O: which tensors, which shapes, how many bytes (no CUDA).

Named ``trt_io`` (it was ``trt_plan.py``, which read like the ``.plan`` engine suffix).
TensorRT's name-based API (8.5+, the only one from 10.0): ``engine.num_io_tensors``,
``get_tensor_name(i)``, ``get_tensor_mode(name)``, ``get_tensor_dtype(name)``,
``get_tensor_shape(name)``, ``get_tensor_profile_shape(name, p)`` and
``context.set_input_shape(name, shape)`` / ``context.get_tensor_shape(name)``; mypy checks these
calls against the TensorRT 10.x stubs. The ``trt`` argument is the ``tensorrt`` module (tests
pass a stand-in whose names are pinned to the stubs by ``tests/support/trt_stubs.py``).

Buffers are sized once for the largest shapes the engine accepts (profile maximum) and
reused for every call; per call only the shapes (hence the byte counts copied) change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from rfnet.runtime.backends.base import BackendError, InputError, ModelLoadError, TensorSpec

if TYPE_CHECKING:  # the TensorRT 10.x stubs (tensorrt-stubs)
    import tensorrt as trt_types


@dataclass(frozen=True)
class EngineTensor:
    """An I/O tensor as the engine declares it.

    Attributes:
        shape: declared shape, ``-1`` for dynamic dimensions.
        profile: ``(min, opt, max)`` shapes of optimisation profile 0 for a dynamic input,
            else ``None``.
    """

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    def spec(self) -> TensorSpec:
        if self.profile is not None:
            return TensorSpec(self.name, self.dtype, self.shape, self.profile[0], self.profile[2])
        return TensorSpec(self.name, self.dtype, self.shape)

    def max_shape(self) -> tuple[int, ...]:
        """Largest accepted shape: the fixed shape, or the profile maximum."""
        if self.profile is not None:
            return self.profile[2]
        if any(d < 0 for d in self.shape):
            raise ModelLoadError(f"input {self.name!r} has dynamic shape {self.shape} but no optimisation profile")
        return self.shape


@dataclass(frozen=True)
class BufferSpec:
    """What one call needs for one tensor: dtype, resolved shape and byte count."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of elements."""
        return volume(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def volume(shape: Iterable[int]) -> int:
    """Number of elements of a fully resolved shape (``ValueError`` on a dynamic dimension)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {tuple(dims)} has unresolved (dynamic) dimensions")
    return math.prod(dims)


def dims_tuple(dims: "trt_types.Dims | Sequence[int]") -> tuple[int, ...]:
    """``trt.Dims`` -> tuple of ints (Dims supports len() and indexing in every version, not iteration)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def numpy_dtype(trt: Any, trt_dtype: Any, name: str) -> np.dtype:
    """numpy dtype of a TensorRT DataType via ``trt.nptype`` (clear error for BF16/FP8/FP4/INT4)."""
    try:
        return np.dtype(trt.nptype(trt_dtype))
    except (TypeError, KeyError, ValueError) as exc:
        raise ModelLoadError(
            f"tensor {name!r} has TensorRT type {trt_dtype}, which has no numpy equivalent; "
            f"export the model with float32 or float16 I/O"
        ) from exc


def describe_engine(engine: "trt_types.ICudaEngine", trt: Any, profile_index: int = 0) -> list[EngineTensor]:
    """Every I/O tensor of ``engine`` in engine order (name-based API, TensorRT >= 8.5)."""
    tensors: list[EngineTensor] = []
    for i in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = numpy_dtype(trt, engine.get_tensor_dtype(name), name)
        shape = dims_tuple(engine.get_tensor_shape(name))
        profile = None
        if is_input and any(d < 0 for d in shape):
            mn, opt, mx = engine.get_tensor_profile_shape(name, profile_index)
            profile = (dims_tuple(mn), dims_tuple(opt), dims_tuple(mx))
        tensors.append(EngineTensor(name, is_input, dtype, shape, profile))
    if not any(t.is_input for t in tensors) or all(t.is_input for t in tensors):
        raise ModelLoadError(f"engine has no inputs or no outputs: {[t.name for t in tensors]}")
    return tensors


def plan_buffers(
    tensors: list[EngineTensor],
    context: "trt_types.IExecutionContext",
    input_shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, BufferSpec]:
    """Set the input shapes on ``context`` and resolve every tensor's shape and size.

    Args:
        tensors: from :func:`describe_engine`.
        context: an ``IExecutionContext`` (or a fake with ``set_input_shape`` / ``get_tensor_shape``).
        input_shapes: ``{input name: shape}`` for every input.
    Returns:
        ``{name: BufferSpec}`` for inputs and outputs, in engine order.
    Raises:
        InputError: missing / unknown input, shape outside the profile, or rejected by TensorRT.
        BackendError: an output shape stays unresolved (data-dependent shapes are not supported).
    """
    inputs = [t for t in tensors if t.is_input]
    names = {t.name for t in inputs}
    if set(input_shapes) != names:
        raise InputError(f"expected shapes for inputs {sorted(names)}, got {sorted(input_shapes)}")
    for t in inputs:
        shape = tuple(int(d) for d in input_shapes[t.name])
        t.spec().check_shape(shape, "engine")
        if not context.set_input_shape(t.name, shape):
            raise InputError(f"TensorRT rejected shape {shape} for input {t.name!r} (set_input_shape returned False)")
    plan: dict[str, BufferSpec] = {}
    for t in tensors:
        shape = dims_tuple(context.get_tensor_shape(t.name))
        if any(d < 0 for d in shape):
            raise BackendError(
                f"shape of {'input' if t.is_input else 'output'} {t.name!r} is unresolved ({shape}) after "
                f"setting the input shapes; outputs must have static or input-derived shapes"
            )
        plan[t.name] = BufferSpec(t.name, t.is_input, t.dtype, shape)
    return plan


def max_input_shapes(tensors: list[EngineTensor]) -> dict[str, tuple[int, ...]]:
    """``{input: largest accepted shape}`` used to size the reusable buffers once."""
    return {t.name: t.max_shape() for t in tensors if t.is_input}


def buffers_to_grow(capacity: Mapping[str, int], plan: Mapping[str, BufferSpec]) -> list[str]:
    """Names whose allocated byte ``capacity`` is smaller than ``plan`` needs (missing = 0)."""
    return [name for name, b in plan.items() if capacity.get(name, 0) < b.nbytes]
