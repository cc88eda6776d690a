"""Network-input preprocessing shared by training and every deployment backend (torch-free).

Contract (docs/design.md, "Network input"): RGB uint8 image -> letterbox with
``scale = size / (margin * max(h, w))`` and ``cv2.INTER_LINEAR`` resize, **centred** zero padding
to ``size x size``, then ``(x - mean) / std`` per channel, HWC -> CHW float32. Padding happens
before normalisation, so padded pixels are black (0) and normalise to ``-mean / std``.

:class:`Letterbox` records the mapping so boxes and masks predicted at network-input
resolution can be mapped back to original pixels:
``x_input = x_orig * scale + pad_x`` and ``y_input = y_orig * scale + pad_y``.

``margin`` is 1 (the image's long side fills the input) except where a model asks for black
around a disc-centred crop (``rfnet.crop_margin``, :meth:`rfnet.common.segment.Segmenter.margin`):
the image then fills ``1 / margin`` of the input side, centred.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.config import InputConfig


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterboxed image.

    Attributes:
        scale: ``size / (margin * max(orig_h, orig_w))``; the resized image is
            ``round(orig_w * scale) x round(orig_h * scale)`` pixels.
        pad_x, pad_y: zero columns on the left / rows on the top (centred padding).
        orig_h, orig_w: original image size in pixels.
        size: side of the square network input.
    """

    scale: float
    pad_x: int
    pad_y: int
    orig_h: int
    orig_w: int
    size: int

    @classmethod
    def compute(cls, orig_h: int, orig_w: int, size: int, margin: float = 1.0) -> "Letterbox":
        """Letterbox geometry for an ``orig_h x orig_w`` image into a ``size`` square; with
        ``margin`` > 1 the image's long side fills ``size / margin`` pixels, centred."""
        if orig_h <= 0 or orig_w <= 0:
            raise ValueError(f"image size must be positive, got {orig_h}x{orig_w}")
        if size <= 0:
            raise ValueError(f"letterbox size must be positive, got {size}")
        try:
            check_margin(margin)
        except ValueError as exc:
            raise ValueError(f"letterbox margin {exc}") from None
        scale = size / (margin * max(orig_h, orig_w))
        new_h, new_w = _resized(orig_h, orig_w, scale, size)
        return cls(scale, (size - new_w) // 2, (size - new_h) // 2, int(orig_h), int(orig_w), int(size))

    @property
    def resized_shape(self) -> tuple[int, int]:
        """(height, width) of the image content inside the padded square."""
        return _resized(self.orig_h, self.orig_w, self.scale, self.size)

    def content_region(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the image content in the padded square (pixel edges)."""
        h, w = self.resized_shape
        return self.pad_x, self.pad_y, self.pad_x + w, self.pad_y + h

    def boxes_to_original(self, boxes: np.ndarray, *, clip: bool = False) -> np.ndarray:
        """Map boxes [N,4] xyxy from network-input pixels to original pixels.

        Float32 input gives float32 output, float64 gives float64. With ``clip`` the result
        is clipped to ``[0, orig_w] x [0, orig_h]``.
        """
        b = _as_boxes(boxes)
        out = b.astype(np.float64)
        out[:, 0::2] = (out[:, 0::2] - self.pad_x) / self.scale
        out[:, 1::2] = (out[:, 1::2] - self.pad_y) / self.scale
        if clip:
            out[:, 0::2] = np.clip(out[:, 0::2], 0.0, self.orig_w)
            out[:, 1::2] = np.clip(out[:, 1::2], 0.0, self.orig_h)
        return out.astype(_float_dtype(b))

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map boxes [N,4] xyxy from original pixels to network-input pixels (inverse of
        :meth:`boxes_to_original`)."""
        b = _as_boxes(boxes)
        out = b.astype(np.float64)
        out[:, 0::2] = out[:, 0::2] * self.scale + self.pad_x
        out[:, 1::2] = out[:, 1::2] * self.scale + self.pad_y
        return out.astype(_float_dtype(b))

    def mask_to_original(self, mask: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Crop the padding off a [size,size] map and resize it to [orig_h, orig_w].

        Bool masks are resized with nearest neighbour and stay bool; other dtypes keep
        their dtype and use ``interpolation``.
        """
        m = np.asarray(mask)
        if m.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a [{self.size},{self.size}] map, got {m.shape}")
        new_h, new_w = self.resized_shape
        crop = m[self.pad_y : self.pad_y + new_h, self.pad_x : self.pad_x + new_w]
        if m.dtype == np.bool_:
            out = cv2.resize(crop.astype(np.uint8), (self.orig_w, self.orig_h), interpolation=cv2.INTER_NEAREST_EXACT)
            return out.astype(bool)
        return cv2.resize(np.ascontiguousarray(crop), (self.orig_w, self.orig_h), interpolation=interpolation)


def check_margin(margin: float) -> float:
    """``margin`` as a float, or ValueError when it is not a finite number of at least 1."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 1.0 <= float(margin) < float("inf"):
        raise ValueError(f"must be a finite number >= 1, got {margin!r}")
    return float(margin)


def _resized(h: int, w: int, scale: float, size: int) -> tuple[int, int]:
    new_h = min(size, max(1, int(round(h * scale))))
    new_w = min(size, max(1, int(round(w * scale))))
    return new_h, new_w


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N,4] (xyxy), got {b.shape}")
    return b


def _float_dtype(b: np.ndarray) -> type[np.floating]:
    return np.float64 if b.dtype == np.float64 else np.float32


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H,W,3], got dtype {img.dtype} shape {img.shape}")
    return img


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize (keeping the aspect ratio, ``cv2.INTER_LINEAR``) and centre-pad with zeros.

    Args:
        image: uint8 [H, W, 3] RGB.
        size: side of the output square.
    Returns:
        (uint8 [size, size, 3], :class:`Letterbox`).
    """
    img = _check_image(image)
    lb = Letterbox.compute(img.shape[0], img.shape[1], size)
    new_h, new_w = lb.resized_shape
    resized = img if (new_h, new_w) == img.shape[:2] else cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w] = resized
    return out, lb


def letterbox_mask(mask: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Apply the letterbox of an image to its mask [orig_h, orig_w] -> [size, size].

    Nearest-neighbour (``cv2.INTER_NEAREST_EXACT``, pixel-centre aligned like the linear
    image resize) so label values are preserved; dtype is preserved (bool stays bool).
    """
    m = np.asarray(mask)
    if m.shape[:2] != (lb.orig_h, lb.orig_w) or m.ndim != 2:
        raise ValueError(f"mask shape {m.shape} does not match the letterbox's image {lb.orig_h}x{lb.orig_w}")
    new_h, new_w = lb.resized_shape
    src = m.astype(np.uint8) if m.dtype == np.bool_ else m
    if (new_h, new_w) != m.shape:
        src = cv2.resize(np.ascontiguousarray(src), (new_w, new_h), interpolation=cv2.INTER_NEAREST_EXACT)
    out = np.zeros((lb.size, lb.size), dtype=src.dtype)
    out[lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w] = src
    return out.astype(bool) if m.dtype == np.bool_ else out


def _affine(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per channel with ``(x - mean) / std == x * a + b``."""
    a = 1.0 / np.asarray(std, dtype=np.float32)
    return a, (-np.asarray(mean, dtype=np.float32) * a).astype(np.float32)


def _normalize_into(out: np.ndarray, image: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """``out`` [3, h, w] float32 <- ``image`` [h, w, 3] uint8 * a + b, channel by channel (one pass
    each, no float copy of the whole image: about 4x faster than the broadcast form)."""
    for c in range(3):
        np.multiply(image[:, :, c], a[c], out=out[c], dtype=np.float32)
        out[c] += b[c]


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> float32 [3, H, W] with ``(x - mean) / std`` per channel (computed as
    ``x * (1 / std) - mean / std``: equal within float32 rounding, 2.4e-7)."""
    img = _check_image(image)
    a, b = _affine(mean, std)
    out = np.empty((3, img.shape[0], img.shape[1]), dtype=np.float32)
    _normalize_into(out, img, a, b)
    return out


def preprocess(image: np.ndarray, input_cfg: InputConfig, original: tuple[int, int] | None = None,
               margin: float = 1.0) -> tuple[np.ndarray, Letterbox]:
    """RGB uint8 [H, W, 3] -> (float32 [3, S, S] network input, :class:`Letterbox`), S = input_cfg.size.

    The same values as ``normalize(letterbox(image))`` (black padding, normalised), written straight
    into the output: the padding is filled with the normalised black, the content normalised once.
    ``original``: (height, width) of the picture when ``image`` is a reduced copy of it
    (:class:`rfnet.common.imageio.Photo`); the letterbox maps to the original's pixels.
    ``margin``: the image fills ``1 / margin`` of the input side (:meth:`Letterbox.compute`).
    """
    img = _check_image(image)
    size = input_cfg.size
    orig_h, orig_w = (int(img.shape[0]), int(img.shape[1])) if original is None else original
    lb = Letterbox.compute(orig_h, orig_w, size, margin)
    new_h, new_w = lb.resized_shape
    resized = img if (new_h, new_w) == img.shape[:2] else cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    a, b = _affine(input_cfg.mean, input_cfg.std)
    out = np.empty((3, size, size), dtype=np.float32)
    out[:] = b.reshape(3, 1, 1)  # black, normalised
    _normalize_into(out[:, lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w], np.ascontiguousarray(resized), a, b)
    return out, lb


def preprocess_batch(images: Sequence[np.ndarray], input_cfg: InputConfig) -> tuple[np.ndarray, list[Letterbox]]:
    """List of RGB uint8 images (any sizes) -> (float32 [B, 3, S, S], list of B :class:`Letterbox`)."""
    if len(images) == 0:
        raise ValueError("preprocess_batch needs at least one image")
    s = input_cfg.size
    batch = np.empty((len(images), 3, s, s), dtype=np.float32)
    lbs: list[Letterbox] = []
    for i, img in enumerate(images):
        batch[i], lb = preprocess(img, input_cfg)
        lbs.append(lb)
    return batch, lbs
