"""TensorRT backend on PyCUDA: name-based I/O API (TensorRT 8.6, 10.x, 11.x), torch-free.

Sequence (NVIDIA's ``common_runtime.py`` / Polygraphy ``TrtRunner`` style):

1. Pre-flight without TensorRT: read ``X.engine.json`` and check that it describes these
   exact engine bytes (``runtime.manifest``).
2. Import ``tensorrt`` and ``pycuda`` lazily (clear message when missing), make the device's
   *primary* context current (``pycuda.autoprimaryctx``, which coexists with other CUDA users
   such as PyTorch, unlike ``pycuda.autoinit``), and compare TensorRT version, GPU name and
   compute capability with the manifest *before* deserialising.
3. Deserialise, create one execution context and one stream; allocate one pinned host buffer
   and one device buffer per I/O tensor, sized for the profile's maximum shapes and reused
   for every call.
4. Per call: ``set_input_shape`` -> resolved output shapes -> ``set_tensor_address`` ->
   async H2D copies -> ``execute_async_v3`` (or a captured CUDA graph for a shape seen
   before) -> async D2H copies -> one stream synchronise.

Only the name-based API is used (no bindings-API fallback: it was removed in TensorRT 10);
optional features are detected with ``hasattr``, never by comparing version strings.
Every CUDA / TensorRT call goes through :func:`_checked`, which names the operation.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from runtime import manifest as mf
from runtime.backends.base import Backend, BackendError, BackendUnavailableError, ModelLoadError
from runtime.backends.trt_plan import (
    BufferSpec,
    EngineTensor,
    buffers_to_grow,
    describe_engine,
    max_input_shapes,
    plan_buffers,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install '.[tensorrt]' on a machine with an NVIDIA GPU"
T = TypeVar("T")


def preflight(engine: str | Path) -> dict[str, Any]:
    """Manifest checks that need neither TensorRT nor a GPU: present, valid, matches the bytes.

    Raises:
        runtime.manifest.ManifestError / ManifestMismatchError: naming the file and the problem.
    """
    manifest = mf.load_manifest(engine)
    mf.check_engine_file(engine, manifest)
    return manifest


def verify_engine(engine: str | Path, *, tensorrt_version: str, gpu_name: str, compute_capability: str) -> dict[str, Any]:
    """:func:`preflight` plus the TensorRT-version / GPU check against this machine's values.

    Returns the manifest. Raises ``ManifestMismatchError`` saying what differs and that the
    engine must be rebuilt with export/build.py on this machine.
    """
    manifest = preflight(engine)
    mf.check_compatible(
        manifest,
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        compute_capability=compute_capability,
        engine=engine,
    )
    return manifest


def import_tensorrt() -> tuple[Any, Any]:
    """Import ``tensorrt`` and ``pycuda.driver`` (and make the primary context current).

    Raises:
        BackendUnavailableError: with :data:`INSTALL_HINT` when either is missing or unusable.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # the PyPI placeholder raises on import when its libraries are absent
        raise BackendUnavailableError(f"TensorRT is not installed or not importable ({exc}); {INSTALL_HINT}") from exc
    if not hasattr(trt, "Runtime"):  # e.g. only the type stubs (tensorrt-stubs) are installed
        raise BackendUnavailableError(
            f"the installed 'tensorrt' package has no runtime (type stubs only?); {INSTALL_HINT}"
        )
    try:
        cuda = importlib.import_module("pycuda.driver")
    except Exception as exc:
        raise BackendUnavailableError(f"PyCUDA is not installed ({exc}); {INSTALL_HINT}") from exc
    try:
        # Retains and pushes the primary context of the default device for this thread.
        importlib.import_module("pycuda.autoprimaryctx")
    except Exception as exc:
        raise BackendUnavailableError(f"no usable NVIDIA GPU / CUDA driver ({type(exc).__name__}: {exc})") from exc
    return trt, cuda


def _checked(what: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one CUDA / TensorRT call; re-raise any failure as BackendError naming ``what``."""
    try:
        return fn(*args)
    except BackendError:
        raise
    except Exception as exc:  # pycuda.driver.Error subclasses, TensorRT's RuntimeError/TypeError
        raise BackendError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _require(ok: Any, what: str) -> None:
    """TensorRT reports many failures as a False return value (with details in its log)."""
    if not ok:
        raise BackendError(f"{what} failed (TensorRT returned {ok!r}; see the TensorRT log above)")


class _Buffer:
    """Pinned host array + device allocation of ``capacity`` bytes for one tensor."""

    def __init__(self, cuda: Any, spec: BufferSpec, capacity: int) -> None:
        n = max(1, -(-capacity // spec.dtype.itemsize))
        self.host = _checked(f"pagelocked_empty({spec.name}, {n} x {spec.dtype})", cuda.pagelocked_empty, n, spec.dtype)
        self.device = _checked(f"mem_alloc({spec.name}, {max(1, capacity)} bytes)", cuda.mem_alloc, max(1, capacity))
        self.capacity = capacity

    def view(self, spec: BufferSpec) -> np.ndarray:
        """Host view with this call's shape (contiguous prefix of the pinned array)."""
        return self.host[: spec.size].reshape(spec.shape)

    def free(self) -> None:
        try:
            self.device.free()
        finally:
            self.host = None


class TensorRTBackend(Backend):
    """Runs a serialised TensorRT engine (``.engine``) with PyCUDA.

    Args:
        model_path: the engine; its manifest ``X.engine.json`` must sit beside it.
        cuda_graph: capture ``execute_async_v3`` into a CUDA graph per input shape and replay
            it (fewer launch overheads for static shapes); falls back to plain execution when
            PyCUDA lacks graph support or capture fails.
    """

    name = "tensorrt"

    def __init__(self, model_path: str | Path, *, cuda_graph: bool = False) -> None:
        super().__init__(model_path)
        self._use_graph = cuda_graph
        self._graphs: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._buffers: dict[str, _Buffer] = {}
        self._tensors: list[EngineTensor] = []
        self._trt: Any = None
        self._cuda: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self.manifest: dict[str, Any] = {}

    # -- load ------------------------------------------------------------------------------
    def _load(self) -> None:
        path = self.model_path
        manifest = preflight(path)  # before importing TensorRT: a wrong or stale engine fails fast anywhere
        trt, cuda = import_tensorrt()
        dev = _checked("cuda.Context.get_device()", cuda.Context.get_device)
        gpu_name = str(_checked("Device.name()", dev.name))
        major, minor = _checked("Device.compute_capability()", dev.compute_capability)
        # Before deserialising: an engine from another TensorRT / GPU fails with a clear message.
        mf.check_compatible(
            manifest,
            tensorrt_version=str(trt.__version__),
            gpu_name=gpu_name,
            compute_capability=f"{major}.{minor}",
            engine=path,
        )
        logger = trt.Logger(trt.Logger.WARNING)
        # Registers the built-in plugins (ROIAlign_TRT for the RoiAlign nodes) with the registry.
        _checked("trt.init_libnvinfer_plugins", trt.init_libnvinfer_plugins, logger, "")
        self._runtime = _checked("trt.Runtime()", trt.Runtime, logger)
        engine = _checked("deserialize_cuda_engine", self._runtime.deserialize_cuda_engine, path.read_bytes())
        if engine is None:
            raise ModelLoadError(
                f"{path}: TensorRT {trt.__version__} could not deserialise this engine although its manifest "
                f"matches; the file may be corrupt. Rebuild it with export/build.py"
            )
        self._bind(trt, cuda, engine)
        self.manifest = manifest
        self.metadata = dict(manifest)
        self.device = f"CUDA {gpu_name} (sm {major}.{minor}), TensorRT {trt.__version__}"

    def _bind(self, trt: Any, cuda: Any, engine: Any) -> None:
        """Context, stream, I/O description and reusable buffers for a deserialised ``engine``.

        Separate from :meth:`_load` so tests can drive it with fake ``trt``/``cuda`` modules.
        """
        self._trt, self._cuda, self._engine = trt, cuda, engine
        self._context = _checked("create_execution_context", engine.create_execution_context)
        if self._context is None:
            raise BackendError(f"{self.model_path}: create_execution_context returned None (out of device memory?)")
        self._stream = _checked("cuda.Stream()", cuda.Stream)
        self._tensors = describe_engine(engine, trt)
        self.inputs = [t.spec() for t in self._tensors if t.is_input]
        self.outputs = [t.spec() for t in self._tensors if not t.is_input]
        # Size every buffer once for the largest accepted shapes; calls only use prefixes.
        self._allocate(plan_buffers(self._tensors, self._context, max_input_shapes(self._tensors)))
        if self._use_graph and not hasattr(self._stream, "begin_capture"):
            log.warning("this PyCUDA has no CUDA graph support (Stream.begin_capture); running without graphs")
            self._use_graph = False

    def _allocate(self, plan: dict[str, BufferSpec]) -> None:
        for name in buffers_to_grow({n: b.capacity for n, b in self._buffers.items()}, plan):
            old = self._buffers.pop(name, None)
            if old is not None:
                old.free()
            self._buffers[name] = _Buffer(self._cuda, plan[name], plan[name].nbytes)
            self._graphs.clear()  # captured graphs hold the old addresses

    # -- infer -----------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, ctx, stream = self._cuda, self._context, self._stream
        plan = plan_buffers(self._tensors, ctx, {k: tuple(v.shape) for k, v in feed.items()})
        self._allocate(plan)  # no-op unless a shape needs more than the profile maximum
        for name, spec in plan.items():
            _require(
                _checked(f"set_tensor_address({name})", ctx.set_tensor_address, name, int(self._buffers[name].device)),
                f"set_tensor_address({name})",
            )
        for name, arr in feed.items():
            host = self._buffers[name].view(plan[name])
            np.copyto(host, arr)
            _checked(f"memcpy_htod_async({name})", cuda.memcpy_htod_async, self._buffers[name].device, host, stream)
        self._execute(plan)
        outputs: dict[str, np.ndarray] = {}
        for name, spec in plan.items():
            if spec.is_input:
                continue
            host = self._buffers[name].view(spec)
            _checked(f"memcpy_dtoh_async({name})", cuda.memcpy_dtoh_async, host, self._buffers[name].device, stream)
            outputs[name] = host
        _checked("stream.synchronize()", stream.synchronize)
        # Copies: the pinned buffers are overwritten by the next call.
        return {name: arr.copy() for name, arr in outputs.items()}

    def _execute(self, plan: dict[str, BufferSpec]) -> None:
        ctx, stream = self._context, self._stream
        if self._use_graph:
            key = tuple(plan[t.name].shape for t in self._tensors if t.is_input)
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._capture()
                if graph is not None:
                    self._graphs[key] = graph
            if graph is not None:
                _checked("CUDA graph launch", graph.launch, stream)
                return
        _require(
            _checked("execute_async_v3", ctx.execute_async_v3, stream.handle), "execute_async_v3"
        )

    def _capture(self) -> Any:
        """Capture execute_async_v3 on the stream; ``None`` (and graphs off) if that fails."""
        ctx, stream = self._context, self._stream
        # TensorRT needs one plain enqueue after a shape change before capture (deferred updates).
        _require(_checked("execute_async_v3", ctx.execute_async_v3, stream.handle), "execute_async_v3")
        _checked("stream.synchronize()", stream.synchronize)
        capturing = False
        try:
            stream.begin_capture()
            capturing = True
            ok = ctx.execute_async_v3(stream.handle)
            graph = stream.end_capture()
            capturing = False
            if not ok:
                raise RuntimeError("execute_async_v3 returned False during capture")
            instantiate = getattr(graph, "instance", None) or getattr(graph, "instantiate")
            return instantiate()
        except Exception as exc:
            if capturing:  # leave the stream usable for plain execution
                try:
                    stream.end_capture()
                except Exception as end_exc:
                    log.debug("end_capture after a failed capture: %s", end_exc)
            log.warning("CUDA graph capture failed (%s: %s); running without graphs", type(exc).__name__, exc)
            self._use_graph = False
            return None

    # -- close -----------------------------------------------------------------------------
    def _close(self) -> None:
        errors: list[str] = []
        try:
            if self._stream is not None:
                self._stream.synchronize()
        except Exception as exc:  # keep releasing the rest
            errors.append(f"stream.synchronize(): {exc}")
        self._graphs.clear()
        for name, buf in self._buffers.items():
            try:
                buf.free()
            except Exception as exc:
                errors.append(f"free({name}): {exc}")
        self._buffers.clear()
        # Context before engine before runtime: TensorRT objects reference each other that way.
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None
        if errors:
            log.warning("%s: errors while releasing CUDA resources: %s", self.model_path, "; ".join(errors))
