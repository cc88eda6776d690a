"""Timing and memory measurement for the benchmark (torch-free).

* :func:`latency_stats` -- p50 / p90 / p99 / mean / min / max of a list of milliseconds;
* :func:`time_model` -- the model-only loop: ``warmup`` untimed calls, then ``iterations``
  calls of one backend on one fixed batch, each timed with :func:`time.perf_counter`
  around the backend call only (input already preprocessed, outputs already on the host);
* :class:`MemoryProbe` -- peak resident memory of this process while one backend runs
  (Linux: the ``VmHWM`` high-water mark, reset through ``/proc/self/clear_refs`` so that each
  backend gets its own peak; elsewhere ``getrusage`` gives the process-lifetime peak and the
  report says so), and GPU memory used by this process (``nvidia-smi``, which sees every
  CUDA user: PyTorch, ONNX Runtime's CUDA provider, TensorRT).
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rfnet.common.progress import track

log = logging.getLogger(__name__)

#: The paper's RF-Net: 0.244 s per image on one NVIDIA Tesla P100 (Table 1: 4.1 FPS).
PAPER_FPS = 4.1
PAPER_LATENCY_S = 0.244
PAPER_DEVICE = "NVIDIA Tesla P100 (RF-Net paper, Table 1)"


def latency_stats(ms: Sequence[float]) -> dict[str, float | int | None]:
    """Summary of latencies in milliseconds: ``p50``, ``p90``, ``p99`` (linear interpolation),
    ``mean``, ``min``, ``max`` and ``n``; all ``None`` (n = 0) for an empty list."""
    a = np.asarray(list(ms), dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "min": None, "max": None, "n": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def fps_from_ms(ms_per_image: float | None) -> float | None:
    """Images per second for a per-image time in milliseconds."""
    if ms_per_image is None or not ms_per_image > 0:
        return None
    return 1000.0 / ms_per_image


def speedup(fps: float | None) -> float | None:
    """How many times faster than the paper's 4.1 FPS on a P100."""
    return None if fps is None else fps / PAPER_FPS


def time_model(
    infer: Callable[[Mapping[str, np.ndarray]], Any],
    feed: Mapping[str, np.ndarray],
    batch: int,
    *,
    warmup: int,
    iterations: int,
    label: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Model-only timing of ``infer(feed)``.

    Args:
        infer: the backend call (e.g. ``Backend.infer``), returning host arrays.
        feed: ``{"image": float32 [B,3,S,S]}``, built once before the loop.
        batch: images in the feed (B), to report per-image figures.
        warmup: untimed calls first (lazy allocation, cuDNN / TensorRT tactic warm-up).
        iterations: timed calls.
    Returns:
        ``{"batch_size", "warmup", "iterations", "latency_ms" (per call stats),
        "latency_ms_per_image" (per call / B), "throughput_fps", "speedup_vs_paper"}``;
        throughput is ``B / mean call time``.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    for _ in range(max(0, warmup)):
        infer(feed)
    times: list[float] = []
    for _ in track(range(iterations), desc=f"model-only {label} b={batch}", unit="calls", enabled=progress):
        t0 = time.perf_counter()
        infer(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    per_call = latency_stats(times)
    per_image = latency_stats([t / batch for t in times])
    mean = per_call["mean"]
    fps = None if mean is None else batch * 1000.0 / float(mean)
    return {
        "status": "ok",
        "batch_size": batch,
        "warmup": warmup,
        "iterations": iterations,
        "latency_ms": per_call,
        "latency_ms_per_image": per_image,
        "throughput_fps": fps,
        "speedup_vs_paper": speedup(fps),
    }


# -- memory ------------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmHWM, VmRSS), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_mb() -> float:
    # ru_maxrss is kilobytes on Linux, bytes on macOS.
    scale = 1.0 / (1024 * 1024) if sys.platform == "darwin" else 1.0 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def gpu_memory_used_mb(pid: int | None = None) -> float | None:
    """GPU memory held by process ``pid`` (default: this one) per ``nvidia-smi``; None without it.

    nvidia-smi sees memory of every CUDA user in the process (PyTorch caching allocator,
    ONNX Runtime's CUDA arena, TensorRT's engine and activations), unlike
    ``torch.cuda.max_memory_allocated`` which sees only PyTorch's own tensors.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        out = subprocess.run(
            [exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return None
    return parse_nvidia_smi_apps(out, pid)


def parse_nvidia_smi_apps(text: str, pid: int) -> float:
    """Sum of ``used_memory`` MiB of ``pid`` in ``nvidia-smi --query-compute-apps=pid,used_memory
    --format=csv,noheader,nounits`` output (0.0 when the process holds no GPU memory)."""
    total = 0.0
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0] == str(pid):
            try:
                total += float(parts[1])
            except ValueError:
                continue
    return total


@dataclass
class MemoryProbe:
    """Peak memory of one backend: ``start()`` before loading it, ``sample()`` while it runs
    (GPU usage is polled, it has no high-water mark), ``result()`` at the end.

    Attributes of the result: ``peak_rss_mb`` (resident peak during the backend's run),
    ``rss_before_mb`` (resident size when it started), ``peak_rss_increase_mb`` (the
    difference: what this backend added), ``rss_method``, ``gpu_peak_mb`` (largest
    ``nvidia-smi`` reading for this process, None without a GPU), ``gpu_method``.
    """

    per_backend: bool = False
    rss_before_mb: float = 0.0
    gpu_peak_mb: float | None = None
    torch_peak_mb: float | None = None

    def start(self) -> "MemoryProbe":
        self.per_backend = _reset_peak_rss() and _status_kb("VmHWM") is not None
        rss = _status_kb("VmRSS")
        self.rss_before_mb = rss / 1024 if rss is not None else _ru_maxrss_mb()
        self.gpu_peak_mb = None
        self.torch_peak_mb = None
        self.sample()
        return self

    def sample(self) -> None:
        used = gpu_memory_used_mb()
        if used is not None:
            self.gpu_peak_mb = used if self.gpu_peak_mb is None else max(self.gpu_peak_mb, used)

    def result(self) -> dict[str, Any]:
        self.sample()
        if self.per_backend:
            hwm = _status_kb("VmHWM")
            peak = hwm / 1024 if hwm is not None else _ru_maxrss_mb()
            method = "VmHWM of this process, reset before the backend was loaded (/proc/self/clear_refs)"
        else:
            peak = _ru_maxrss_mb()
            method = "getrusage ru_maxrss: peak of the whole process so far (no per-backend reset here)"
        return {
            "peak_rss_mb": round(peak, 1),
            "rss_before_mb": round(self.rss_before_mb, 1),
            "peak_rss_increase_mb": round(max(0.0, peak - self.rss_before_mb), 1),
            "rss_method": method,
            "gpu_peak_mb": None if self.gpu_peak_mb is None else round(self.gpu_peak_mb, 1),
            "gpu_method": None if self.gpu_peak_mb is None else "nvidia-smi used_memory of this process (polled)",
            "torch_cuda_max_allocated_mb": None if self.torch_peak_mb is None else round(self.torch_peak_mb, 1),
        }
