"""Deployment runtime: numpy + OpenCV + (TensorRT + PyCUDA | ONNX Runtime), never PyTorch.

Entry point: ``python runtime/infer.py --help``. Packages: ``runtime.backends`` (the
TensorRT and ONNX Runtime backends behind one interface), ``runtime.pipeline`` (decode ->
preprocess -> infer -> post-process), ``runtime.outputs`` (files written atomically) and
``runtime.manifest`` (the engine manifest checked before an engine is deserialised).
tests/runtime/test_no_torch.py runs the runtime where importing torch is impossible.
"""
