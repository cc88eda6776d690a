"""Benchmarks of RF-Net's deployment paths: ``python benchmarks/bench.py --help`` (docs/benchmarks.md).

Torch-free except :mod:`benchmarks.torch_backend`, which imports torch when a PyTorch model loads.
"""
