"""Geometric training augmentation as one affine warp from the original image (torch-free).

The paper augments with flips and quarter turns only (:class:`rfnet.data.augment.FlipRotate`,
exact pixel permutations of the letterboxed image). Fifty training images need more: this
module composes, in network-input pixels,

    letterbox -> flips / quarter turns about the centre -> zoom and small rotation about the
    disc centre -> shift (or a random crop of ``canvas`` pixels that keeps the disc inside)

into one 2x3 matrix and applies it with a single ``cv2.warpAffine`` from the **original**
image (bilinear, black outside the image, like the letterbox padding), so scale jitter never
resamples an already-resampled image. Masks are warped bilinearly and thresholded at one
half; the target box is the tight box of the warped disc mask.

Coordinates follow OpenCV's pixel-index convention (pixel centres at integers), so the plain
letterbox matrix reproduces ``cv2.resize(..., INTER_LINEAR)`` sampling positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.common.preprocess import Letterbox
from rfnet.data.augment import FlipRotate

#: Pixels kept between the disc and the canvas edge when placing it (a disc cut by the
#: canvas edge would teach the detector truncated boxes).
DISC_MARGIN = 8
#: Zooming in stops once the disc spans this fraction of the output side.
MAX_DISC_FILL = 0.95


@dataclass(frozen=True)
class GeometryJitter:
    """Ranges of the geometric jitter (all 0 = the paper's flips and quarter turns only).

    Attributes:
        scale: zoom ``z = exp(u)``, ``u`` uniform in ``[-log(1+scale), log(1+scale)]``.
        rotate_deg: extra rotation uniform in ``[-rotate_deg, rotate_deg]`` degrees.
        translate: shift uniform in ``[-translate, translate] * canvas`` pixels per axis
            (ignored with a crop, where the crop position is itself uniform).
        crop: output side (0 = the input size): train on ``crop x crop`` windows of the
            letterboxed image that contain the disc, anywhere in the window.
    """

    scale: float = 0.0
    rotate_deg: float = 0.0
    translate: float = 0.0
    crop: int = 0

    @property
    def active(self) -> bool:
        return self.scale > 0 or self.rotate_deg > 0 or self.translate > 0 or self.crop > 0


def letterbox_matrix(lb: Letterbox) -> np.ndarray:
    """3x3 matrix: original pixel index -> network-input pixel index (``cv2.resize`` sampling)."""
    h, w = lb.resized_shape
    sx, sy = w / lb.orig_w, h / lb.orig_h  # cv2.resize's exact per-axis factors
    return np.array([[sx, 0.0, 0.5 * sx - 0.5 + lb.pad_x], [0.0, sy, 0.5 * sy - 0.5 + lb.pad_y], [0.0, 0.0, 1.0]])


def flip_rotate_matrix(op: FlipRotate, size: int) -> np.ndarray:
    """3x3 matrix of ``op`` on a ``size x size`` square in pixel indices (as ``op.apply_array``)."""
    n = size - 1.0
    m = np.eye(3)
    if op.hflip:
        m = np.array([[-1.0, 0, n], [0, 1, 0], [0, 0, 1]]) @ m
    if op.vflip:
        m = np.array([[1.0, 0, 0], [0, -1, n], [0, 0, 1]]) @ m
    for _ in range(op.k % 4):  # np.rot90: (x, y) -> (y, n - x)
        m = np.array([[0.0, 1, 0], [-1, 0, n], [0, 0, 1]]) @ m
    return m


def _about(point: tuple[float, float], zoom: float, angle_deg: float) -> np.ndarray:
    """Zoom and counter-clockwise rotation (as displayed, y down) about ``point``."""
    a = math.radians(angle_deg)
    c, s = math.cos(a) * zoom, math.sin(a) * zoom
    x, y = point
    return np.array([[c, s, x - c * x - s * y], [-s, c, y + s * x - c * y], [0.0, 0.0, 1.0]])


def _transform_box(m: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Bounding box [4] of the four corners of ``box`` (pixel edges) under ``m``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]]).T
    p = (m @ corners)[:2]
    return np.array([p[0].min(), p[1].min(), p[0].max(), p[1].max()])


def _place(lo: float, hi: float, extent: int, nominal: float, jitter: float, rng: np.random.Generator) -> float:
    """Shift along one axis that keeps ``[lo, hi]`` inside ``[margin, extent - margin]``."""
    low = DISC_MARGIN - lo
    high = extent - DISC_MARGIN - hi
    if low > high:  # the disc is larger than the window: centre it
        return (low + high) / 2.0
    if jitter < 0:  # uniform over every admissible position (crops)
        return float(rng.uniform(low, high))
    return float(np.clip(nominal + rng.uniform(-jitter, jitter), low, high))


def random_view(lb: Letterbox, disc_box: np.ndarray, jitter: GeometryJitter, rng: np.random.Generator
                ) -> tuple[np.ndarray, FlipRotate, int]:
    """Draw one training view: (2x3 matrix original -> output pixels, the flips used, output side).

    ``disc_box`` is the disc's [4] xyxy box in original pixels (edges).
    """
    size = lb.size
    canvas = jitter.crop if jitter.crop > 0 else size
    op = FlipRotate.random(rng)
    m = flip_rotate_matrix(op, size) @ letterbox_matrix(lb)
    box = _transform_box(m, disc_box)
    zoom = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(jitter.scale)) if jitter.scale > 0 else 1.0
    extent = max(box[2] - box[0], box[3] - box[1], 1.0)
    if zoom > 1.0:  # zoom in only as far as the disc still fits the canvas (disc-centred crops fill it)
        zoom = max(1.0, min(zoom, MAX_DISC_FILL * canvas / extent))
    angle = float(rng.uniform(-jitter.rotate_deg, jitter.rotate_deg)) if jitter.rotate_deg > 0 else 0.0
    m = _about(((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0), zoom, angle) @ m
    box = _transform_box(m, disc_box)
    crop = jitter.crop > 0
    # without a crop the nominal position is the letterbox's own; with one, anywhere
    spread = -1.0 if crop else jitter.translate * size
    tx = _place(box[0], box[2], canvas, 0.0, spread, rng)
    ty = _place(box[1], box[3], canvas, 0.0, spread, rng)
    m = np.array([[1.0, 0, tx], [0, 1, ty], [0, 0, 1]]) @ m
    return m[:2], op, canvas


def warp_image(image: np.ndarray, m: np.ndarray, side: int) -> np.ndarray:
    """Bilinear warp of an [H,W] or [H,W,C] uint8 image to ``side x side``, black outside."""
    return cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_mask(mask: np.ndarray, m: np.ndarray, side: int) -> np.ndarray:
    """Warp a bool [H,W] mask (bilinear, then >= one half) to bool [side, side]."""
    return warp_image(mask.astype(np.uint8) * 255, m, side) >= 128


def warp_content(shape: tuple[int, int], m: np.ndarray, side: int) -> np.ndarray:
    """bool [side, side]: which output pixels come from inside the original image."""
    return warp_image(np.full(shape, 255, np.uint8), m, side) >= 128
