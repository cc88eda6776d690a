"""Markers that skip with a reason: ``cuda``, ``tensorrt``, ``slow``."""
from __future__ import annotations

import importlib
import os

import pytest

from rfnet.common.env import torch_cuda_unavailable_reason


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")




def _tensorrt_reason() -> str | None:
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # the PyPI stub raises on import without its libs
        return f"TensorRT Python package not importable ({type(exc).__name__}); run on a GPU machine with pip install '.[tensorrt]'"
    if not hasattr(trt, "Builder"):
        # tensorrt-stubs (installed for mypy) provides a bare 'tensorrt' namespace package.
        return "only TensorRT type stubs are installed, not TensorRT; run on a GPU machine with pip install '.[tensorrt]'"
    try:  # not via torch: a Jetson runtime install has TensorRT but may have no PyTorch
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:
        return f"TensorRT is installed but cannot create a builder (no usable GPU?): {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow") or os.environ.get("RFNET_RUN_SLOW") == "1"
    reasons: dict[str, str | None] = {}
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: use --run-slow or RFNET_RUN_SLOW=1"))
        if "cuda" in item.keywords:
            if "cuda" not in reasons:
                reasons["cuda"] = torch_cuda_unavailable_reason()
            if reasons["cuda"]:
                item.add_marker(pytest.mark.skip(reason=reasons["cuda"]))
        if "tensorrt" in item.keywords:
            if "tensorrt" not in reasons:
                reasons["tensorrt"] = _tensorrt_reason()
            if reasons["tensorrt"]:
                item.add_marker(pytest.mark.skip(reason=reasons["tensorrt"]))
