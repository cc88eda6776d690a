"""What this machine can run (torch-free: torch is imported only inside the check)."""
from __future__ import annotations


def torch_cuda_unavailable_reason() -> str | None:
    """``None`` when PyTorch sees a CUDA GPU, else why not (used for skips and 'not run' rows)."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch"
    return None
