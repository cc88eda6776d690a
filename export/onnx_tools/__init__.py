"""The ONNX half of export: graph passes and checks, metadata, the FP16 op selection, the INT8 Q/DQ
targets and the accuracy comparisons of converted graphs. Its entry points are
``export/export_onnx.py``, ``export/fp16.py`` and ``export/quantize.py`` (``rfnet export | fp16 |
quantize``); ``export/build.py`` uses its checks before TensorRT is imported."""
