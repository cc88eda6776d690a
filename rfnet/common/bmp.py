"""Grey-level BMP files, run-length encoded (BI_RLE8), for REFUGE maps (torch-free).

A REFUGE map (0 cup, 128 rim, 255 background) at a photograph's size is 3.6 MB as a plain 8-bit
BMP, almost all of it background: writing it was the largest part of what ``rfnet infer`` spends
per image on its files (docs/benchmarks.md). The same pixels run-length encoded take a few tens
of kilobytes. RLE8 is part of the BMP format since Windows 3.0; OpenCV, Pillow and MATLAB read it
(the tests read it back with OpenCV, and with Pillow where it is installed). An image that would
not shrink (noise) is written as a plain 8-bit BMP instead.
"""
from __future__ import annotations

import struct

import numpy as np

_FILE_HEADER = struct.Struct("<2sIHHI")  # BITMAPFILEHEADER: "BM", file size, 0, 0, pixel data offset
_INFO_HEADER = struct.Struct("<IiiHHIIiiII")  # BITMAPINFOHEADER
_BI_RGB, _BI_RLE8 = 0, 1
_PIXELS_PER_M = 2835  # 72 dpi, what OpenCV writes
#: The grey palette: index i is the colour (i, i, i), so every reader returns the stored values.
_GREY_PALETTE = np.repeat(np.arange(256, dtype=np.uint8), 4).reshape(256, 4)
_GREY_PALETTE[:, 3] = 0
_MAX_RUN = 255


def _headers(width: int, height: int, compression: int, data_size: int) -> bytes:
    offset = _FILE_HEADER.size + _INFO_HEADER.size + _GREY_PALETTE.nbytes
    return (_FILE_HEADER.pack(b"BM", offset + data_size, 0, 0, offset)
            + _INFO_HEADER.pack(_INFO_HEADER.size, width, height, 1, 8, compression, data_size,
                                _PIXELS_PER_M, _PIXELS_PER_M, 256, 0)
            + _GREY_PALETTE.tobytes())


def _runs(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, length and value of every run of equal pixels within a row of uint8 [H, W], rows in
    BMP order (bottom-up), left to right. A constant row (most of a REFUGE map) is one run, found
    by a row-wise min / max, so that no full-size temporary is made for the rows of background."""
    h, w = a.shape
    is_varied = a.min(axis=1) != a.max(axis=1)
    varied, constant = np.flatnonzero(is_varied), np.flatnonzero(~is_varied)
    rows, lengths, values = [constant], [np.full(constant.size, w)], [a[constant, 0]]
    if varied.size:
        sub = a[varied]
        start = np.ones(sub.shape, dtype=bool)
        np.not_equal(sub[:, 1:], sub[:, :-1], out=start[:, 1:])
        r, c = np.divmod(np.flatnonzero(start), w)  # row-major: left to right within each row
        ends = np.append(c[1:], w)
        ends[np.flatnonzero(np.diff(r))] = w  # a row's last run ends at the row's end
        rows.append(varied[r])
        lengths.append(ends - c)
        values.append(sub[r, c])
    row, length, value = (np.concatenate(x) for x in (rows, lengths, values))
    order = np.argsort(h - 1 - row, kind="stable")  # bottom-up; a row's runs keep their order
    return h - 1 - row[order], length[order], value[order]


def _rle8_pixels(a: np.ndarray) -> np.ndarray:
    """Encoded mode RLE8 of uint8 [H, W]: per row, bottom-up, (count, value) pairs with count
    1..255, then 00 00 (end of line); the last end of line becomes 00 01 (end of bitmap)."""
    h = a.shape[0]
    line, length, value = _runs(a)  # line: the row's index in the file (0 = bottom)
    pieces = (length + _MAX_RUN - 1) // _MAX_RUN  # a run longer than 255 becomes several
    run = np.repeat(np.arange(length.size), pieces)
    k = np.arange(run.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # piece index within its run
    out = np.zeros(2 * run.size + 2 * h, dtype=np.uint8)
    at = 2 * np.arange(run.size) + 2 * line[run]  # each earlier line adds its 2-byte end of line
    out[at] = np.minimum(length[run] - _MAX_RUN * k, _MAX_RUN)
    out[at + 1] = value[run]
    out[-1] = 1  # the last line's 00 00 -> 00 01
    return out


def encode_grey_bmp(grey: np.ndarray) -> bytes:
    """uint8 [H, W] -> the bytes of an 8-bit grey BMP: run-length encoded (BI_RLE8) when that is
    smaller, else plain (rows padded to 4 bytes). Any BMP reader returns ``grey`` exactly."""
    a = np.asarray(grey)
    if a.dtype != np.uint8 or a.ndim != 2 or a.size == 0:
        raise ValueError(f"encode_grey_bmp expects a non-empty uint8 [H, W] array, got {a.dtype} {a.shape}")
    h, w = a.shape
    rle = _rle8_pixels(a)
    stride = (w + 3) // 4 * 4
    if rle.size < stride * h:
        return _headers(w, h, _BI_RLE8, rle.size) + rle.tobytes()
    plain = np.zeros((h, stride), dtype=np.uint8)
    plain[:, :w] = a[::-1]
    return _headers(w, h, _BI_RGB, plain.size) + plain.tobytes()
