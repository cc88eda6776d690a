"""A stand-in for cuda-python's runtime module, pinned to the installed ``cuda.bindings.runtime``.

cuda-python imports without a GPU, so its real enums are used as they are, and every function
a test implements must exist in the real module and accept the arguments the code passes
(``inspect.signature`` of the real Cython function). Without cuda-python the tests using it
are skipped with the reason.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import pytest


def real_cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError:
            pytest.skip("cuda-python is not installed (pip install cuda-python): cannot pin the stand-in to it")
    return runtime


class FakeCudart:
    """Functions from ``impl`` (checked against the real module), enums from the real module."""

    def __init__(self, **impl: Callable[..., Any]) -> None:
        self._real = real_cudart()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._impl = impl
        for name in impl:
            if not callable(getattr(self._real, name, None)):
                raise AttributeError(f"cuda-python has no function {name!r}: the stand-in would invent it")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        real = getattr(self._real, name)  # AttributeError for a name cuda-python lacks
        if not callable(real) or isinstance(real, type):
            return real  # enums and types: the real ones
        impl = self._impl.get(name)
        if impl is None:
            raise AttributeError(f"the stand-in does not implement cuda-python's {name}")
        sig = inspect.signature(real)

        def call(*args: Any) -> Any:
            sig.bind(*args)  # TypeError when the code calls it in a way cuda-python would refuse
            self.calls.append((name, args))
            return impl(*args)

        return call

    def ok(self, *values: Any) -> tuple[Any, ...]:
        """A successful cuda-python return value: ``(cudaSuccess, *values)``."""
        return (self._real.cudaError_t.cudaSuccess, *values)

    def error(self, name: str = "cudaErrorStreamCaptureUnsupported", *values: Any) -> tuple[Any, ...]:
        return (getattr(self._real.cudaError_t, name), *values)
