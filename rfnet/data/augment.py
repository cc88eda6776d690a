"""Paper augmentation: random horizontal / vertical flips and rotations by 0/90/180/270
degrees, applied identically to the image, its masks and its boxes (numpy, torch-free);
plus an optional photometric jitter (:class:`ColorJitter`, not in the paper) for the
illumination and colour-balance spread between fundus cameras.

These are exact pixel permutations (no interpolation), so the transformed box of a mask is
exactly the box of the transformed mask. Boxes are xyxy in pixel-edge coordinates
(``x1 = last column + 1``), the convention of :func:`rfnet.data.sample.box_from_mask`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.data.sample import Sample
from rfnet.errors import UsageError


@dataclass(frozen=True)
class FlipRotate:
    """Horizontal flip, then vertical flip, then ``k`` quarter turns counter-clockwise
    (``np.rot90`` convention: looking at the displayed image)."""

    hflip: bool = False
    vflip: bool = False
    k: int = 0

    @classmethod
    def random(cls, rng: np.random.Generator, p_flip: float = 0.5, rotate: bool = True) -> "FlipRotate":
        """Each flip with probability ``p_flip``; rotation uniform over 0/90/180/270 if ``rotate``."""
        return cls(
            hflip=bool(rng.random() < p_flip),
            vflip=bool(rng.random() < p_flip),
            k=int(rng.integers(0, 4)) if rotate else 0,
        )

    @property
    def is_identity(self) -> bool:
        return not self.hflip and not self.vflip and self.k % 4 == 0

    def apply_array(self, arr: np.ndarray) -> np.ndarray:
        """Transform an [H, W] or [H, W, C] array (returns a contiguous copy)."""
        out = arr
        if self.hflip:
            out = out[:, ::-1]
        if self.vflip:
            out = out[::-1]
        if self.k % 4:
            out = np.rot90(out, self.k % 4, axes=(0, 1))
        return np.ascontiguousarray(out)

    def apply_boxes(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """Transform boxes [N, 4] xyxy of an ``height x width`` image; same dtype out."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        h, w = float(height), float(width)
        if self.hflip:
            b[:, [0, 2]] = w - b[:, [2, 0]]
        if self.vflip:
            b[:, [1, 3]] = h - b[:, [3, 1]]
        for _ in range(self.k % 4):
            # one counter-clockwise quarter turn of a w x h image: (x, y) -> (y, w - x),
            # and the image becomes h wide and w tall
            x0, y0, x1, y1 = b[:, 0].copy(), b[:, 1].copy(), b[:, 2].copy(), b[:, 3].copy()
            b[:, 0], b[:, 1], b[:, 2], b[:, 3] = y0, w - x1, y1, w - x0
            h, w = w, h
        return b.astype(np.asarray(boxes).dtype if np.issubdtype(np.asarray(boxes).dtype, np.floating) else np.float32)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        return (width, height) if self.k % 2 else (height, width)


def augment_arrays(
    op: FlipRotate, image: np.ndarray, masks: list[np.ndarray], boxes: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Apply ``op`` to image [H,W,C], each mask [H,W] and boxes [N,4]."""
    h, w = image.shape[:2]
    return op.apply_array(image), [op.apply_array(m) for m in masks], op.apply_boxes(boxes, h, w)


def augment_sample(sample: Sample, rng: np.random.Generator) -> Sample:
    """A randomly flipped / rotated copy of ``sample`` (meta gains ``augment``)."""
    op = FlipRotate.random(rng)
    image, (disc, cup), box = augment_arrays(op, sample.image, [sample.disc, sample.cup], sample.box[None])
    meta = dict(sample.meta)
    meta["augment"] = op
    return Sample(image=image, disc=disc, cup=cup, box=box[0], meta=meta)


@dataclass(frozen=True)
class ColorJitter:
    """Brightness, contrast, gamma and per-channel gain of an RGB uint8 image (masks untouched).

    ``out = clip(((x / 255) ** gamma * 255 - m) * contrast + m) * brightness * gain[c]`` with
    ``m`` the mean of the image content. Fundus photographs differ mostly in exposure and
    colour cast between cameras and eyes; small datasets (Drishti-GS: 50 images) see few.
    """

    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def random(cls, rng: np.random.Generator, strength: float) -> "ColorJitter":
        """Factors uniform in ``[1 - strength, 1 + strength]`` (channel gains: half that)."""
        if not 0.0 <= strength < 1.0:
            raise UsageError(f"color jitter strength must be in [0, 1), got {strength}")
        u = rng.uniform(1.0 - strength, 1.0 + strength, 3)
        g = rng.uniform(1.0 - strength / 2, 1.0 + strength / 2, 3)
        return cls(float(u[0]), float(u[1]), float(u[2]), (float(g[0]), float(g[1]), float(g[2])))

    def apply(self, image: np.ndarray, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Jitter image [H, W, 3] uint8 inside ``region`` (x0, y0, x1, y1; default: all); uint8 out.

        Pixels outside ``region`` (the letterbox padding) stay as they are.
        """
        out = image.copy()
        x0, y0, x1, y1 = region if region is not None else (0, 0, image.shape[1], image.shape[0])
        out[y0:y1, x0:x1] = self._jitter(image[y0:y1, x0:x1])
        return out

    def apply_masked(self, image: np.ndarray, content: np.ndarray) -> np.ndarray:
        """Jitter the pixels of image [H, W, 3] uint8 where bool ``content`` [H, W] is set."""
        mask = content.astype(np.uint8)
        hist = sum(np.asarray(cv2.calcHist([image], [c], mask, [256], [0, 256])).reshape(-1) for c in range(3))
        out = image.copy()
        np.copyto(out, cv2.LUT(image, self._table(np.asarray(hist, np.float64))), where=content[..., None])
        return out

    def _table(self, hist: np.ndarray) -> np.ndarray:
        """uint8 [256, 1, 3]: level -> jittered level per channel, given the histogram [256] of the
        pixels (all channels) whose mean the contrast turns about."""
        gamma_levels = np.power(np.arange(256, dtype=np.float64) / 255.0, self.gamma) * 255.0
        total = float(hist.sum())
        m = float(hist @ gamma_levels / total) if total else 0.0
        base = (gamma_levels - m) * self.contrast + m
        lut = np.stack([np.clip(np.rint(base * self.brightness * g), 0, 255) for g in self.gain], axis=-1)
        return lut.astype(np.uint8).reshape(256, 1, 3)

    def _jitter(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [..., 3] -> jittered uint8, same shape (the mean is over these pixels).

        Every step maps one 8-bit level to another, so the whole jitter is one table per channel
        (the mean after the gamma comes from the histogram), far cheaper than float arithmetic
        on every pixel of a 1024 px training view.
        """
        flat = np.ascontiguousarray(pixels).reshape(-1, 1, 3)
        hist = np.bincount(flat.reshape(-1), minlength=256).astype(np.float64)
        return cv2.LUT(flat, self._table(hist)).reshape(pixels.shape)
