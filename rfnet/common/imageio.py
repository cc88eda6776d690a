"""Image reading and writing that fails loudly (torch-free: numpy + OpenCV).

Why not plain ``cv2.imread``: it returns ``None`` without saying why, silently returns a
partial (grey-filled) image for a truncated JPEG or PNG, returns 16-bit, grayscale or BGRA
arrays depending on the file, and uses BGR order. Every reader here decodes the file's bytes
with ``cv2.imdecode``, checks the container for truncation first and converts to one
documented layout, so training, evaluation and the deployment runtime see identical pixels.
:func:`decode_photo` is the runtime's read: a large JPEG at reduced size (libjpeg's DCT scaling)
with the picture's own size kept for geometry; ``min_side`` 0 gives :func:`read_image`'s pixels.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rfnet.common.bmp import encode_grey_bmp
from rfnet.common.fileio import atomic_write_bytes
from rfnet.errors import RFNetError

log = logging.getLogger(__name__)

#: Suffixes (lower case) that :func:`list_images` treats as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = b"\xff\xda"


class ImageReadError(RFNetError, ValueError):
    """An image or mask file could not be read; the message names the file and the problem."""


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    return data


def _check_container(path: Path, data: bytes) -> None:
    """Detect truncated JPEG / PNG / BMP files, which OpenCV may decode partially without error."""
    if data.startswith(_JPEG_SOI):
        # 0xFFD9 cannot occur inside entropy-coded data (0xFF is byte-stuffed there), so a
        # complete file has an EOI marker after its last start-of-scan. Trailing bytes after
        # EOI (seen in files from some cameras) are tolerated.
        sos = data.rfind(_JPEG_SOS)
        eoi = data.rfind(_JPEG_EOI)
        if sos < 0 or eoi < sos:
            raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker after the image data)")
    elif data.startswith(_PNG_SIGNATURE):
        if data.rfind(b"IEND") < 0:
            raise ImageReadError(f"{path}: truncated PNG (no IEND chunk)")
    elif data.startswith(b"BM") and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        # Some writers store 0 here; only a positive declared size is checked.
        if declared > 0 and len(data) < declared:
            raise ImageReadError(
                f"{path}: truncated BMP ({len(data)} bytes, header declares {declared})"
            )


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bits per sample, components) from a JPEG's frame header; None when unknown."""
    i = 2
    while i + 10 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _JPEG_SOF:
            return (int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big"),
                    data[i + 4], data[i + 9])
        elif marker == 0xDA:  # start of scan before any frame header: malformed
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding; None when unknown."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"BM") and len(data) >= 26:
        return abs(int.from_bytes(data[18:22], "little", signed=True)), abs(int.from_bytes(data[22:26], "little", signed=True))
    if data.startswith(_JPEG_SOI):
        frame = _jpeg_frame(data)
        return None if frame is None else frame[:2]
    return None


#: libjpeg's DCT scaling as ``cv2.imdecode`` offers it (largest first), EXIF orientation ignored
#: like the full decode's ``IMREAD_UNCHANGED``.
_JPEG_REDUCTIONS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def jpeg_reduction(data: bytes, min_side: int) -> int:
    """The largest factor (8, 4 or 2) by which libjpeg can decode this JPEG smaller while its long
    side stays at least ``min_side`` pixels; 1 when none can (not an 8-bit grey or colour JPEG, an
    unreadable header, or too small)."""
    return _reduction(_frame_to_reduce(data, min_side), min_side)


def _frame_to_reduce(data: bytes, min_side: int) -> tuple[int, int, int, int] | None:
    """The JPEG frame header of ``data`` when a reduction is asked (``min_side`` > 0), else None."""
    return _jpeg_frame(data) if data.startswith(_JPEG_SOI) and min_side > 0 else None


def _reduction(frame: tuple[int, int, int, int] | None, min_side: int) -> int:
    """:func:`jpeg_reduction` of a parsed frame header (None: not a JPEG, or no reduction asked)."""
    if frame is None or frame[2] != 8 or frame[3] not in (1, 3):
        return 1
    long_side = max(frame[0], frame[1])
    return next((f for f, _ in _JPEG_REDUCTIONS if -(-long_side // f) >= min_side), 1)


@dataclass(frozen=True)
class Photo:
    """An image decoded for a model: ``pixels`` uint8 [h, w, 3] RGB, the file's ``height`` x ``width``
    picture or a copy reduced by ``reduction`` (1, 2, 4 or 8: libjpeg's DCT scaling, each side
    ``ceil(side / reduction)``). Geometry in original pixels (boxes, masks, the letterbox) uses
    ``height`` and ``width``, never the pixels' shape."""

    pixels: np.ndarray
    height: int
    width: int
    reduction: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original picture."""
        return self.height, self.width


def decode_photo(data: bytes, source: str | os.PathLike[str], *, min_side: int = 0,
                 max_pixels: int | None = None) -> Photo:
    """:func:`decode_image`, but a JPEG whose long side is at least twice ``min_side`` is decoded
    at the largest reduction that keeps its long side >= ``min_side`` (:func:`jpeg_reduction`):
    a model that sees the picture at ``min_side`` pixels needs no more, and libjpeg skips most of
    the inverse DCT and the resizing. ``min_side`` 0: always the full picture.

    Raises:
        ImageReadError: as :func:`decode_image`.
    """
    frame = _frame_to_reduce(data, min_side)  # the header, parsed once
    reduction = _reduction(frame, min_side)
    if frame is not None and reduction > 1:
        _check_bytes(data, source, max_pixels)
        w, h = frame[:2]
        flag = dict(_JPEG_REDUCTIONS)[reduction] | cv2.IMREAD_IGNORE_ORIENTATION
        img = _imdecode(data, source, flag)
        if img.ndim == 3 and img.shape[:2] == (-(-h // reduction), -(-w // reduction)):
            return Photo(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), h, w, reduction)
        log.debug("%s: reduced decode gave %s for %d x %d; decoding in full", source, img.shape, w, h)
    pixels = decode_image(data, str(source), max_pixels=max_pixels)
    return Photo(pixels, int(pixels.shape[0]), int(pixels.shape[1]))


def read_photo(path: str | os.PathLike[str], *, min_side: int = 0) -> Photo:
    """:func:`decode_photo` of a file (:func:`read_image` when ``min_side`` is 0)."""
    p = Path(path)
    return decode_photo(_read_bytes(p), p, min_side=min_side)


def _decode(path: str | os.PathLike[str]) -> np.ndarray:
    p = Path(path)
    return _decode_bytes(_read_bytes(p), p)


def _check_bytes(data: bytes, source: str | os.PathLike[str], max_pixels: int | None) -> None:
    _check_container(Path(source), data)
    if max_pixels is not None:
        size = image_size(data)
        if size is not None and size[0] * size[1] > max_pixels:
            raise ImageReadError(f"{source}: image is {size[0]} x {size[1]} = {size[0] * size[1]:,} pixels, "
                                 f"over the limit of {max_pixels:,}")


def _imdecode(data: bytes, source: str | os.PathLike[str], flags: int) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:  # some codecs raise instead of returning None
        raise ImageReadError(f"{source}: cannot decode image ({exc})") from exc
    if img is None or img.size == 0:
        raise ImageReadError(f"{source}: not a readable image (unknown format or corrupt data)")
    return img


def _decode_bytes(data: bytes, source: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    _check_bytes(data, source, max_pixels)
    return _imdecode(data, source, cv2.IMREAD_UNCHANGED)


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """Scale any integer / float depth to uint8 (16-bit: value / 257, rounded)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype == np.int8:
        return np.clip(img, 0, None).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        finite = np.nan_to_num(img.astype(np.float64))
        # Float images are conventionally 0..1; values above 1 are taken as 0..255.
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    raise ImageReadError(f"{path}: unsupported pixel type {img.dtype}")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB.

    Returns:
        uint8 array [H, W, 3] in RGB order. Grayscale is replicated to 3 channels, 16-bit
        and float images are scaled to 0..255, RGBA is composited onto black (transparent
        areas become black, like the outside of a fundus field of view).

    Raises:
        ImageReadError: missing, empty, truncated, non-image or undecodable file; the message
        names the file and the problem.
    """
    p = Path(path)
    return _to_rgb(_to_uint8(_decode(p), p), p)


def decode_image(data: bytes, source: str, *, max_pixels: int | None = None) -> np.ndarray:
    """:func:`read_image` of a file's bytes (an upload, a request item): the same checks and
    the same pixels; ``source`` names the image in error messages. With ``max_pixels``, a PNG,
    JPEG or BMP whose header declares more pixels is refused before decoding (a server's guard
    against decompression bombs; OpenCV's own limit is 2**30).

    Raises:
        ImageReadError: empty, truncated, non-image, undecodable or oversized data.
    """
    if not data:
        raise ImageReadError(f"{source}: empty (0 bytes)")
    return _to_rgb(_to_uint8(_decode_bytes(bytes(data), source, max_pixels), Path(source)), source)


def _to_rgb(img: np.ndarray, p: str | os.PathLike[str]) -> np.ndarray:
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.ndim != 3:
        raise ImageReadError(f"{p}: unexpected image shape {img.shape}")
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        alpha = img[:, :, 3:4].astype(np.uint16)
        rgb = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB).astype(np.uint16)
        return ((rgb * alpha + 127) // 255).astype(np.uint8)
    raise ImageReadError(f"{p}: unsupported number of channels ({channels})")


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label / mask image with its raw values.

    Returns:
        uint8 array [H, W]. 8-bit values are returned unchanged (e.g. REFUGE 0/128/255).
        A 16-bit mask whose values fit in 0..255 keeps its values; otherwise it is scaled
        by 1/257. A colour mask whose channels are equal gives that channel; differing
        channels give the per-pixel maximum (so any non-black colour stays non-zero).
        An alpha channel is ignored.

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    p = Path(path)
    img = _decode(p)
    if img.dtype == np.uint16 and int(img.max(initial=0)) <= 255:
        img = img.astype(np.uint8)
    img = _to_uint8(img, p)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2]):
            img = img[:, :, 0]
        else:
            log.debug("%s: colour mask, using the maximum over channels", p)
            img = img.max(axis=2)
    if img.ndim != 2:
        raise ImageReadError(f"{p}: unexpected mask shape {img.shape}")
    return np.ascontiguousarray(img)


def write_image(path: str | os.PathLike[str], array: np.ndarray, *, jpeg_quality: int = 95) -> None:
    """Write an RGB [H,W,3] or grey [H,W] uint8 (or bool) array atomically.

    The format follows the suffix (.png, .bmp, .jpg/.jpeg, .tif/.tiff); a grey .bmp (a REFUGE map)
    is run-length encoded when that is smaller (:func:`rfnet.common.bmp.encode_grey_bmp`: the same
    pixels for any reader, a few tens of kB instead of 3.6 MB). The caller decides whether
    overwriting is allowed (see :func:`rfnet.common.fileio.check_can_write`).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ValueError(f"{p}: unsupported image suffix {p.suffix!r}; use one of {IMAGE_EXTENSIONS}")
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise ValueError(f"{p}: write_image expects uint8 or bool, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise ValueError(f"{p}: write_image expects [H,W] or [H,W,3], got shape {arr.shape}")
    elif suffix == ".bmp" and arr.size:
        atomic_write_bytes(p, encode_grey_bmp(arr))
        return
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(arr), params)
    if not ok:
        raise ValueError(f"{p}: OpenCV could not encode the image as {suffix}")
    atomic_write_bytes(p, encoded.tobytes())


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A bool [H,W] mask as a 1-bit PNG (reads back as 0/255 uint8): the bytes of every mask file
    and every served mask, a few times faster to encode than an 8-bit PNG."""
    ok, encoded = cv2.imencode(".png", np.asarray(mask, dtype=bool).view(np.uint8) * np.uint8(255),
                               [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise ValueError("OpenCV could not encode the mask as PNG")
    return encoded.tobytes()


def _is_image_file(p: Path) -> bool:
    return (
        p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.name.startswith(".")  # macOS "._x.jpg" resource forks, hidden files
        and "__MACOSX" not in p.parts
    )


def list_images(source: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Image files named by a folder, a glob pattern or a single file, sorted by path.

    A folder lists its image files (by :data:`IMAGE_EXTENSIONS`, case-insensitive; hidden
    files and ``__MACOSX`` skipped), recursively when ``recursive``. A glob pattern
    (containing ``*?[``) lists its matching image files. A file is returned as is.

    Raises:
        FileNotFoundError: ``source`` is neither an existing path nor a glob pattern.
    """
    s = os.fspath(source)
    p = Path(s)
    if p.is_dir():
        it = p.rglob("*") if recursive else p.iterdir()
        return sorted(q for q in it if _is_image_file(q))
    if p.is_file():
        return [p]
    if any(c in s for c in "*?["):
        return sorted(Path(q) for q in glob.glob(s, recursive=recursive) if _is_image_file(Path(q)))
    raise FileNotFoundError(f"{p}: no such file or folder")
