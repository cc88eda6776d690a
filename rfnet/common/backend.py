"""The inference backend interface (torch-free): TensorRT, ONNX Runtime and PyTorch all implement it.

The runtime's backends (``rfnet.runtime.backends``: TensorRT with PyCUDA, ONNX Runtime) and the
PyTorch model used by training's validation and the benchmarks (``rfnet.torch_backend``)
implement :class:`Backend`, so one image -> segmentation core (``rfnet.common.segment``)
drives all of them. It lives in the shared layer because training sits beside, not above,
the deployment runtime.

Modelled on Polygraphy's runners: a backend is loaded once, called many times with a feed
``{input name: array}`` and returns ``{output name: array}``; it is a context manager so the
device memory it holds is released deterministically.

Every backend describes its I/O with :class:`TensorSpec` and validates a feed against it
*before* touching the device (wrong names, wrong dtype, rank, fixed dimensions, or a shape
outside the optimisation profile), so the user gets a message that says which tensor is wrong
and what is allowed, instead of an opaque error from deep inside TensorRT or ONNX Runtime.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

import numpy as np

from rfnet.errors import RFNetError

log = logging.getLogger(__name__)


class BackendError(RFNetError, RuntimeError):
    """Base class of every error a backend raises on purpose (message names the model file)."""


class BackendUnavailableError(BackendError):
    """The backend's libraries (TensorRT, PyCUDA, ONNX Runtime) or its device are missing."""


class ModelLoadError(BackendError):
    """The model file is missing, not a model, or cannot be loaded by this backend."""


class InputError(BackendError, ValueError):
    """A feed does not match the model's inputs (names, dtype, rank or shape)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a model.

    Attributes:
        name: tensor name (inputs: ``image``; outputs: ``boxes``, ``scores``, ``masks``).
        dtype: numpy dtype the buffer must have.
        shape: declared shape; ``-1`` marks a dynamic dimension.
        min_shape, max_shape: for inputs with an optimisation profile (TensorRT), the
            smallest and largest accepted shapes; ``None`` when unconstrained.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    min_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)

    def max_dim(self, axis: int) -> int | None:
        """Largest size allowed on ``axis`` (fixed size, profile maximum, or ``None`` = unbounded)."""
        if self.shape[axis] >= 0:
            return self.shape[axis]
        if self.max_shape is not None:
            return self.max_shape[axis]
        return None

    def check(self, array: np.ndarray, source: str) -> None:
        """Raise :class:`InputError` if ``array`` cannot be fed to this tensor."""
        if array.dtype != self.dtype:
            raise InputError(
                f"{source}: input {self.name!r} must be {self.dtype}, got {array.dtype} "
                f"(cast it with array.astype(np.{self.dtype}))"
            )
        self.check_shape(tuple(array.shape), source)

    def check_shape(self, shape: tuple[int, ...], source: str) -> None:
        """Raise :class:`InputError` if ``shape`` (rank, fixed sizes, profile range) is not accepted."""
        if len(shape) != len(self.shape):
            raise InputError(
                f"{source}: input {self.name!r} must have {len(self.shape)} dimensions "
                f"{_fmt_shape(self.shape)}, got shape {shape}"
            )
        for axis, (want, got) in enumerate(zip(self.shape, shape)):
            if want >= 0 and want != got:
                raise InputError(
                    f"{source}: input {self.name!r} has fixed size {want} on axis {axis} "
                    f"(shape {_fmt_shape(self.shape)}), got shape {shape}"
                )
        if self.min_shape is not None and self.max_shape is not None:
            lo, hi = self.min_shape, self.max_shape
            if any(g < a or g > b for g, a, b in zip(shape, lo, hi)):
                raise InputError(
                    f"{source}: input {self.name!r} shape {shape} is outside the "
                    f"engine's optimisation profile (min {tuple(lo)}, max {tuple(hi)}); use a batch "
                    f"size within the profile or rebuild the engine with a wider profile"
                )


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"


class Backend(abc.ABC):
    """Abstract inference backend: ``load()``, ``infer(feed)``, ``close()``; a context manager.

    Subclasses implement :meth:`_load`, :meth:`_infer` and :meth:`_close` and fill
    ``inputs``, ``outputs``, ``metadata`` and ``device`` in ``_load``.
    """

    #: Short backend name used in logs and summary.json ("onnxruntime", "tensorrt").
    name: str = "backend"
    #: Whether :meth:`infer` may run in several threads at once (an ONNX Runtime session may; a
    #: TensorRT execution context, with its one stream and bindings, may not).
    concurrent_infer: bool = False

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        #: Preprocessing / provenance strings (ONNX metadata_props or the engine manifest).
        self.metadata: dict[str, Any] = {}
        #: Human-readable device description, e.g. "CPU" or "CUDA:0 NVIDIA H100".
        self.device: str = "unknown"
        self._loaded = False

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> "Backend":
        """Load the model and allocate what inference needs; idempotent. Returns ``self``."""
        if not self._loaded:
            if not self._has_source():
                raise ModelLoadError(f"{self.model_path}: model file not found")
            try:
                self._load()
            except BaseException:
                try:  # release whatever a half-finished load allocated
                    self._close()
                except Exception as exc:  # the load error is the one worth reporting
                    log.debug("%s: cleanup after a failed load: %s", self.model_path, exc)
                raise
            self._loaded = True
            log.debug("%s: loaded %s on %s", self.name, self.model_path, self.device)
        return self

    def close(self) -> None:
        """Release device memory and sessions; idempotent."""
        if self._loaded:
            self._loaded = False
            self._close()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def __enter__(self) -> "Backend":
        return self.load()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- inference -------------------------------------------------------------------------
    def input_spec(self, name: str | None = None) -> TensorSpec:
        """The spec of input ``name`` (the only input when ``name`` is None)."""
        if name is None:
            if len(self.inputs) != 1:
                raise BackendError(
                    f"{self.model_path}: expected exactly one input, model has {[t.name for t in self.inputs]}"
                )
            return self.inputs[0]
        for t in self.inputs:
            if t.name == name:
                return t
        raise InputError(f"{self.model_path}: model has no input {name!r}; inputs are {[t.name for t in self.inputs]}")

    def validate_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check names, dtypes and shapes of ``feed``; return it as C-contiguous arrays."""
        if not self._loaded:
            raise BackendError(f"{self.model_path}: call load() (or use the backend as a context manager) first")
        expected = {t.name for t in self.inputs}
        given = set(feed)
        if given != expected:
            missing, extra = sorted(expected - given), sorted(given - expected)
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unknown {extra}")
            raise InputError(
                f"{self.model_path}: feed names do not match the model's inputs {sorted(expected)}: " + ", ".join(parts)
            )
        out: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            arr = np.asarray(feed[spec.name])
            spec.check(arr, str(self.model_path))
            out[spec.name] = np.ascontiguousarray(arr)
        return out

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            feed: ``{input name: array}``, e.g. ``{"image": float32 [B,3,S,S]}``.
        Returns:
            ``{output name: array}`` owned by the caller, e.g. ``boxes`` [B,K,4], ``scores``
            [B,K], ``masks`` [B,K,2,S,S].
        """
        return self._infer(self.validate_feed(feed))

    def cuda_graph_report(self) -> dict[str, Any] | None:
        """What CUDA-graph replay actually did (``None``: not requested or not supported)."""
        return None

    # -- subclass hooks --------------------------------------------------------------------
    def _has_source(self) -> bool:
        """Whether the model to load exists (the file ``model_path``, unless a subclass says otherwise)."""
        return self.model_path.is_file()

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
