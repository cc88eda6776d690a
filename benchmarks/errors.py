"""The base of every error the benchmarks raise on purpose (torch-free)."""
from __future__ import annotations

from rfnet.errors import RFNetError


class BenchmarkError(RFNetError):
    """Base of the benchmarks package's errors."""


class NotRunError(BenchmarkError, RuntimeError):
    """This runner cannot run on this machine (library, provider or GPU missing); the message says why."""
