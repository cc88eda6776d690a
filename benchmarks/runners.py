"""One runner per backend and precision path: which ones a model file gets, and opening them.

A *runner* is a loaded :class:`rfnet.common.backend.Backend` (ONNX Runtime, TensorRT, or the
PyTorch model wrapped in :class:`rfnet.torch_backend.TorchBackend`), so the benchmark
times exactly what the deployment runtime calls. A runner's precision is its model's
``rfnet.precision`` (ONNX metadata, engine manifest, or the PyTorch mode): see
:func:`rfnet.common.segment.model_info`.

=====================  ==============================  ======================================
runner                 model files                     needs
=====================  ==============================  ======================================
pytorch-cpu            ``.pt/.pth/.ckpt``, ``preset:``  PyTorch
pytorch-cuda           same                            a CUDA GPU visible to PyTorch
pytorch-cuda-fp16      same                            same (autocast FP16)
pytorch-cuda-graph     same                            same (CUDA-graph replay)
onnxruntime-cpu        ``.onnx`` (FP32 / FP16 / INT8)  onnxruntime
onnxruntime-cuda       ``.onnx``                       onnxruntime-gpu with the CUDA provider
tensorrt               ``.engine/.plan/.trt``          TensorRT + PyCUDA + the engine's GPU
tensorrt-graph         same                            same (CUDA-graph replay)
=====================  ==============================  ======================================

A runner whose library or device is missing here raises :class:`NotRunError` with the
reason; the report then says "not run: <reason>" instead of a number.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rfnet.benchmarks.errors import NotRunError
from rfnet.common.backend import Backend, BackendUnavailableError
from rfnet.common.env import torch_cuda_unavailable_reason
from rfnet.errors import UsageError
from rfnet.torch_backend import CHECKPOINT_SUFFIXES, PRESET_PREFIX, TorchBackend
from rfnet.runtime.backends import ENGINE_SUFFIXES, ONNX_SUFFIXES
from rfnet.runtime.backends.onnxrt import CPU_PROVIDER, CUDA_PROVIDER, OnnxRuntimeBackend

log = logging.getLogger(__name__)

TORCH_RUNNERS = ("pytorch-cpu", "pytorch-cuda", "pytorch-cuda-fp16", "pytorch-cuda-graph")
ORT_RUNNERS = ("onnxruntime-cpu", "onnxruntime-cuda")
TRT_RUNNERS = ("tensorrt", "tensorrt-graph")
ALL_RUNNERS = TORCH_RUNNERS + ORT_RUNNERS + TRT_RUNNERS


@dataclass(frozen=True)
class RunnerSpec:
    """One (model, runner) pair to benchmark.

    Attributes:
        model: the model argument as given (a path or ``preset:NAME``).
        runner: one of :data:`ALL_RUNNERS`.
    """

    model: str
    runner: str

    @property
    def model_name(self) -> str:
        return self.model if self.model.startswith(PRESET_PREFIX) else Path(self.model).name

    @property
    def id(self) -> str:
        return f"{self.model_name} [{self.runner}]"


def model_kind(model: str) -> str:
    """``"torch"``, ``"onnx"`` or ``"engine"`` from the model argument.

    Raises:
        UsageError (a ValueError): unknown suffix (message lists the accepted ones).
    """
    if model.startswith(PRESET_PREFIX):
        return "torch"
    suffix = Path(model).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "torch"
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise UsageError(
        f"{model}: cannot tell the model type from the suffix {Path(model).suffix!r}; expected a PyTorch "
        f"checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)}), {PRESET_PREFIX}NAME, .onnx, or a TensorRT engine "
        f"({'/'.join(ENGINE_SUFFIXES)})"
    )


def runners_for(model: str, allowed: Sequence[str] | None = None) -> list[RunnerSpec]:
    """Every runner that applies to ``model`` (filtered by ``allowed`` when given)."""
    kind = model_kind(model)
    names = {"torch": TORCH_RUNNERS, "onnx": ORT_RUNNERS, "engine": TRT_RUNNERS}[kind]
    return [RunnerSpec(model, r) for r in names if allowed is None or r in allowed]


def reference_runner(model: str) -> RunnerSpec:
    """The runner that defines reference masks: FP32 on the most deterministic path
    (PyTorch FP32 on CUDA when available else CPU, ONNX Runtime CPU, plain TensorRT)."""
    kind = model_kind(model)
    if kind == "torch":
        return RunnerSpec(model, "pytorch-cuda" if torch_cuda_unavailable_reason() is None else "pytorch-cpu")
    return RunnerSpec(model, "onnxruntime-cpu" if kind == "onnx" else "tensorrt")


def open_runner(spec: RunnerSpec, *, threads: int | None = None) -> Backend:
    """Construct and load the backend of ``spec``.

    Raises:
        NotRunError: the runner's library, provider or device is not available here.
        rfnet.runtime.backends.BackendError and subclasses: the model is missing or cannot be loaded.
    """
    try:
        backend = _construct(spec, threads)
        backend.load()
    except BackendUnavailableError as exc:
        raise NotRunError(str(exc)) from exc
    if spec.runner == "onnxruntime-cuda" and CUDA_PROVIDER not in getattr(backend, "providers", []):
        backend.close()
        raise NotRunError("ONNX Runtime's CUDA execution provider failed to initialise (it fell back to the CPU)")
    return backend


def _construct(spec: RunnerSpec, threads: int | None) -> Backend:
    r = spec.runner
    if r in TORCH_RUNNERS:
        if r != "pytorch-cpu":
            reason = torch_cuda_unavailable_reason()
            if reason:
                raise NotRunError(reason)
        mode = {"pytorch-cuda-fp16": "fp16", "pytorch-cuda-graph": "graph"}.get(r, "fp32")
        return TorchBackend(spec.model, device="cpu" if r == "pytorch-cpu" else "cuda", mode=mode, threads=threads)
    if r in ORT_RUNNERS:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise NotRunError(f"onnxruntime is not installed ({exc})") from exc
        if r == "onnxruntime-cuda":
            available = ort.get_available_providers()
            if CUDA_PROVIDER not in available:
                raise NotRunError(
                    f"this ONNX Runtime has no {CUDA_PROVIDER} (providers: {', '.join(available)}); "
                    f"install onnxruntime-gpu on a CUDA machine"
                )
            providers = [CUDA_PROVIDER, CPU_PROVIDER]
        else:
            providers = [CPU_PROVIDER]
        # no spin-waiting threads, as runtime/infer.py runs it (they would starve the pipeline's threads)
        return OnnxRuntimeBackend(spec.model, providers=providers, intra_op_threads=threads, spinning=False)
    if r in TRT_RUNNERS:
        from rfnet.runtime.backends import trt_pycuda

        # Check the libraries first: without TensorRT the runner is "not run", whatever the file.
        try:
            trt_pycuda.import_tensorrt()
        except BackendUnavailableError as exc:
            raise NotRunError(str(exc)) from exc
        return trt_pycuda.TensorRTBackend(spec.model, cuda_graph=(r == "tensorrt-graph"))
    raise UsageError(f"unknown runner {r!r}; choose from {list(ALL_RUNNERS)}")


def versions() -> dict[str, Any]:
    """Installed versions of the libraries the runners use (metadata only: nothing imported)."""
    from importlib import metadata

    out: dict[str, Any] = {}
    for dist in ("numpy", "opencv-python-headless", "opencv-python", "onnx", "onnxruntime", "onnxruntime-gpu",
                 "torch", "torchvision", "tensorrt", "pycuda", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
