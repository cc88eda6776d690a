"""The TensorRT half of export: engine plans, target presets, the builder, the INT8 calibrator and
the CUDA device checks (``tensorrt`` is imported only inside :mod:`.trt_builder` and
:mod:`.trt_calibrator`, when an engine is built). Its entry point is ``export/build.py``
(``rfnet build``)."""
