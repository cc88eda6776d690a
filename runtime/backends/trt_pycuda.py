"""TensorRT backend on PyCUDA: name-based I/O API (TensorRT 8.6, 10.x, 11.x), torch-free.

Sequence (NVIDIA's ``common_runtime.py`` / Polygraphy ``TrtRunner`` style):

1. Pre-flight without TensorRT: read ``X.engine.json`` and check that it describes these
   exact engine bytes (``rfnet.runtime.manifest``).
2. Import ``tensorrt`` (``rfnet.runtime.backends.trt_loader``, shared with the engine builder) and
   ``pycuda`` lazily (clear message when missing), make the device's *primary* context current
   (``pycuda.autoprimaryctx``, which coexists with other CUDA users such as PyTorch, unlike
   ``pycuda.autoinit``), and compare TensorRT version, GPU name and compute capability with the
   manifest *before* deserialising.
3. Deserialise with the process-wide logger (plugins registered once), on the DLA core the
   manifest names (``runtime.DLA_core`` is set before ``deserialize_cuda_engine``); create one
   execution context and one stream; allocate one pinned host buffer and one device buffer
   per I/O tensor, sized for the profile's maximum shapes and reused for every call.
4. Per call: ``set_input_shape`` -> resolved output shapes -> ``set_tensor_address`` ->
   async H2D copies -> ``execute_async_v3`` (or, with ``cuda_graph``, a CUDA graph captured
   with cuda-python for the shape of the previous call: ``runtime/backends/cuda_graphs.py``) -> async
   D2H copies -> one stream synchronise.

Only the name-based API is used (no bindings-API fallback: it was removed in TensorRT 10);
optional features are detected with ``hasattr``, never by comparing version strings. The
TensorRT objects are typed against the 10.x stubs (mypy). Every CUDA / TensorRT call goes
through :func:`_checked`, which names the operation. Never run on a GPU by this project.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from rfnet.runtime import manifest as mf
from rfnet.runtime.backends import cuda_graphs
from rfnet.runtime.backends.base import Backend, BackendError, BackendUnavailableError, ModelLoadError
from rfnet.runtime.backends.trt_io import (
    BufferSpec,
    EngineTensor,
    buffers_to_grow,
    describe_engine,
    max_input_shapes,
    plan_buffers,
)
from rfnet.runtime.backends.trt_loader import import_tensorrt, process_logger

if TYPE_CHECKING:  # the TensorRT 10.x stubs (tensorrt-stubs)
    import tensorrt as trt_types

__all__ = ["TensorRTBackend", "import_tensorrt", "import_pycuda", "deserialize_engine", "preflight", "verify_engine"]

log = logging.getLogger(__name__)

PYCUDA_HINT = "pip install pycuda (in the [tensorrt] extra; on Jetson it needs cuda.h on the include path)"
T = TypeVar("T")


def preflight(engine: str | Path) -> dict[str, Any]:
    """Manifest checks that need neither TensorRT nor a GPU: present, valid, matches the bytes.

    Raises:
        rfnet.runtime.manifest.ManifestError / ManifestMismatchError: naming the file and the problem.
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


def import_pycuda() -> Any:
    """Import ``pycuda.driver`` and make the primary context of the default device current.

    Raises:
        BackendUnavailableError: PyCUDA missing, or no usable GPU / driver.
    """
    try:
        cuda = importlib.import_module("pycuda.driver")
    except Exception as exc:
        raise BackendUnavailableError(f"PyCUDA is not installed ({exc}); {PYCUDA_HINT}") from exc
    try:
        # Retains and pushes the primary context of the default device for this thread.
        importlib.import_module("pycuda.autoprimaryctx")
    except Exception as exc:
        raise BackendUnavailableError(f"no usable NVIDIA GPU / CUDA driver ({type(exc).__name__}: {exc})") from exc
    return cuda


def deserialize_engine(path: Path, manifest: dict[str, Any]) -> tuple["trt_types.Runtime", "trt_types.ICudaEngine"]:
    """Deserialise ``path`` on the DLA core its manifest names (call after :func:`import_tensorrt`).

    ``Runtime.DLA_core`` selects the DLA core a deserialised engine runs on (default -1, i.e.
    whatever the engine says); it must be set before ``deserialize_cuda_engine``. The runtime
    is returned with the engine: it must outlive it.

    Raises:
        ModelLoadError: TensorRT returned None (corrupt file).
    """
    import tensorrt as trt

    runtime = _checked("trt.Runtime()", trt.Runtime, process_logger())
    dla_core = manifest.get("dla_core")
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    engine = _checked("deserialize_cuda_engine", runtime.deserialize_cuda_engine, path.read_bytes())
    if engine is None:
        raise ModelLoadError(
            f"{path}: TensorRT {trt.__version__} could not deserialise this engine although its manifest "
            f"matches; the file may be corrupt. Rebuild it with export/build.py"
        )
    return runtime, engine


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
        cuda_graph: capture ``execute_async_v3`` into a CUDA graph for the current input shape
            (with cuda-python, which then must be installed) and replay it while the shape stays;
            a new shape drops the graph, runs plainly once and is captured again (one context
            holds one shape's state). When capture fails (e.g.
            an engine with data-dependent shapes, as NMS makes) the backend warns and runs
            plainly; :meth:`cuda_graph_report` says what actually ran.
    """

    name = "tensorrt"

    def __init__(self, model_path: str | Path, *, cuda_graph: bool = False) -> None:
        super().__init__(model_path)
        self._graph_requested = cuda_graph
        self._use_graph = cuda_graph
        self._graph_note: str | None = None
        self._cudart: Any = None
        self._graphs: dict[tuple[tuple[int, ...], ...], cuda_graphs.CapturedGraph] = {}
        self._graph_launches = 0
        self._captured_shapes: list[tuple[tuple[int, ...], ...]] = []  # every capture, in order
        self._buffers: dict[str, _Buffer] = {}
        self._tensors: list[EngineTensor] = []
        self._trt: Any = None
        self._cuda: Any = None
        self._runtime: "trt_types.Runtime | None" = None
        self._engine: "trt_types.ICudaEngine | None" = None
        self._context: "trt_types.IExecutionContext | None" = None
        self._stream: Any = None
        self.manifest: dict[str, Any] = {}

    # -- load ------------------------------------------------------------------------------
    def _load(self) -> None:
        path = self.model_path
        manifest = preflight(path)  # before importing TensorRT: a wrong or stale engine fails fast anywhere
        trt = import_tensorrt()
        cuda = import_pycuda()
        cudart = cuda_graphs.import_cudart() if self._graph_requested else None  # asked for: required
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
        self._runtime, engine = deserialize_engine(path, manifest)
        self._bind(trt, cuda, engine, cudart=cudart)
        self.manifest = manifest
        self.metadata = dict(manifest)
        self.device = f"CUDA {gpu_name} (sm {major}.{minor}), TensorRT {trt.__version__}"

    def _bind(self, trt: Any, cuda: Any, engine: "trt_types.ICudaEngine", *, cudart: Any = None) -> None:
        """Context, stream, I/O description and reusable buffers for a deserialised ``engine``.

        Separate from :meth:`_load` so tests can drive it with stand-in ``trt``/``cuda``/``cudart``.
        """
        self._trt, self._cuda, self._engine, self._cudart = trt, cuda, engine, cudart
        self._context = _checked("create_execution_context", engine.create_execution_context)
        if self._context is None:
            raise BackendError(f"{self.model_path}: create_execution_context returned None (out of device memory?)")
        self._stream = _checked("cuda.Stream()", cuda.Stream)
        self._tensors = describe_engine(engine, trt)
        self.inputs = [t.spec() for t in self._tensors if t.is_input]
        self.outputs = [t.spec() for t in self._tensors if not t.is_input]
        # Size every buffer once for the largest accepted shapes; calls only use prefixes.
        self._allocate(plan_buffers(self._tensors, self._context, max_input_shapes(self._tensors)))
        if self._use_graph and cudart is None:
            raise BackendUnavailableError(f"cuda_graph=True needs cuda-python; {cuda_graphs.INSTALL_HINT}")

    def _allocate(self, plan: dict[str, BufferSpec]) -> None:
        for name in buffers_to_grow({n: b.capacity for n, b in self._buffers.items()}, plan):
            old = self._buffers.pop(name, None)
            if old is not None:
                old.free()
            self._buffers[name] = _Buffer(self._cuda, plan[name], plan[name].nbytes)
            self._drop_graphs()  # captured graphs hold the old addresses

    # -- infer -----------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, ctx, stream = self._cuda, self._context, self._stream
        assert ctx is not None
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

    def _enqueue(self) -> bool:
        assert self._context is not None
        return bool(self._context.execute_async_v3(int(self._stream.handle)))

    def _execute(self, plan: dict[str, BufferSpec]) -> None:
        if self._use_graph:
            key = tuple(plan[t.name].shape for t in self._tensors if t.is_input)
            if key not in self._graphs:
                # The context keeps the shape-dependent state of the last shape it ran (TensorRT
                # developer guide, "CUDA Graphs": a graph is valid for the shapes it was captured
                # with): a graph of another shape would replay on this shape's state. One graph,
                # for the current shape; a new shape is run plainly once and captured again.
                self._drop_graphs()
            graph = self._graphs.get(key) or self._capture(key)
            if graph is not None:
                _checked("CUDA graph launch", graph.launch)
                self._graph_launches += 1
                return
        _require(_checked("execute_async_v3", self._enqueue), "execute_async_v3")

    def _capture(self, key: tuple[tuple[int, ...], ...]) -> cuda_graphs.CapturedGraph | None:
        """Capture execute_async_v3 for the current shapes; ``None`` (and graphs off) if that fails."""
        # TensorRT needs one plain enqueue after a shape change before capture (deferred updates).
        _require(_checked("execute_async_v3", self._enqueue), "execute_async_v3")
        _checked("stream.synchronize()", self._stream.synchronize)
        try:
            graph = cuda_graphs.capture(self._cudart, int(self._stream.handle), self._enqueue)
        except BackendError as exc:
            self._use_graph = False
            self._graph_note = f"CUDA graph capture failed for input shapes {list(key)} ({exc}); ran without graphs"
            log.warning("%s: %s", self.model_path, self._graph_note)
            return None
        self._graphs[key] = graph
        self._captured_shapes.append(key)
        return graph

    def cuda_graph_report(self) -> dict[str, Any] | None:
        """What ran: ``None`` when graphs were not requested, else requested/used/replays/note."""
        if not self._graph_requested:
            return None
        return {
            "requested": True,
            "used": self._graph_launches > 0,
            "replays": self._graph_launches,
            "captured_shapes": [list(map(list, k)) for k in self._captured_shapes],
            "note": self._graph_note,
        }

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            graph.destroy()
        self._graphs.clear()

    # -- close -----------------------------------------------------------------------------
    def _close(self) -> None:
        errors: list[str] = []
        try:
            if self._stream is not None:
                self._stream.synchronize()
        except Exception as exc:  # keep releasing the rest
            errors.append(f"stream.synchronize(): {exc}")
        try:
            self._drop_graphs()
        except Exception as exc:
            errors.append(f"CUDA graphs: {exc}")
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
