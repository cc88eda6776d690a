"""Benchmarks of RF-Net's deployment paths: ``python benchmarks/bench.py --help`` (docs/benchmarks.md).

Torch-free: the PyTorch runners use :mod:`rfnet.torch_backend`, which imports torch only when a
PyTorch model loads.
"""
