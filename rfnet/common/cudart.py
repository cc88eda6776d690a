"""cuda-python's status convention, checked in one place (torch-free; the runtime's CUDA graphs
and the export side's device probe both use it)."""
from __future__ import annotations

from typing import Any

from rfnet.errors import RFNetError


def checked(cudart: Any, result: Any, what: str, error: type[RFNetError]) -> Any:
    """The value(s) of a cuda-python call, whose ``result`` is ``(cudaError_t, value...)``.

    Raises ``error`` naming ``what`` and CUDA's message when the status is not ``cudaSuccess``;
    returns None (no value), the value, or a tuple of the values.
    """
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, msg = cudart.cudaGetErrorString(err)
        text = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
        raise error(f"{what} failed: {text} ({err})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)
