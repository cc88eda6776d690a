"""rfnet.common.bmp: run-length encoded grey BMPs read back exactly by OpenCV (and Pillow)."""
from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest

from rfnet.common.bmp import encode_grey_bmp
from rfnet.common.metrics import to_refuge_seg


def _compression(data: bytes) -> int:
    return struct.unpack_from("<I", data, 14 + 16)[0]  # BITMAPINFOHEADER.biCompression


def _cv2_read(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _refuge_map(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h * 0.45) ** 2 + (xx - w * 0.55) ** 2 < (0.2 * min(h, w)) ** 2
    cup = (yy - h * 0.44) ** 2 + (xx - w * 0.56) ** 2 < (0.1 * min(h, w)) ** 2
    return to_refuge_seg(disc, cup & disc)


CASES = {
    "refuge map, photograph size": _refuge_map(1750, 2048),  # rows of 2048: runs split at 255
    "refuge map, odd width": _refuge_map(333, 517),
    "all background": np.full((40, 300), 255, np.uint8),
    "one pixel": np.zeros((1, 1), np.uint8),
    "one column": np.arange(50, dtype=np.uint8).reshape(50, 1),
    "runs of exactly 255 and 256": np.concatenate([np.zeros((3, 255), np.uint8), np.full((3, 256), 128, np.uint8)], 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_length_encoded_bmp_reads_back_exactly(name: str) -> None:
    grey = CASES[name]
    data = encode_grey_bmp(grey)
    back = _cv2_read(data)
    assert back.dtype == np.uint8 and back.shape == grey.shape
    np.testing.assert_array_equal(back, grey)
    if name.startswith("refuge map"):
        assert _compression(data) == 1 and data[-2:] == b"\x00\x01"  # BI_RLE8, ending in end of bitmap
        assert len(data) < grey.size // 20  # mostly background: a small fraction of the plain file


def test_noise_falls_back_to_a_plain_bmp_that_reads_back() -> None:
    grey = np.random.default_rng(0).integers(0, 256, size=(64, 61), dtype=np.uint8)
    data = encode_grey_bmp(grey)
    assert _compression(data) == 0  # BI_RGB: run-length encoding would have grown the file
    assert len(data) == 14 + 40 + 1024 + 64 * 64  # rows padded to 4 bytes
    np.testing.assert_array_equal(_cv2_read(data), grey)


def test_pillow_reads_the_same_pixels() -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (it comes with matplotlib, [train])")
    for grey in (CASES["refuge map, odd width"], CASES["runs of exactly 255 and 256"]):
        with image.open(io.BytesIO(encode_grey_bmp(grey))) as im:
            np.testing.assert_array_equal(np.asarray(im.convert("L")), grey)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4), np.uint8)])
def test_rejects_what_is_not_a_grey_uint8_image(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_grey_bmp(bad)


@pytest.mark.parametrize("seed", range(5))
def test_random_maps_of_blocks_and_constant_rows_read_back(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 300)), int(rng.integers(1, 700))
    grey = np.full((h, w), 255, np.uint8)
    for _ in range(int(rng.integers(0, 6))):  # rectangles of 0 or 128, some over whole rows
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        grey[y0:y0 + int(rng.integers(1, h + 1)), x0 if rng.random() < 0.7 else 0:] = rng.choice([0, 128])
    np.testing.assert_array_equal(_cv2_read(encode_grey_bmp(grey)), grey)
