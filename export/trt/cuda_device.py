"""The little CUDA that building an engine needs: GPU identity and calibration buffers (torch-free).

Two optional backends, tried in this order, both imported lazily:

* ``cuda-python`` (``cuda.bindings.runtime``; older releases: ``cuda.cudart``) -- NVIDIA's own
  samples use it; it imports without a GPU. A cuda-python whose CUDA runtime is newer than the
  driver (cuda-bindings 13 on a 535-570 driver: ``cudaErrorInsufficientDriver``, CUDA runtime
  API docs, "cudaErrorInsufficientDriver = 35") is passed over for PyCUDA, which is built
  against the CUDA installed on the machine;
* ``pycuda`` (in the ``[tensorrt]`` extra) with the primary context (``pycuda.autoprimaryctx``,
  not ``autoinit``, so it shares the context TensorRT uses).

:func:`gpu_info` gives the GPU name and compute capability written into the engine manifest;
:class:`DeviceBuffer` is the device memory an INT8 calibrator hands to TensorRT.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from rfnet.common.cudart import checked
from rfnet.export.errors import ExportError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install the extra that matches the NVIDIA driver (engines/README.md: pip install '.[tensorrt-cu12]', "
                "'.[tensorrt-cu13]' or '.[jetson]'), which brings cuda-python and pycuda")


class CudaUnavailableError(ExportError, RuntimeError):
    """No usable CUDA binding or no GPU; the message says what to install or check."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    backend: str  # "cuda-python" | "pycuda"


def _cudart() -> Any | None:
    for mod in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    return None


def _usable_cudart() -> Any | None:
    """cuda-python's runtime when it can talk to this machine's driver, else None (PyCUDA is tried)."""
    rt = _cudart()
    if rt is None:
        return None
    result = rt.cudaGetDeviceCount()
    err = result[0] if isinstance(result, tuple) else result
    if err == rt.cudaError_t.cudaErrorInsufficientDriver:
        log.warning("cuda-python's CUDA runtime is newer than this machine's NVIDIA driver (cudaErrorInsufficientDriver: "
                    "e.g. cuda-bindings 13 on a CUDA 12 driver); using PyCUDA instead. Install the extra that matches "
                    "the driver (engines/README.md: pip install '.[tensorrt-cu12]')")
        return None
    return rt


def _check(rt: Any, result: Any, what: str) -> Any:
    return checked(rt, result, what, CudaUnavailableError)


def _pycuda() -> Any | None:
    try:
        drv = importlib.import_module("pycuda.driver")
        importlib.import_module("pycuda.autoprimaryctx")  # creates/retains the primary context
        return drv
    except ImportError:
        return None
    except Exception as exc:  # pycuda raises its own errors when no GPU/driver is usable
        raise CudaUnavailableError(f"pycuda cannot use the GPU: {exc}") from exc


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of GPU ``device`` (what the runtime compares before loading)."""
    rt = _usable_cudart()
    if rt is not None:
        count = _check(rt, rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count or device >= count:
            raise CudaUnavailableError(f"CUDA device {device} not found ({count or 0} visible)")
        prop = _check(rt, rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        raw = prop.name
        name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        attr = rt.cudaDeviceAttr
        major = _check(rt, rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device), "attribute")
        minor = _check(rt, rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device), "attribute")
        return GpuInfo(name=name.strip(), compute_capability=f"{int(major)}.{int(minor)}", backend="cuda-python")
    drv = _pycuda()
    if drv is not None:
        dev = drv.Device(device)
        major, minor = dev.compute_capability()
        return GpuInfo(name=str(dev.name()).strip(), compute_capability=f"{major}.{minor}", backend="pycuda")
    raise CudaUnavailableError(f"no usable CUDA Python binding to query the GPU: {INSTALL_HINT}")


class DeviceBuffer:
    """``nbytes`` of device memory; ``ptr`` is the integer address TensorRT expects.

    Use as a context manager (or call :meth:`free`) so the memory is released after the build.
    """

    def __init__(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise ValueError(f"DeviceBuffer needs a positive size, got {nbytes}")
        self.nbytes = int(nbytes)
        self._rt = _usable_cudart()
        self._drv: Any | None = None
        self._alloc: Any | None = None
        if self._rt is not None:
            self.ptr = int(_check(self._rt, self._rt.cudaMalloc(self.nbytes), "cudaMalloc"))
        else:
            self._drv = _pycuda()
            if self._drv is None:
                raise CudaUnavailableError(f"no usable CUDA Python binding for calibration buffers: {INSTALL_HINT}")
            self._alloc = self._drv.mem_alloc(self.nbytes)
            self.ptr = int(self._alloc)

    def copy_from_host(self, array: np.ndarray) -> None:
        """Copy a C-contiguous host array of exactly ``nbytes`` bytes to the device (synchronous)."""
        host = np.ascontiguousarray(array)
        if host.nbytes != self.nbytes:
            raise ValueError(f"host array has {host.nbytes} bytes, device buffer {self.nbytes}")
        if self._rt is not None:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(self._rt, self._rt.cudaMemcpy(self.ptr, host.ctypes.data, self.nbytes, kind), "cudaMemcpy")
        else:
            assert self._drv is not None
            self._drv.memcpy_htod(self._alloc, host)

    def free(self) -> None:
        if self._rt is not None and self.ptr:
            _check(self._rt, self._rt.cudaFree(self.ptr), "cudaFree")
        elif self._alloc is not None:
            self._alloc.free()
        self.ptr = 0
        self._alloc = None

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()
