"""The base of every error the export package raises on purpose (torch-free, onnx-free)."""
from __future__ import annotations

from rfnet.errors import RFNetError


class ExportError(RFNetError):
    """Base of the export package's errors: a model, graph, preset or calibration set that cannot be
    exported, converted or built as asked (the message names the file and the problem)."""
