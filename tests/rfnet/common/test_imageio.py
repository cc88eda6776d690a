"""Image reading: every depth/channel layout becomes uint8 RGB; bad files name the file and problem."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rfnet.common.imageio import (IMAGE_EXTENSIONS, ImageReadError, decode_image, decode_photo, image_size,
                                  jpeg_reduction, list_images, read_image, read_mask, read_photo, write_image)


def _rgb(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_rgb_round_trip_keeps_channel_order(tmp_path: Path) -> None:
    img = _rgb()
    img[0, 0] = (255, 0, 0)  # pure red must stay red (not BGR)
    write_image(tmp_path / "a.png", img)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, img)
    assert tuple(out[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("suffix", [".bmp", ".jpg", ".tif"])
def test_other_formats(tmp_path: Path, suffix: str) -> None:
    img = np.full((16, 24, 3), (200, 100, 50), np.uint8)
    write_image(tmp_path / f"a{suffix}", img)
    out = read_image(tmp_path / f"a{suffix}")
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - img).max() <= 3  # JPEG is lossy


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    grey = np.arange(200, dtype=np.uint8).reshape(10, 20)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (10, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_16bit_is_scaled(tmp_path: Path) -> None:
    img16 = np.zeros((4, 5, 3), np.uint16)
    img16[..., 2] = 65535  # BGR order on disk: channel 2 is red
    img16[..., 1] = 257 * 100
    cv2.imwrite(str(tmp_path / "d.png"), img16)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8
    assert tuple(out[0, 0]) == (255, 100, 0)


def test_16bit_grey_mask_keeps_small_values(tmp_path: Path) -> None:
    m = np.array([[0, 128, 255]], np.uint16)
    cv2.imwrite(str(tmp_path / "m.png"), m)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), np.array([[0, 128, 255]], np.uint8))


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., :3] = (10, 20, 200)  # B, G, R
    bgra[0, 0, 3] = 255
    bgra[0, 1, 3] = 0
    bgra[1, :, 3] = 128
    cv2.imwrite(str(tmp_path / "r.png"), bgra)
    out = read_image(tmp_path / "r.png")
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (200, 20, 10)
    assert tuple(out[0, 1]) == (0, 0, 0)
    assert tuple(out[1, 0]) == (100, 10, 5)


def test_read_mask_raw_values_and_colour(tmp_path: Path) -> None:
    m = np.array([[0, 128], [255, 128]], np.uint8)
    write_image(tmp_path / "m.bmp", m)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.bmp"), m)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    write_image(tmp_path / "c.png", colour)
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png"), [[255, 0], [0, 0]])


def test_missing_empty_dir_nonimage(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg: file is empty"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(ImageReadError, match=r"notes\.png: not a readable image"):
        read_image(tmp_path / "notes.png")
    assert issubclass(ImageReadError, ValueError)


@pytest.mark.parametrize("suffix,match", [(".jpg", "truncated JPEG"), (".png", "truncated PNG"), (".bmp", "truncated BMP")])
def test_truncated_files(tmp_path: Path, suffix: str, match: str) -> None:
    img = _rgb(64, 64)
    full = tmp_path / f"full{suffix}"
    write_image(full, img)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(cut)
    assert str(cut) in str(info.value)
    with pytest.raises(ImageReadError, match=match):
        read_mask(cut)


def test_jpeg_with_trailing_bytes_is_accepted(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", _rgb())
    (tmp_path / "b.jpg").write_bytes((tmp_path / "a.jpg").read_bytes() + b"\x00" * 16)
    assert read_image(tmp_path / "b.jpg").shape == (20, 30, 3)


def test_write_image_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported image suffix"):
        write_image(tmp_path / "a.gif", _rgb())
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "a.png", _rgb().astype(np.float32))
    write_image(tmp_path / "b.png", np.eye(3, dtype=bool))
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), np.eye(3, dtype=np.uint8) * 255)
    assert not list(tmp_path.glob(".*tmp"))  # atomic writer left no temporaries


def test_list_images(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "c.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.bmp").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "d.bmp"]
    assert [p.name for p in list_images(str(tmp_path / "*.png"))] == ["b.png"]
    assert list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        list_images(tmp_path / "missing")
    assert ".jpg" in IMAGE_EXTENSIONS


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_decode_image_of_bytes_equals_read_image(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    write_image(path, img)
    data = path.read_bytes()
    assert np.array_equal(decode_image(data, "upload"), read_image(path))
    # the header says 53 x 37 without decoding (TIFF: unknown, so no early refusal)
    assert image_size(data) == (None if suffix == ".tif" else (53, 37))
    if suffix != ".tif":
        with pytest.raises(ImageReadError, match=r"upload: image is 53 x 37 = 1,961 pixels, over the limit of 1,000"):
            decode_image(data, "upload", max_pixels=1000)
    assert decode_image(data, "upload", max_pixels=1961).shape == (37, 53, 3)


def test_image_size_of_progressive_jpeg_and_junk() -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    progressive = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert image_size(progressive) == (30, 20)
    assert image_size(b"\xff\xd8\xff\xda junk") is None and image_size(b"GIF89a") is None
    with pytest.raises(ImageReadError, match="upload: empty"):
        decode_image(b"", "upload")


def _smooth(h: int, w: int) -> np.ndarray:
    """A smooth RGB picture (JPEG scaling and area averaging agree on it to a few grey levels)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(xx / 37.0), 128 + 100 * np.cos(yy / 53.0), (xx + yy) * 200 / (h + w)], axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, **params: int) -> bytes:
    flags = [int(k) for kv in params.items() for k in (getattr(cv2, kv[0]), kv[1])]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), flags)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("side,min_side,factor", [(2100, 1000, 2), (2100, 1051, 1), (4200, 1000, 4), (8400, 1000, 8),
                                                  (16800, 1000, 8), (1999, 1000, 2), (1998, 1000, 1), (2100, 0, 1)])
def test_jpeg_reduction_keeps_the_long_side_at_least_min_side(side: int, min_side: int, factor: int) -> None:
    header = _jpeg(np.zeros((8, 8, 3), np.uint8))
    # patch the frame header's size: only the header is read
    sof = header.index(b"\xff\xc0")
    data = header[: sof + 5] + (100).to_bytes(2, "big") + side.to_bytes(2, "big") + header[sof + 9 :]
    assert image_size(data) == (side, 100)
    assert jpeg_reduction(data, min_side) == factor


def test_jpeg_reduction_only_for_8_bit_grey_or_colour_jpegs(tmp_path: Path) -> None:
    big = _smooth(300, 420)
    assert jpeg_reduction(_jpeg(big), 100) == 4
    assert jpeg_reduction(_jpeg(big[..., 0]), 100) == 4  # grey
    assert jpeg_reduction(_jpeg(big, IMWRITE_JPEG_PROGRESSIVE=1), 100) == 4
    ok, png = cv2.imencode(".png", big)
    assert ok and jpeg_reduction(png.tobytes(), 100) == 1
    assert jpeg_reduction(b"\xff\xd8\xff\xda junk", 100) == 1


def test_decode_photo_reduces_a_large_jpeg_and_keeps_its_size(tmp_path: Path) -> None:
    img = _smooth(301, 419)  # odd sides: libjpeg rounds the reduced size up
    data = _jpeg(img, IMWRITE_JPEG_QUALITY=98)
    full = decode_photo(data, "a.jpg")
    assert (full.height, full.width, full.reduction) == (301, 419, 1)
    np.testing.assert_array_equal(full.pixels, decode_image(data, "a.jpg"))
    photo = decode_photo(data, "a.jpg", min_side=100)
    assert (photo.height, photo.width, photo.reduction, photo.size) == (301, 419, 4, (301, 419))
    assert photo.pixels.shape == (76, 105, 3) and photo.pixels.dtype == np.uint8
    area = cv2.resize(full.pixels, (105, 76), interpolation=cv2.INTER_AREA)
    assert np.abs(area.astype(int) - photo.pixels).mean() < 2.0  # the same picture, smaller (RGB order kept)
    (tmp_path / "a.jpg").write_bytes(data)
    np.testing.assert_array_equal(read_photo(tmp_path / "a.jpg", min_side=100).pixels, photo.pixels)
    assert decode_photo(data, "a.jpg", min_side=200).reduction == 2
    grey = decode_photo(_jpeg(img[..., 1]), "g.jpg", min_side=100)
    assert grey.pixels.shape == (76, 105, 3) and (grey.pixels[..., 0] == grey.pixels[..., 2]).all()


def test_decode_photo_checks_a_reduced_jpeg_like_a_full_one() -> None:
    data = _jpeg(_smooth(300, 420))
    with pytest.raises(ImageReadError, match="b.jpg: truncated JPEG"):
        decode_photo(data[: len(data) // 2], "b.jpg", min_side=100)
    with pytest.raises(ImageReadError, match="b.jpg: image is 420 x 300 = 126,000 pixels, over the limit"):
        decode_photo(data, "b.jpg", min_side=100, max_pixels=100_000)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 Exif segment whose one tag is Orientation (0x0112)."""
    ifd = (1).to_bytes(2, "little") + (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") \
        + (1).to_bytes(4, "little") + orientation.to_bytes(2, "little") + b"\0\0" + (0).to_bytes(4, "little")
    body = b"Exif\0\0" + b"II*\0" + (8).to_bytes(4, "little") + ifd
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


@pytest.mark.parametrize("progressive", [0, 1])
def test_a_reduced_decode_ignores_exif_orientation_like_the_full_one(progressive: int) -> None:
    """The masks are mapped with the file's stored geometry: a reduced decode must not rotate the
    picture where the full decode does not (OpenCV's colour modes apply EXIF orientation by default)."""
    data = _with_exif_orientation(_jpeg(_smooth(300, 420), IMWRITE_JPEG_PROGRESSIVE=progressive), 6)  # 90 degrees
    full = decode_photo(data, "r.jpg")
    reduced = decode_photo(data, "r.jpg", min_side=100)
    assert full.pixels.shape == (300, 420, 3) and (reduced.height, reduced.width) == (300, 420)
    assert reduced.reduction == 4 and reduced.pixels.shape == (75, 105, 3)
    area = cv2.resize(full.pixels, (105, 75), interpolation=cv2.INTER_AREA)
    assert np.abs(area.astype(int) - reduced.pixels).mean() < 2.0


def test_write_image_run_length_encodes_a_grey_bmp_only(tmp_path: Path) -> None:
    grey = np.full((60, 300), 255, np.uint8)
    grey[20:40, 100:200] = 128
    colour = np.dstack([grey, grey // 2, grey // 3])
    write_image(tmp_path / "grey.bmp", grey)
    write_image(tmp_path / "colour.bmp", colour)
    data = (tmp_path / "grey.bmp").read_bytes()
    assert int.from_bytes(data[30:34], "little") == 1  # biCompression: BI_RLE8
    assert len(data) < grey.size // 10
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "grey.bmp"), cv2.IMREAD_UNCHANGED), grey)
    np.testing.assert_array_equal(read_image(tmp_path / "colour.bmp"), colour)
