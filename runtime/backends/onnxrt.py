"""ONNX Runtime backend: CUDA execution provider when present, else CPU (torch-free).

The module is named ``onnxrt`` (not ``onnxruntime``) so that ``python runtime/infer.py``,
which puts ``runtime/`` first on ``sys.path``, cannot shadow the real library.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rfnet.common.backend import Backend, BackendUnavailableError, ModelLoadError, TensorSpec

log = logging.getLogger(__name__)

#: ONNX Runtime's type strings -> numpy dtypes (the ones an exported RF-Net can have).
_ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def _spec(node: Any, model: Path) -> TensorSpec:
    """ONNX Runtime NodeArg -> TensorSpec (symbolic or unknown dimensions become -1)."""
    try:
        dtype = np.dtype(_ORT_DTYPES[node.type])
    except KeyError:
        raise ModelLoadError(f"{model}: tensor {node.name!r} has unsupported type {node.type}") from None
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or []))
    return TensorSpec(node.name, dtype, shape)


def choose_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """Execution providers to ask for: ``requested`` if given, else CUDA (when built in) then CPU."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime here has no {missing}; available providers: {list(available)} "
                f"(for CUDA install onnxruntime-gpu instead of onnxruntime)"
            )
        return list(requested)
    return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]


def plan_cpu_workers(threads: int | None, workers: int | None,
                     providers: Sequence[str] | None = None) -> tuple[int, int | None]:
    """(concurrent runs, intra-op threads per run) for a pipeline on ONNX Runtime.

    ``workers`` None chooses: 2 when the run is on the CPU (no CUDA provider among ``providers``
    or, without them, built into this ONNX Runtime) with at least 2 threads (``threads``, or the
    machine's cores), else 1. ``threads`` (all runs together; None: ONNX Runtime's default) is split
    between the runs. ValueError for a bad count; several runs on a GPU provider are refused by the
    pipeline once the session shows where it runs (``concurrent_infer``).
    """
    import os

    import onnxruntime as ort

    on_cpu = CUDA_PROVIDER not in choose_providers(ort.get_available_providers(), providers)
    total = threads if threads is not None else (os.cpu_count() or 1)
    if total < 1 or (workers is not None and workers < 1):
        raise ValueError(f"threads and workers must be at least 1, got {threads} and {workers}")
    if workers is None:
        workers = 2 if on_cpu and total >= 2 else 1
    if workers == 1:
        return 1, threads
    return workers, max(1, total // workers)


class OnnxRuntimeBackend(Backend):
    """Runs an ``.onnx`` with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        providers: execution providers in priority order; ``None`` = CUDA if available, else CPU.
        intra_op_threads: ONNX Runtime intra-op threads (``None`` = its default).
        spinning: whether idle intra-op threads spin-wait for work (``None`` = ONNX Runtime's
            default, on). Off leaves the cores to the decode and writer threads between runs.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        spinning: bool | None = None,
    ) -> None:
        super().__init__(model_path)
        self._requested = list(providers) if providers else None
        self._threads = intra_op_threads
        self._spinning = spinning
        self._session: Any = None
        self._output_names: list[str] = []

    def _load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a runtime dependency
            raise BackendUnavailableError(
                f"ONNX Runtime is not installed ({exc}); pip install onnxruntime (or onnxruntime-gpu)"
            ) from exc
        providers = choose_providers(ort.get_available_providers(), self._requested)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: provider fallbacks are logged by us
        if self._threads:
            opts.intra_op_num_threads = int(self._threads)
        if self._spinning is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self._spinning else "0")
        try:
            session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
            raise ModelLoadError(
                f"{self.model_path}: ONNX Runtime cannot load this file as an ONNX model "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc})"
            ) from exc
        used = session.get_providers()
        if providers[0] == CUDA_PROVIDER and CUDA_PROVIDER not in used:
            log.warning("%s: CUDA execution provider failed to initialise; running on the CPU", self.model_path)
        self._session = session
        self.inputs = [_spec(n, self.model_path) for n in session.get_inputs()]
        self.outputs = [_spec(n, self.model_path) for n in session.get_outputs()]
        self._output_names = [t.name for t in self.outputs]
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        self.device = "CUDA (ONNX Runtime CUDAExecutionProvider)" if CUDA_PROVIDER in used else "CPU"
        # InferenceSession::Run is thread-safe (microsoft/onnxruntime#19301); on the GPU providers the
        # Python allocator is not (microsoft/onnxruntime#20713), so concurrent runs only on the CPU
        self.concurrent_infer = CUDA_PROVIDER not in used
        self.providers = used

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._output_names, feed)
        return dict(zip(self._output_names, results))

    def _close(self) -> None:
        self._session = None
