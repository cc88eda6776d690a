"""CUDA-graph capture and replay of one TensorRT enqueue, through cuda-python (torch-free).

PyCUDA's ``Stream`` has no capture API, so the TensorRT backend captures on its PyCUDA
stream's raw handle with NVIDIA's ``cuda-python`` runtime bindings
(``cuda.bindings.runtime``; ``cuda.cudart`` in releases before 12.6), the sequence of
NVIDIA's TensorRT developer guide ("CUDA Graphs"):

1. one plain ``execute_async_v3`` after the input shapes change (TensorRT defers some
   shape-dependent work to the first enqueue, which must not be captured), synchronise;
2. ``cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal)``, ``execute_async_v3``,
   ``cudaStreamEndCapture(stream)`` -> graph; ``cudaGraphInstantiateWithFlags(graph, 0)``
   (the same call in cuda-python 11.4+ and 12.x; ``cudaGraphInstantiate`` changed signature);
3. per call: ``cudaGraphLaunch(graph_exec, stream)``.

An engine that copies a data-dependent size to the host during enqueue cannot be captured
(a synchronous copy is illegal while capturing): TensorRT does that for ``NonZero``
(NVIDIA/TensorRT#4194), and ``NonMaxSuppression`` has the same kind of data-dependent output
(the number of selected boxes), even though RF-Net pads its outputs to K afterwards. So on
RF-Net engines capture is expected to fail; the backend then runs without graphs and reports
that it did (``cuda_graph_report``). Never run on a GPU: no machine of this project has TensorRT.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable

from rfnet.common.cudart import checked
from rfnet.runtime.backends.base import BackendError, BackendUnavailableError

INSTALL_HINT = "pip install cuda-python (NVIDIA's CUDA bindings; it imports without a GPU)"


class GraphCaptureError(BackendError):
    """Capturing or instantiating the graph failed; the message says which call and why."""


def import_cudart() -> ModuleType:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6) or ``cuda.cudart`` (older releases).

    Raises:
        BackendUnavailableError: neither is importable (with :data:`INSTALL_HINT`).
    """
    errors = []
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise BackendUnavailableError(f"--cuda-graph needs cuda-python ({'; '.join(errors)}); {INSTALL_HINT}")


def _call(cudart: Any, what: str, result: Any) -> Any:
    return checked(cudart, result, what, GraphCaptureError)


class CapturedGraph:
    """An instantiated CUDA graph bound to one stream; :meth:`launch` replays it."""

    def __init__(self, cudart: Any, stream_handle: int, graph: Any, graph_exec: Any) -> None:
        self._cudart, self._stream = cudart, stream_handle
        self._graph, self._exec = graph, graph_exec
        self.launches = 0

    def launch(self) -> None:
        _call(self._cudart, "cudaGraphLaunch", self._cudart.cudaGraphLaunch(self._exec, self._stream))
        self.launches += 1

    def destroy(self) -> None:
        """Release the executable graph and the graph (idempotent)."""
        if self._exec is not None:
            _call(self._cudart, "cudaGraphExecDestroy", self._cudart.cudaGraphExecDestroy(self._exec))
            self._exec = None
        if self._graph is not None:
            _call(self._cudart, "cudaGraphDestroy", self._cudart.cudaGraphDestroy(self._graph))
            self._graph = None


def capture(cudart: Any, stream_handle: int, enqueue: Callable[[], bool]) -> CapturedGraph:
    """Capture what ``enqueue()`` puts on the stream and instantiate it.

    ``enqueue`` is ``lambda: context.execute_async_v3(stream_handle)`` (already run once
    plainly for the current shapes). The capture is always ended, so the stream stays usable
    for plain execution when this raises.

    Raises:
        GraphCaptureError: naming the failing call (TensorRT's False return included).
    """
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    _call(cudart, "cudaStreamBeginCapture", cudart.cudaStreamBeginCapture(stream_handle, mode))
    try:
        ok = enqueue()
    finally:
        ended = cudart.cudaStreamEndCapture(stream_handle)  # always end it: the stream stays usable
    try:
        graph = _call(cudart, "cudaStreamEndCapture", ended)
    except GraphCaptureError:
        cudart.cudaGetLastError()  # clear the (non-sticky) capture error
        raise
    if not ok:
        cudart.cudaGraphDestroy(graph)
        raise GraphCaptureError("execute_async_v3 returned False during capture (see the TensorRT log)")
    try:
        graph_exec = _call(cudart, "cudaGraphInstantiateWithFlags", cudart.cudaGraphInstantiateWithFlags(graph, 0))
    except GraphCaptureError:
        cudart.cudaGraphDestroy(graph)
        raise
    return CapturedGraph(cudart, stream_handle, graph, graph_exec)
