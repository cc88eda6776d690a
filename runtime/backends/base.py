"""The backend interface, as the runtime's backends import it.

:class:`Backend`, :class:`TensorSpec` and the backend errors are defined once in
:mod:`rfnet.common.backend` (shared with the PyTorch backend of training and the
benchmarks); this module gives the runtime's backends (``onnxrt``, ``trt_pycuda``) their
usual import path.
"""
from __future__ import annotations

from rfnet.common.backend import (
    Backend,
    BackendError,
    BackendUnavailableError,
    InputError,
    ModelLoadError,
    TensorSpec,
)

__all__ = ["Backend", "BackendError", "BackendUnavailableError", "InputError", "ModelLoadError", "TensorSpec"]
