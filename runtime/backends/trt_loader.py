"""The one way this project imports TensorRT, and the process-wide TensorRT logger (torch-free).

Used by the engine builder (``export/trt/trt_builder.py``, via ``export/build.py``) and by the
runtime's TensorRT backend (``runtime/backends/trt_pycuda.py``). Importing this module
imports nothing from TensorRT; :func:`import_tensorrt` does, and says what to install when
it cannot.

The logger: ``trt.init_libnvinfer_plugins(logger, "")`` keeps a raw pointer to ``logger``
for as long as the plugin library is loaded, i.e. the rest of the process, and the logger
given to a ``Builder``/``Runtime`` must outlive every object they create. NVIDIA's samples
therefore create one logger at module level; :func:`process_logger` does the same (the one
piece of module state in the project, kept on purpose).
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rfnet.runtime.backends.base import BackendUnavailableError

if TYPE_CHECKING:  # checked against the TensorRT 10.x stubs (tensorrt-stubs)
    import tensorrt as trt

log = logging.getLogger(__name__)

#: What to install. On x86 ``pip install tensorrt`` now resolves to TensorRT 11 (strongly typed
#: only: no FP16/INT8 builder flags, no calibrators); the 10.x pin keeps the weakly typed path.
INSTALL_HINT = (
    'on a machine with an NVIDIA GPU install the extra for its driver (engines/README.md, "Install"): '
    '`pip install ".[tensorrt-cu12]"` for a CUDA 12 driver (525-570), `".[tensorrt-cu13]"` for CUDA 13 (580+); '
    "both give TensorRT 11, strongly typed only (for TensorRT 10.x add the pin `\"tensorrt-cu12>=10,<11\"`); "
    'Jetson (JetPack 6): TensorRT comes with JetPack (python3-libnvinfer), in a venv made with '
    '--system-site-packages and `pip install ".[jetson]"`'
)


class TensorRTUnavailableError(BackendUnavailableError):
    """TensorRT's Python package is missing or unusable; the message says what to install."""


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` or raise :class:`TensorRTUnavailableError` naming what to install.

    The PyPI ``tensorrt`` placeholder raises on import when its libraries are missing, and a
    stub-only install (``tensorrt-stubs``, for mypy) leaves an empty namespace package without
    ``Builder``/``Runtime``: both count as "not installed". Imports nothing else (no PyCUDA).
    """
    try:
        mod = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or the placeholder's own exception
        raise TensorRTUnavailableError(f"TensorRT is not installed ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    if not (hasattr(mod, "Builder") and hasattr(mod, "Runtime")):
        where = ", ".join(getattr(mod, "__path__", [])) or getattr(mod, "__file__", "?")
        raise TensorRTUnavailableError(
            f"TensorRT is not installed (the importable 'tensorrt' at {where} has no Builder/Runtime: "
            f"type stubs only?); {INSTALL_HINT}"
        )
    return mod


# The logger and the module it was made from (a test may swap in a stand-in module).
_PROCESS: dict[str, Any] = {}


def process_logger(verbose: bool = False) -> "trt.Logger":
    """The process-wide ``trt.Logger``; registers TensorRT's plugins with it on first use.

    ``verbose`` lowers its threshold to VERBOSE (it is never raised again: a later quiet
    caller does not silence an earlier verbose one). Call after :func:`import_tensorrt`.
    """
    import tensorrt as trt  # only after import_tensorrt() succeeded

    if _PROCESS.get("module") is not trt:
        logger = trt.Logger(trt.Logger.WARNING)
        # Registers the built-in plugins (ROIAlign_TRT for the RoiAlign nodes) before any parse or
        # deserialisation; TensorRT keeps a raw pointer to this logger, hence process lifetime.
        trt.init_libnvinfer_plugins(logger, "")
        _PROCESS.update(module=trt, logger=logger)
    logger = _PROCESS["logger"]
    if verbose:
        logger.min_severity = trt.Logger.VERBOSE
    return logger
