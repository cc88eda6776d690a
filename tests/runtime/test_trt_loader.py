"""One import_tensorrt for builder and runtime, the process-wide logger, DLA core before deserialising."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from rfnet.runtime.backends import cuda_graphs, trt_loader
from rfnet.runtime.backends.base import BackendUnavailableError
from rfnet.runtime.backends.trt_pycuda import deserialize_engine

from tests.support.trt_stubs import fake_tensorrt


def _real_tensorrt() -> bool:
    try:
        trt_loader.import_tensorrt()
        return True
    except trt_loader.TensorRTUnavailableError:
        return False


@pytest.mark.skipif(_real_tensorrt(), reason="TensorRT is installed here")
def test_import_tensorrt_explains_what_to_install() -> None:
    with pytest.raises(trt_loader.TensorRTUnavailableError, match=r'pip install "\.\[tensorrt-cu12\]"') as info:
        trt_loader.import_tensorrt()
    assert isinstance(info.value, BackendUnavailableError)  # the runtime's CLI maps it to exit 2
    assert "TensorRT 11" in str(info.value) and '"tensorrt-cu12>=10,<11"' in str(info.value)
    assert '".[tensorrt-cu12]"' in str(info.value) and '".[jetson]"' in str(info.value)


def test_builder_and_runtime_share_one_import_tensorrt() -> None:
    from rfnet.export.trt import trt_builder
    from rfnet.runtime.backends import trt_pycuda

    assert trt_builder.import_tensorrt is trt_loader.import_tensorrt
    assert trt_pycuda.import_tensorrt is trt_loader.import_tensorrt
    assert trt_builder.TensorRTUnavailableError is trt_loader.TensorRTUnavailableError


def _world(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    inits: list[Any] = []
    trt = fake_tensorrt("10", functions={"init_libnvinfer_plugins": lambda logger, ns: inits.append(logger) or True},
                        constructors={"Logger": lambda min_severity=None: trt.make("Logger", min_severity=min_severity)})
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt, inits


def test_plugin_logger_lives_for_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """init_libnvinfer_plugins keeps a raw pointer to its logger: one logger, registered once."""
    trt, inits = _world(monkeypatch)
    first = trt_loader.process_logger()
    second = trt_loader.process_logger(verbose=True)
    assert first is second and inits == [first]
    assert first.min_severity == trt.Logger.VERBOSE  # raised to verbose on request, never lowered back
    trt_loader.process_logger()
    assert first.min_severity == trt.Logger.VERBOSE


def test_dla_core_is_set_before_deserialising(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trt, _ = _world(monkeypatch)
    seen: dict[str, Any] = {}

    def runtime(logger: Any) -> Any:
        def deserialize(blob: bytes) -> Any:
            seen["dla_at_deserialise"] = rt._members.get("DLA_core")
            seen["blob"] = blob
            return trt.make("ICudaEngine")

        rt = trt.make("Runtime", deserialize_cuda_engine=deserialize)
        return rt

    trt.constructors["Runtime"] = runtime
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"engine")
    _, eng = deserialize_engine(engine, {"dla_core": 1})
    assert seen == {"dla_at_deserialise": 1, "blob": b"engine"} and eng is not None
    seen.clear()
    deserialize_engine(engine, {"dla_core": None})
    assert seen["dla_at_deserialise"] is None  # GPU engines leave TensorRT's default (-1)


def test_cuda_graphs_need_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(BackendUnavailableError, match="pip install cuda-python"):
        cuda_graphs.import_cudart()

