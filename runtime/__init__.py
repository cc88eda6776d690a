"""Deployment runtime: numpy + OpenCV + (TensorRT + PyCUDA | ONNX Runtime), never PyTorch.

Entry point: ``python runtime/infer.py --help``. Packages: ``rfnet.runtime.backends`` (the
TensorRT and ONNX Runtime backends behind the shared interface ``rfnet.common.backend``),
``rfnet.runtime.pipeline`` (a decode thread in front of the shared image -> segmentation core,
``rfnet.common.segment``), ``rfnet.runtime.outputs`` (files written atomically) and
``rfnet.runtime.manifest`` (the engine manifest checked before an engine is deserialised).
``pip install .`` installs exactly what this package needs (tests/runtime/test_base_install.py).
tests/runtime/test_no_torch.py runs the runtime where importing torch is impossible.
"""
