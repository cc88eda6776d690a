"""The PyTorch RF-Net behind the :class:`~rfnet.common.backend.Backend` interface.

So the PyTorch model goes through the same image -> segmentation core
(:class:`rfnet.common.segment.Segmenter`) as ONNX Runtime and TensorRT: training's validation
and ``rfnet.evaluate`` (``rfnet.predict``, a model already in memory:
:meth:`TorchBackend.from_model`), the exporter's parity check, and the benchmarks' PyTorch
runners (a checkpoint file or ``preset:NAME``). torch is imported in :meth:`TorchBackend._load`
only, so importing this module costs nothing.

Modes:

* ``fp32`` -- plain eval forward (CPU or CUDA). On CUDA, TF32 is switched off for
  convolutions and matmuls so that "fp32" means FP32 (Ampere+ GPUs would otherwise run
  convolutions in TF32 by default, which is not the reference the parity checks assume);
* ``fp16`` -- CUDA only: ``torch.autocast("cuda", dtype=torch.float16)`` (numerically
  sensitive ops such as softmax / reductions stay FP32 under autocast);
* ``graph`` -- CUDA only: one CUDA graph captured per input shape with
  ``torch.cuda.graph`` and replayed (static input buffer copied in, outputs copied out).
  A model that cannot be captured (host synchronisation, data-dependent shapes) raises
  :class:`BackendUnavailableError` with the reason, so the benchmark reports "not run".

Every call includes the host->device copy of the batch and the device->host copy of the
outputs, like the ONNX Runtime and TensorRT backends. The metadata is the one an ONNX
export of the same config would carry (:func:`rfnet.metadata.metadata_from_config`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.common.backend import Backend, BackendUnavailableError, ModelLoadError, TensorSpec
from rfnet.common.contract import INPUT_NAME, OUTPUT_NAMES
from rfnet.config import ModelConfig, get_preset
from rfnet.metadata import metadata_from_config

log = logging.getLogger(__name__)

MODES = ("fp32", "fp16", "graph")
#: ``--model preset:light`` builds an untrained model (random weights: timing only).
PRESET_PREFIX = "preset:"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


class TorchBackend(Backend):
    """Runs an RF-Net checkpoint (``rfnet.checkpoint.load_model``), an untrained preset, or a
    model in memory (:meth:`from_model`).

    Args:
        source: checkpoint path (``.pt``/``.pth``/``.ckpt``) or ``preset:NAME`` (random weights).
        device: ``"cpu"`` or ``"cuda"``.
        mode: ``"fp32"``, ``"fp16"`` (autocast, CUDA) or ``"graph"`` (CUDA-graph replay, CUDA).
        threads: ``torch.set_num_threads`` (None = leave PyTorch's default).
        seed: seed of the random weights of a preset model.
    """

    name = "pytorch"

    def __init__(self, source: str | Path, *, device: str = "cpu", mode: str = "fp32",
                 threads: int | None = None, seed: int = 0) -> None:
        src = str(source)
        self.preset = src[len(PRESET_PREFIX):] if src.startswith(PRESET_PREFIX) else None
        super().__init__(src)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if mode != "fp32" and device != "cuda":
            raise ValueError(f"mode {mode!r} needs device 'cuda'")
        self.device_kind = device
        self.mode = mode
        self._threads = threads
        self._seed = seed
        self._torch: Any = None
        self._dev: Any = None
        self._model: Any = None
        self._given: tuple[Any, ModelConfig, Any] | None = None
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self.cfg: ModelConfig | None = None

    @classmethod
    def from_model(cls, model: Any, cfg: ModelConfig, device: Any = "cpu") -> "TorchBackend":
        """Wrap a model already in memory (``torch.nn.Module`` built from ``cfg``, on ``device``).

        The model is used as it is: the caller puts it in eval mode, and loading changes no
        global PyTorch setting (threads, TF32), so training can call this between epochs.
        """
        backend = cls(f"<{cfg.name} model in memory>")
        backend._given = (model, cfg, device)
        return backend

    def _has_source(self) -> bool:
        # A preset or a model in memory has no file.
        return self.preset is not None or self._given is not None or super()._has_source()

    def _load(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(f"PyTorch is not installed ({exc})") from exc
        self._torch = torch
        if self._given is not None:
            model, cfg, device = self._given
            self._dev = torch.device(device)
            self._model = model
        else:
            self._prepare_device(torch)
            model, cfg = self._build(torch)
            self._model = model.eval().to(self._dev)
        self.cfg = cfg
        s, k, m = cfg.input.size, cfg.roi_heads.detections_per_img, cfg.mask_head.mask_size
        self.inputs = [TensorSpec(INPUT_NAME, np.dtype(np.float32), (-1, 3, s, s))]
        shapes = ((-1, k, 4), (-1, k), (-1, k, 2, m, m))
        self.outputs = [TensorSpec(n, np.dtype(np.float32), shape) for n, shape in zip(OUTPUT_NAMES, shapes)]
        precision = "fp16" if self.mode == "fp16" else "fp32"
        self.metadata = metadata_from_config(cfg, precision=precision).to_strings()
        name = torch.cuda.get_device_name(self._dev) if self._dev.type == "cuda" else "CPU"
        self.device = f"{name} (PyTorch {torch.__version__}, {self.mode})"

    def _prepare_device(self, torch: Any) -> None:
        if self.device_kind == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("no CUDA GPU visible to PyTorch")
        if self._threads:
            torch.set_num_threads(int(self._threads))
        self._dev = torch.device(self.device_kind)
        if self.device_kind == "cuda":
            # "fp32" must be FP32: TF32 convolutions are on by default on Ampere and later.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.cuda.reset_peak_memory_stats()

    def _build(self, torch: Any) -> tuple[Any, ModelConfig]:
        if self.preset is not None:
            try:
                cfg = get_preset(self.preset)
            except (KeyError, ValueError) as exc:
                raise ModelLoadError(f"{self.model_path}: unknown preset ({exc})") from exc
            from rfnet.model import build_model

            torch.manual_seed(self._seed)
            return build_model(cfg), cfg
        try:
            from rfnet.checkpoint import load_model
        except ImportError as exc:
            raise BackendUnavailableError(f"rfnet.checkpoint is not importable ({exc})") from exc
        try:
            model, cfg = load_model(self.model_path, self.device_kind)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.model_path}: cannot load the checkpoint ({type(exc).__name__}: {exc})") from exc
        return model, cfg

    # -- inference -------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(feed[INPUT_NAME])
        if self.mode == "graph":
            out = self._replay(x)
        else:
            with torch.inference_mode():
                xd = x.to(self._dev)
                if self.mode == "fp16":
                    with torch.autocast("cuda", dtype=torch.float16):
                        out = self._model(xd)
                else:
                    out = self._model(xd)
        # .cpu() synchronises the stream, so the call's time includes the whole forward.
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def _replay(self, x: Any) -> dict[str, Any]:
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return {k: v.clone() for k, v in static_out.items()}

    def _capture(self, x: Any) -> tuple[Any, Any, Any]:
        """Capture the forward for this input shape (warm-up on a side stream first, as the
        PyTorch CUDA-graphs docs require)."""
        torch = self._torch
        static_in = x.to(self._dev).clone()
        try:
            with torch.no_grad():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        self._model(static_in)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._model(static_in)
        except Exception as exc:  # capture errors are RuntimeErrors with CUDA's reason
            raise BackendUnavailableError(
                f"{self.model_path}: CUDA-graph capture of this model failed for input {tuple(x.shape)} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc})"
            ) from exc
        return graph, static_in, static_out

    def torch_max_allocated_mb(self) -> float | None:
        """PyTorch's own CUDA peak since load (None on the CPU)."""
        if self._torch is None or self.device_kind != "cuda":
            return None
        return float(self._torch.cuda.max_memory_allocated()) / 2**20

    def _close(self) -> None:
        self._graphs.clear()
        self._model = None
        if self._torch is not None and self.device_kind == "cuda" and self._given is None:
            try:
                self._torch.cuda.empty_cache()
            except Exception as exc:  # closing must not hide the real error
                log.debug("empty_cache failed: %s", exc)

