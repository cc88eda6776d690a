"""Is a result gradable? The one verdict every consumer reports (torch-free).

A cup-to-disc ratio is only worth reporting when a confident, whole, plausibly sized optic disc
backs it, in an image that can be a fundus photograph. :func:`grade` checks, in this order, and
reports the first failed check as the ``reason`` (a short code, :data:`REASONS`) with a human
message:

==========================  ====================================================================
reason                      when
==========================  ====================================================================
``image_too_small``         the short side is below :data:`MIN_SIDE_PX`
``image_too_dark``          the brightest 1 % of the image is below :data:`MIN_BRIGHTNESS`
``image_too_flat``          no coarse structure (:data:`MIN_CONTRAST`): uniform, noise, ...
``not_fundus_colour``       red is the strongest channel in less than :data:`MIN_RED_FRACTION`
                            of the field (a colour photograph of something else; a greyscale
                            image passes this check)
``no_disc``                 nothing detected, or an empty disc mask
``low_disc_score``          the disc scores below the model's ``rfnet.min_disc_score``
``disc_at_edge``            the disc box or mask touches the image border (cut off)
``disc_too_small``          the disc spans fewer than :data:`MIN_DISC_PX` pixels or less than
                            :data:`MIN_DISC_FRACTION` of the image's short side
``disc_too_large``          the disc spans more than :data:`MAX_DISC_FRACTION` of the short side
``no_cup``                  no cup inside the disc (even at the relative fallback threshold)
==========================  ====================================================================

The image-level measures (:func:`measure_image`) and the thresholds were measured on the 50
Drishti-GS1 training images and on generated junk images; the figures and margins are in
docs/design.md ("Gradability"). The disc-score threshold is a property of the trained model
(``rfnet.config.GradingConfig.min_disc_score``, exported as ``rfnet.min_disc_score``;
``python -m rfnet.grading_calibration`` derives it from cross-validation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rfnet.common.postprocess import Segmentation

IMAGE_TOO_SMALL = "image_too_small"
IMAGE_TOO_DARK = "image_too_dark"
IMAGE_TOO_FLAT = "image_too_flat"
NOT_FUNDUS_COLOUR = "not_fundus_colour"
NO_DISC = "no_disc"
LOW_DISC_SCORE = "low_disc_score"
DISC_AT_EDGE = "disc_at_edge"
DISC_TOO_SMALL = "disc_too_small"
DISC_TOO_LARGE = "disc_too_large"
NO_CUP = "no_cup"
#: Every reason code, in the order :func:`grade` checks them.
REASONS: tuple[str, ...] = (IMAGE_TOO_SMALL, IMAGE_TOO_DARK, IMAGE_TOO_FLAT, NOT_FUNDUS_COLOUR, NO_DISC,
                            LOW_DISC_SCORE, DISC_AT_EDGE, DISC_TOO_SMALL, DISC_TOO_LARGE, NO_CUP)

#: Short side below which an image is not graded: at the smallest plausible disc fraction
#: (:data:`MIN_DISC_FRACTION`) smaller images give discs under :data:`MIN_DISC_PX`.
MIN_SIDE_PX = 256
#: Brightest 1 % of the brightest channel (0..255, :attr:`ImageQuality.brightness`) below this: too dark.
MIN_BRIGHTNESS = 40.0
#: Standard deviation of the coarse thumbnail (:attr:`ImageQuality.contrast`) below this: flat.
MIN_CONTRAST = 8.0
#: Fraction of the field (thumbnail pixels at least :data:`FIELD_LEVEL` of the brightness) whose
#: red channel is at least its green and blue (:attr:`ImageQuality.red_fraction`) below this:
#: not a colour fundus photograph.
MIN_RED_FRACTION = 0.5
FIELD_LEVEL = 0.25
#: A disc narrower or shorter than this (pixels) quantises the CDR in steps above 1/16.
MIN_DISC_PX = 16
#: Disc extent (the larger of its mask's height and width) over the image's short side.
MIN_DISC_FRACTION = 0.05
MAX_DISC_FRACTION = 0.6
#: A box edge within this many pixels of the image border touches it.
EDGE_MARGIN_PX = 1.0
#: Side of the area-averaged thumbnails the image measures are taken on, and the long side
#: the image is first subsampled to.
BRIGHTNESS_GRID = 64
CONTRAST_GRID = 16
SUBSAMPLE_PX = 256


@dataclass(frozen=True)
class ImageQuality:
    """What :func:`grade` needs to know about the image itself (:func:`measure_image`).

    Attributes:
        height, width: original size in pixels.
        brightness: 99th percentile of the brightest channel (0..255) of a 64 x 64
            area-averaged thumbnail (the red channel of a fundus photograph).
        contrast: standard deviation of a 16 x 16 area-averaged thumbnail, the largest of the
            three channels: coarse structure (a fundus field on its dark surround, the disc);
            0 for a uniform image, a few units for pixel noise, which averages out.
        red_fraction: share of the field (thumbnail pixels whose brightest channel reaches
            :data:`FIELD_LEVEL` of ``brightness``) where red is at least green and blue: about 1
            for a fundus photograph (and for any greyscale image), low for sky, grass, ...
    """

    height: int
    width: int
    brightness: float
    contrast: float
    red_fraction: float = 1.0


def measure_image(image: np.ndarray) -> ImageQuality:
    """Size, brightness, coarse contrast and colour of an RGB uint8 image [H,W,3].

    Taken on every k-th pixel (long side about :data:`SUBSAMPLE_PX`) before the area averaging:
    about 1 ms for a 2896 x 1944 photograph instead of 20-40 ms for averaging every pixel.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"expected an RGB image [H,W,3], got shape {img.shape}")
    h, w = int(img.shape[0]), int(img.shape[1])
    k = max(1, max(h, w) // SUBSAMPLE_PX)
    small = np.ascontiguousarray(img[::k, ::k])
    thumb = cv2.resize(small, (BRIGHTNESS_GRID, BRIGHTNESS_GRID), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(thumb, (CONTRAST_GRID, CONTRAST_GRID), interpolation=cv2.INTER_AREA).astype(np.float32)
    peak = thumb.max(axis=2)
    brightness = float(np.percentile(peak, 99))
    contrast = float(max(coarse[..., c].std() for c in range(3)))
    field = peak >= FIELD_LEVEL * brightness
    red = (thumb[..., 0] >= thumb[..., 1]) & (thumb[..., 0] >= thumb[..., 2])
    red_fraction = float(red[field].mean()) if field.any() else 1.0
    return ImageQuality(h, w, brightness, contrast, red_fraction)


@dataclass(frozen=True)
class Grade:
    """The verdict on one result.

    Attributes:
        gradable: a CDR may be reported.
        reason: one of :data:`REASONS` when not gradable, ``""`` when gradable.
        message: what a person reads ("" when gradable).
    """

    gradable: bool
    reason: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"gradable": self.gradable, "reason": self.reason, "message": self.message}


GRADABLE = Grade(True)


def _fail(reason: str, message: str) -> Grade:
    return Grade(False, reason, message)


def grade_image(q: ImageQuality) -> Grade:
    """The image-level checks alone (size, brightness, contrast, colour)."""
    side = min(q.height, q.width)
    if side < MIN_SIDE_PX:
        return _fail(IMAGE_TOO_SMALL, f"image is {q.width} x {q.height} px; grading needs at least "
                                      f"{MIN_SIDE_PX} px on the short side")
    if q.brightness < MIN_BRIGHTNESS:
        return _fail(IMAGE_TOO_DARK, f"image too dark to be a fundus photograph (brightest 1 % at "
                                     f"{q.brightness:.0f}/255, needs {MIN_BRIGHTNESS:.0f})")
    if q.contrast < MIN_CONTRAST:
        return _fail(IMAGE_TOO_FLAT, f"image too flat to be a fundus photograph (coarse contrast "
                                     f"{q.contrast:.1f}, needs {MIN_CONTRAST:.0f})")
    if q.red_fraction < MIN_RED_FRACTION:
        return _fail(NOT_FUNDUS_COLOUR, f"colours unlike a fundus photograph (red leads in {q.red_fraction:.0%} of "
                                        f"the field, needs {MIN_RED_FRACTION:.0%})")
    return GRADABLE


def _touches_edge(seg: Segmentation, h: int, w: int) -> bool:
    x0, y0, x1, y1 = (float(v) for v in np.asarray(seg.box, dtype=np.float64).reshape(4))
    m = EDGE_MARGIN_PX
    if x0 <= m or y0 <= m or x1 >= w - m or y1 >= h - m:
        return True
    d = seg.disc
    return bool(d[0].any() or d[-1].any() or d[:, 0].any() or d[:, -1].any())


def _disc_extent(disc: np.ndarray) -> int:
    """Larger of the disc mask's row and column extents (pixels)."""
    rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def grade_detection(seg: Segmentation, min_disc_score: float) -> Grade:
    """The checks on the detected disc and cup (``seg`` at the original image size)."""
    if not seg.found:
        return _fail(NO_DISC, "no optic disc found")
    if seg.score < min_disc_score:
        return _fail(LOW_DISC_SCORE, f"disc score {seg.score:.3f} is below the model's minimum {min_disc_score:.3f}")
    h, w = seg.disc.shape
    if _touches_edge(seg, h, w):
        return _fail(DISC_AT_EDGE, "the disc touches the image border (cut off)")
    disc, cup = seg.cropped()  # the masks are empty outside the window: same answers, fewer pixels
    extent, side = _disc_extent(disc), min(h, w)
    if extent < MIN_DISC_PX or extent < MIN_DISC_FRACTION * side:
        return _fail(DISC_TOO_SMALL, f"disc spans {extent} px ({extent / side:.1%} of the short side); needs "
                                     f"{MIN_DISC_PX} px and {MIN_DISC_FRACTION:.0%}")
    if extent > MAX_DISC_FRACTION * side:
        return _fail(DISC_TOO_LARGE, f"disc spans {extent / side:.0%} of the image's short side (at most "
                                     f"{MAX_DISC_FRACTION:.0%} is plausible)")
    if not cup.any():
        return _fail(NO_CUP, "no cup found inside the disc")
    return GRADABLE


def grade(quality: ImageQuality, seg: Segmentation, min_disc_score: float) -> Grade:
    """The verdict on one image: image checks first, then the detection (see the module table)."""
    verdict = grade_image(quality)
    return verdict if not verdict.gradable else grade_detection(seg, min_disc_score)


def check_min_score(value: float, what: str = "min_disc_score") -> float:
    """``value`` if it is a probability in [0, 1), else ValueError naming ``what``."""
    v = float(value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return v
