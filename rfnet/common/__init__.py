"""Torch-free code shared by training, evaluation and the deployment runtime.

Nothing in this package may import torch (tests/runtime/test_no_torch.py enforces it).
"""
