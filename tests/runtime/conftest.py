"""Fixtures for the runtime tests: a tiny ONNX model honouring the RF-Net I/O contract and
generated images (no real exporter, no data set, no torch).

The model (``make_contract_onnx``): input ``image`` float32 [B,3,S,S] (B dynamic), outputs
``boxes`` [B,K,4], ``scores`` [B,K], ``masks`` [B,K,2,M,M] and the ``rfnet.*`` metadata.
Slot 0 is a square box centred in the network input with half-size
``r = clip(R0 + R1 * max(image[b, 0]), 8, 60)``, so it depends on each image (which catches
batch-order mistakes); its masks are a disc of radius 0.45 M and a cup of radius 0.225 M
(vCDR about 0.5). Slot 1 is a weaker decoy box, the rest are padding (score 0).

The good images (:func:`fundus_like`) are gradable (``rfnet.common.gradability``): at least
256 px on the short side, a uniform orange field of view on black whose red value sets the
box, and boxes that give discs of 14-37 % of the short side.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rfnet.common.preprocess import Letterbox

SIZE = 128  # network input (the real model uses 512; small keeps the tests fast)
MASK = 28
K = 3
R0, R1 = 12.0, 3.0
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
SCORES = (0.9, 0.3, 0.0)
DECOY_BOX = (4.0, 4.0, 20.0, 20.0)


def contract_masks() -> np.ndarray:
    """float32 [K,2,M,M]: disc radius 0.45 M, cup radius 0.225 M in slot 0; decoy in slot 1."""
    yy, xx = np.mgrid[0:MASK, 0:MASK].astype(np.float32) + 0.5
    d = np.hypot(xx - MASK / 2, yy - MASK / 2)
    m = np.full((K, 2, MASK, MASK), 0.02, np.float32)
    m[0, 0][d <= 0.45 * MASK] = 0.95
    m[0, 1][d <= 0.225 * MASK] = 0.95
    m[1, :] = 0.9  # decoy: everything foreground (must not be picked: lower score)
    m[2:] = 0.0
    return m


def metadata(size: int = SIZE) -> dict[str, str]:
    return {
        "rfnet.preset": "test",
        "rfnet.input_size": str(size),
        "rfnet.mean": json.dumps(list(MEAN)),
        "rfnet.std": json.dumps(list(STD)),
        "rfnet.mask_size": str(MASK),
        "rfnet.top_k": str(K),
        "rfnet.class_names": json.dumps(["disc", "cup"]),
        "rfnet.precision": "fp32",
        "rfnet.checkpoint_sha256": "0" * 64,
        "rfnet.config": "{}",
        "rfnet.exporter": json.dumps({"test": "onnx.helper"}),
    }


def make_contract_onnx(path: Path, *, batch: int | str = "batch", size: int = SIZE, with_metadata: bool = True) -> Path:
    """Write the contract model described in the module docstring to ``path``."""
    c = lambda name, arr: numpy_helper.from_array(np.asarray(arr), name)  # noqa: E731
    inits = [
        c("c_start0", np.array([0], np.int64)),
        c("c_end1", np.array([1], np.int64)),
        c("c_axis1", np.array([1], np.int64)),
        c("c_r1", np.array(R1, np.float32)),
        c("c_r0", np.array(R0, np.float32)),
        c("c_rmin", np.array(8.0, np.float32)),
        c("c_rmax", np.array(60.0, np.float32)),
        c("c_centre", np.array(size / 2, np.float32)),
        c("c_rest_boxes", np.array([[list(DECOY_BOX)] + [[0.0] * 4] * (K - 2)], np.float32)),
        c("c_rest_shape", np.array([K - 1, 4], np.int64)),
        c("c_scores", np.array([SCORES], np.float32)),
        c("c_scores_shape", np.array([K], np.int64)),
        c("c_masks", contract_masks()[None]),
        c("c_masks_shape", np.array([K, 2, MASK, MASK], np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Slice", ["shape", "c_start0", "c_end1"], ["b"]),
        # r[b] = clip(R0 + R1 * max(image[b, 0]), 8, 60)
        helper.make_node("Slice", ["image", "c_start0", "c_end1", "c_axis1"], ["ch0"]),
        helper.make_node("ReduceMax", ["ch0"], ["mx"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mx", "c_r1"], ["mx_s"]),
        helper.make_node("Add", ["mx_s", "c_r0"], ["r_raw"]),
        helper.make_node("Clip", ["r_raw", "c_rmin", "c_rmax"], ["r"]),
        helper.make_node("Unsqueeze", ["r", "c_axis1"], ["r2"]),  # [B,1]
        helper.make_node("Sub", ["c_centre", "r2"], ["lo"]),
        helper.make_node("Add", ["c_centre", "r2"], ["hi"]),
        helper.make_node("Concat", ["lo", "lo", "hi", "hi"], ["box0_2d"], axis=1),  # [B,4]
        helper.make_node("Unsqueeze", ["box0_2d", "c_axis1"], ["box0"]),  # [B,1,4]
        helper.make_node("Concat", ["b", "c_rest_shape"], ["rest_shape"], axis=0),
        helper.make_node("Expand", ["c_rest_boxes", "rest_shape"], ["rest"]),
        helper.make_node("Concat", ["box0", "rest"], ["boxes"], axis=1),
        helper.make_node("Concat", ["b", "c_scores_shape"], ["scores_shape"], axis=0),
        helper.make_node("Expand", ["c_scores", "scores_shape"], ["scores"]),
        helper.make_node("Concat", ["b", "c_masks_shape"], ["masks_shape"], axis=0),
        helper.make_node("Expand", ["c_masks", "masks_shape"], ["masks"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rfnet_contract",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, K, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, K]),
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, [batch, K, 2, MASK, MASK]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rfnet-tests")
    model.ir_version = 8  # readable by older ONNX Runtime / TensorRT parsers too
    if with_metadata:
        helper.set_model_props(model, metadata(size))
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def expected_box(value: int, h: int, w: int, size: int = SIZE) -> np.ndarray:
    """Slot-0 box in original pixels for an image whose red channel peaks at ``value`` over a
    large area (a uniform grey image, :func:`fundus_like`) (float64 [4])."""
    m = (np.float32(value) - np.float32(MEAN[0])) / np.float32(STD[0])
    r = float(np.clip(R0 + R1 * m, 8, 60))
    lb = Letterbox.compute(h, w, size)
    c = size / 2
    return lb.boxes_to_original(np.array([[c - r, c - r, c + r, c + r]], np.float64), clip=True)[0]


#: (file name, height, width, red value): different sizes, aspect ratios and box sizes.
GOOD_IMAGES = (
    ("a_wide.png", 270, 450, 200),
    ("b_tall.png", 480, 300, 90),
    ("c_square.bmp", 288, 288, 140),
    ("d_big.png", 600, 510, 60),
)


def fundus_like(h: int, w: int, value: int) -> np.ndarray:
    """uint8 [h,w,3] RGB: a round field of view (radius 0.48 of the short side) of colour
    (value, 0.45 value, 0.2 value) on black: bright, structured and red enough to be graded."""
    img = np.zeros((h, w, 3), np.uint8)
    colour = (int(value), int(0.45 * value), int(0.2 * value))
    cv2.circle(img, (w // 2, h // 2), int(0.48 * min(h, w)), colour, -1)
    return img


def write_images(folder: Path, specs=GOOD_IMAGES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, h, w, v in specs:
        p = folder / name
        assert cv2.imwrite(str(p), cv2.cvtColor(fundus_like(h, w, v), cv2.COLOR_RGB2BGR))
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def contract_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_contract_onnx(tmp_path_factory.mktemp("models") / "rfnet_test.onnx")


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    write_images(tmp_path / "images")
    return tmp_path / "images"


@pytest.fixture(scope="session")
def contract() -> SimpleNamespace:
    """The helpers above for test modules (``--import-mode=importlib`` cannot import conftest)."""
    return SimpleNamespace(
        SIZE=SIZE, MASK=MASK, K=K, MEAN=MEAN, STD=STD, SCORES=SCORES, GOOD_IMAGES=GOOD_IMAGES,
        make_onnx=make_contract_onnx, masks=contract_masks, metadata=metadata,
        expected_box=expected_box, write_images=write_images, fundus_like=fundus_like,
    )
