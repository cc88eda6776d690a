"""INT8 calibration loader: runtime preprocessing from the ONNX metadata, batching, data hash."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rfnet.export.calibration import CalibrationDataError, make_calibration_set
from rfnet.export.onnx_tools.onnx_meta import load_metadata
from rfnet.common.imageio import read_image
from rfnet.common.preprocess import preprocess
from rfnet.config import InputConfig

from tests.support import trt_onnx as fx

CFG = InputConfig(size=64, mean=(120.0, 110.0, 100.0), std=(50.0, 60.0, 70.0))


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        h, w = 40 + 7 * i, 90 - 5 * i  # different sizes and aspect ratios
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        p = folder / f"img_{i:02d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def test_batches_equal_runtime_preprocessing(tmp_path: Path) -> None:
    paths = _images(tmp_path / "cal", 5)
    cs = make_calibration_set(tmp_path / "cal", CFG, batch_size=2)
    assert cs.num_batches == 2 and cs.num_images == 4  # the 5th image does not fill a batch
    batches = list(cs.batches())
    assert len(batches) == 2
    for b, batch in enumerate(batches):
        assert batch.shape == (2, 3, 64, 64) and batch.dtype == np.float32 and batch.flags.c_contiguous
        for i in range(2):
            expected, _ = preprocess(read_image(paths[2 * b + i]), CFG)
            np.testing.assert_array_equal(batch[i], expected)
    # padding is black before normalisation: a letterboxed corner equals -mean/std
    np.testing.assert_allclose(batches[0][0, :, 0, 0], [-120 / 50, -110 / 60, -100 / 70], atol=1e-6)


def test_preprocessing_comes_from_onnx_metadata(tmp_path: Path) -> None:
    onnx_path = fx.write_model(tmp_path / "m.onnx")
    cfg = load_metadata(onnx_path).input_config()
    assert cfg.size == 64
    _images(tmp_path / "cal", 2)
    cs = make_calibration_set(tmp_path / "cal", cfg, batch_size=2)
    assert cs.shape == (2, 3, 64, 64)
    assert cs.input_cfg.mean == pytest.approx((123.675, 116.28, 103.53), abs=1e-9)


def test_data_hash_tracks_files_and_settings(tmp_path: Path) -> None:
    paths = _images(tmp_path / "cal", 4)
    h1 = make_calibration_set(tmp_path / "cal", CFG, 2).data_sha256()
    assert h1 == make_calibration_set(tmp_path / "cal", CFG, 2).data_sha256()
    assert h1 != make_calibration_set(tmp_path / "cal", CFG, 4).data_sha256()
    other = InputConfig(size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert h1 != make_calibration_set(tmp_path / "cal", other, 2).data_sha256()
    cv2.imwrite(str(paths[3]), np.zeros((10, 10, 3), np.uint8))
    assert h1 != make_calibration_set(tmp_path / "cal", CFG, 2).data_sha256()


def test_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="no calibration images"):
        make_calibration_set(tmp_path / "empty", CFG, 2)
    with pytest.raises(CalibrationDataError, match="no such file or folder"):
        make_calibration_set(tmp_path / "missing", CFG, 2)
    _images(tmp_path / "few", 1)
    with pytest.raises(CalibrationDataError, match="fewer than one calibration batch of 2"):
        make_calibration_set(tmp_path / "few", CFG, 2)
    with pytest.raises(CalibrationDataError, match="batch size must be >= 1"):
        make_calibration_set(tmp_path / "few", CFG, 0)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    _images(tmp_path / "cal", 1)
    (tmp_path / "cal" / "img_zz.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cs = make_calibration_set(tmp_path / "cal", CFG, 2)
    with pytest.raises(CalibrationDataError, match="img_zz.png"):
        list(cs.batches())
