"""Fixtures for the benchmark tests: the runtime's contract ONNX model (reused from
tests/runtime/conftest.py, not copied), broken variants of it, and a tiny folder data set
whose ground truth is what the contract model should segment.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType, SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rfnet.common.imageio import write_image
from rfnet.common.metrics import to_refuge_seg


def _load_contract() -> ModuleType:
    # --import-mode=importlib: conftest modules are not importable by name, so load the
    # runtime tests' builder from its file (one implementation for both test suites).
    path = Path(__file__).resolve().parents[1] / "runtime" / "conftest.py"
    spec = importlib.util.spec_from_file_location("rfnet_tests_runtime_contract", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


C = _load_contract()

#: (name, height, width, grey value) of the generated evaluation images.
IMAGES = (("im_a", 90, 150, 200), ("im_b", 160, 100, 90), ("im_c", 96, 96, 140), ("im_d", 200, 170, 60))


def write_dataset(root: Path, specs=IMAGES) -> Path:
    """Folder layout (images/ + masks/ REFUGE grey) with discs / cups where the contract
    model puts them: circles of radius 0.45 and 0.225 box widths centred in the box."""
    for name, h, w, v in specs:
        write_image(root / "images" / f"{name}.png", np.full((h, w, 3), v, np.uint8))
        x0, y0, x1, y1 = C.expected_box(v, h, w)
        cx, cy, bw = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5, x1 - x0
        yy, xx = np.mgrid[0:h, 0:w]
        d = np.hypot(xx - cx, yy - cy)
        disc, cup = d <= 0.45 * bw, d <= 0.225 * bw
        write_image(root / "masks" / f"{name}.png", to_refuge_seg(disc, cup))
    return root


def variant(src: Path, dst: Path, *, masks: str | None = None, precision: str | None = None) -> Path:
    """Copy of the contract model with its constant masks changed ("zero": all background,
    "shift": moved by a quarter of the mask) and/or its rfnet.precision relabelled."""
    model = onnx.load(str(src))
    if masks is not None:
        for i, init in enumerate(model.graph.initializer):
            if init.name == "c_masks":
                arr = numpy_helper.to_array(init).copy()
                arr = np.zeros_like(arr) if masks == "zero" else np.roll(arr, arr.shape[-1] // 4, axis=-1)
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, "c_masks"))
    if precision is not None:
        for prop in model.metadata_props:
            if prop.key == "rfnet.precision":
                prop.value = precision
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("bench_models")
    ref = C.make_contract_onnx(d / "ref.onnx")
    copy = d / "copy.onnx"
    shutil.copyfile(ref, copy)
    return SimpleNamespace(
        ref=ref,
        copy=copy,
        int8=variant(ref, d / "ref_int8.onnx", precision="int8"),
        zero=variant(ref, d / "broken_zero.onnx", masks="zero"),
        shift=variant(ref, d / "broken_shift.onnx", masks="shift"),
        fixed1=C.make_contract_onnx(d / "fixed1.onnx", batch=1),
    )


@pytest.fixture(scope="session")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("bench_data"))


@pytest.fixture()
def contract_module() -> ModuleType:
    return C
