"""Markers that skip with a reason: ``cuda``, ``tensorrt``, ``serve``, ``slow``."""
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
        return f"TensorRT Python package not importable ({type(exc).__name__}); run on a GPU machine with pip install '.[tensorrt-cu12]' (engines/README.md)"
    if not hasattr(trt, "Builder"):
        # tensorrt-stubs (installed for mypy) provides a bare 'tensorrt' namespace package.
        return "only TensorRT type stubs are installed, not TensorRT; run on a GPU machine with pip install '.[tensorrt-cu12]' (engines/README.md)"
    try:  # not via torch: a Jetson runtime install has TensorRT but may have no PyTorch
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:
        return f"TensorRT is installed but cannot create a builder (no usable GPU?): {exc}"
    return None


def _serve_reason() -> str | None:
    import platform

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return f"the nvidia-pytriton wheel is built for Linux x86_64 / aarch64 only, not {platform.system()} {platform.machine()}"
    try:
        for mod in ("pytriton.triton", "tritonclient.http", "tritonclient.grpc"):
            importlib.import_module(mod)
    except Exception as exc:
        return (f"serving libraries not importable here ({type(exc).__name__}: {exc}); `make test-serve` runs these "
                f"tests in .venv-serve (pip install -e '.[serve]': nvidia-pytriton needs numpy<2)")
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
        if "serve" in item.keywords:
            if "serve" not in reasons:
                reasons["serve"] = _serve_reason()
            if reasons["serve"]:
                item.add_marker(pytest.mark.skip(reason=reasons["serve"]))
        if "tensorrt" in item.keywords:
            if "tensorrt" not in reasons:
                reasons["tensorrt"] = _tensorrt_reason()
            if reasons["tensorrt"]:
                item.add_marker(pytest.mark.skip(reason=reasons["tensorrt"]))
