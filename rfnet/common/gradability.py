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
``no_colour``               the field's mean saturation is below :data:`MIN_SATURATION`: a
                            grey-scale or red-free photograph, which no model here was trained on
``no_disc``                 nothing detected, or an empty disc mask
``low_disc_score``          the disc scores below the model's ``rfnet.min_disc_score``
``disc_at_edge``            the disc box or mask touches the image border (cut off)
``disc_too_small``          the disc spans fewer than :data:`MIN_DISC_PX` pixels or less than
                            :data:`MIN_DISC_FRACTION` of the image's short side
``disc_too_large``          the disc spans more than the model's ``max_disc_fraction``
                            (:data:`MAX_DISC_FRACTION` by default) of the short side
``disc_size_for_field``     the image shows the edge of the fundus field (dark corners: a whole
                            field, not a disc-centred crop) and the disc's extent over the field's
                            diameter is outside the model's ``[min, max]_disc_field_ratio``
``disc_not_bright``         the disc is not brighter than the ring around it by the model's
                            ``min_disc_contrast``: it does not sit on the bright optic nerve head
``mask_unsure``             the disc or cup mask has more of its area in the unsure band
                            (probabilities 0.25-0.75) than the model's ``max_disc_uncertainty`` /
                            ``max_cup_uncertainty``
``no_cup``                  no cup inside the disc (even at the relative fallback threshold)
==========================  ====================================================================

The limits marked "the model's" are :class:`GradingLimits`, calibrated on cross-validation folds
(``python -m rfnet.grading_calibration --limits``) and exported as ``rfnet.grading_limits``; a
model without them gets the defaults, which switch the field and brightness checks off.

The image-level measures (:func:`measure_image`) and the thresholds were measured on the 50
Drishti-GS1 training images and on generated junk images; the figures and margins are in
docs/design.md ("Gradability"). The disc-score threshold is a property of the trained model
(``rfnet.config.GradingConfig.min_disc_score``, exported as ``rfnet.min_disc_score``;
``python -m rfnet.grading_calibration`` derives it from cross-validation).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

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
NO_COLOUR = "no_colour"
DISC_SIZE_FOR_FIELD = "disc_size_for_field"
DISC_NOT_BRIGHT = "disc_not_bright"
MASK_UNSURE = "mask_unsure"
NO_CUP = "no_cup"
#: Every reason code, in the order :func:`grade` checks them.
REASONS: tuple[str, ...] = (IMAGE_TOO_SMALL, IMAGE_TOO_DARK, IMAGE_TOO_FLAT, NOT_FUNDUS_COLOUR, NO_COLOUR, NO_DISC,
                            LOW_DISC_SCORE, DISC_AT_EDGE, DISC_TOO_SMALL, DISC_TOO_LARGE, DISC_SIZE_FOR_FIELD,
                            DISC_NOT_BRIGHT, MASK_UNSURE, NO_CUP)

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
#: Mean HSV saturation (0..255) of the field's thumbnail pixels below this: no colour (a grey-scale
#: or red-free image has 0; colour photographs of three cameras measure 80 or more, docs/design.md).
MIN_SATURATION = 25.0
#: A corner of the 64 x 64 thumbnail (a CORNER_CELLS square) counts as outside the field when less
#: than half of it is field; FIELD_EDGE_CORNERS such corners show the field's edge. All four: a whole
#: round field shows dark in every corner, while a disc-centred crop can show a dark corner or two
#: where it touches the field's edge or the vignetting, and its disc must not be judged against that
#: "field" (docs/design.md, "Gradability").
CORNER_CELLS = 6
FIELD_EDGE_CORNERS = 4
#: A disc narrower or shorter than this (pixels) quantises the CDR in steps above 1/16.
MIN_DISC_PX = 16
#: Disc extent (the larger of its mask's height and width) over the image's short side.
MIN_DISC_FRACTION = 0.05
MAX_DISC_FRACTION = 0.6
#: A box edge within this many pixels of the image border touches it.
EDGE_MARGIN_PX = 1.0
#: The disc's ring, for its brightness contrast: the disc mask dilated by this fraction of its extent.
RING_FRACTION = 0.5
#: Side of the area-averaged thumbnails the image measures are taken on, and the long side
#: the image is first subsampled to.
BRIGHTNESS_GRID = 64
CONTRAST_GRID = 16
SUBSAMPLE_PX = 256


@dataclass(frozen=True)
class GradingLimits:
    """The model-specific limits of the detection checks (``rfnet.grading_limits``), each on one
    measure of :func:`grade_detection` (:data:`LIMIT_MEASURES`).

    The defaults keep what models exported before the key get: discs up to
    :data:`MAX_DISC_FRACTION` of the short side, no field-ratio or brightness check.
    """

    max_disc_fraction: float = MAX_DISC_FRACTION
    min_disc_field_ratio: float = 0.0
    max_disc_field_ratio: float = math.inf
    min_disc_contrast: float = 0.0
    max_disc_uncertainty: float = math.inf
    max_cup_uncertainty: float = math.inf

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "GradingLimits":
        """From ``rfnet.grading_limits`` (None: the defaults); ValueError for an unknown key or a bad value."""
        if not values:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown grading limits {unknown}; known: {sorted(known)}")
        out = {k: float(v) for k, v in values.items()}
        if any(math.isnan(v) or v < 0 for v in out.values()):
            raise ValueError(f"grading limits must be numbers >= 0, got {values}")
        return cls(**out)

    def to_dict(self) -> dict[str, float]:
        """JSON-safe: an infinite upper limit is left out (it is the default)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if math.isfinite(getattr(self, f.name))}

    def breached(self, measures: Mapping[str, float]) -> str | None:
        """The first limit (in :data:`LIMIT_MEASURES` order) that ``measures`` breaches, or None;
        a missing or NaN measure (not measured) breaches nothing."""
        for name, measure, side in LIMIT_MEASURES:
            v, lim = measures.get(measure, math.nan), getattr(self, name)
            if not math.isnan(v) and (v < lim if side == "low" else v > lim):
                return name
        return None


#: (limit, measure, side), in the order :func:`grade_detection` checks them: a "low" limit refuses
#: values below it, a "high" one values above.
LIMIT_MEASURES: tuple[tuple[str, str, str], ...] = (
    ("max_disc_fraction", "disc_fraction", "high"),
    ("min_disc_field_ratio", "disc_field_ratio", "low"),
    ("max_disc_field_ratio", "disc_field_ratio", "high"),
    ("min_disc_contrast", "disc_contrast", "low"),
    ("max_disc_uncertainty", "disc_uncertainty", "high"),
    ("max_cup_uncertainty", "cup_uncertainty", "high"),
)


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
        saturation: mean HSV saturation (0..255) of the field's thumbnail pixels (0: grey-scale).
        field_edge: the field's edge shows (:data:`FIELD_EDGE_CORNERS` dark corners): a whole
            fundus field, not a crop inside it.
        field_px: the field's diameter in original pixels (its widest row or column on the
            thumbnail); the image's long side when the edge does not show.
        grey: uint8 [h, w] grey-level copy of every ``step``-th pixel (long side about
            :data:`SUBSAMPLE_PX`) for the disc's brightness contrast; None: not measured.
        step: the subsampling step of ``grey``.
    """

    height: int
    width: int
    brightness: float
    contrast: float
    red_fraction: float = 1.0
    saturation: float = 255.0
    field_edge: bool = False
    field_px: float = 0.0
    grey: np.ndarray | None = field(default=None, repr=False, compare=False)
    step: int = 1


def measure_image(image: np.ndarray, original: tuple[int, int] | None = None) -> ImageQuality:
    """Size, brightness, coarse contrast, colour and fundus field of an RGB uint8 image [H,W,3].

    Taken on every k-th pixel (long side about :data:`SUBSAMPLE_PX`) before the area averaging:
    about 1 ms for a 2896 x 1944 photograph instead of 20-40 ms for averaging every pixel.
    ``original``: (height, width) of the picture when ``image`` is a copy decoded at 1/2, 1/4 or
    1/8 of it (:class:`rfnet.common.imageio.Photo`); sizes and the grey copy's step are then in
    the original's pixels.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"expected an RGB image [H,W,3], got shape {img.shape}")
    h, w = (int(img.shape[0]), int(img.shape[1])) if original is None else (int(original[0]), int(original[1]))
    reduction = max(1, round(max(h, w) / max(img.shape[:2])))
    k = max(1, max(img.shape[:2]) // SUBSAMPLE_PX)
    small = np.ascontiguousarray(img[::k, ::k])
    thumb = cv2.resize(small, (BRIGHTNESS_GRID, BRIGHTNESS_GRID), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(thumb, (CONTRAST_GRID, CONTRAST_GRID), interpolation=cv2.INTER_AREA).astype(np.float32)
    peak = thumb.max(axis=2)
    brightness = float(np.percentile(peak, 99))
    contrast = float(max(coarse[..., c].std() for c in range(3)))
    fld = peak >= FIELD_LEVEL * brightness
    red = (thumb[..., 0] >= thumb[..., 1]) & (thumb[..., 0] >= thumb[..., 2])
    red_fraction = float(red[fld].mean()) if fld.any() else 1.0
    sat = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[..., 1]
    saturation = float(sat[fld].mean()) if fld.any() else 0.0
    edge, field_px = _field(fld, h, w)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return ImageQuality(h, w, brightness, contrast, red_fraction, saturation, edge, field_px, grey, k * reduction)


def _field(fld: np.ndarray, h: int, w: int) -> tuple[bool, float]:
    """(edge visible, diameter in original pixels) of the field mask on the square thumbnail."""
    n, c = fld.shape[0], CORNER_CELLS
    corners = (fld[:c, :c], fld[:c, -c:], fld[-c:, :c], fld[-c:, -c:])
    edge = sum(1 for q in corners if q.mean() < 0.5) >= FIELD_EDGE_CORNERS
    if not edge:
        return False, float(max(h, w))
    across = float(fld.sum(axis=1).max()) * w / n  # widest row, in original pixels
    down = float(fld.sum(axis=0).max()) * h / n
    return True, max(across, down)


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
    #: what the detection checks measured (:data:`MEASURES`; absent where a check did not run)
    measures: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"gradable": self.gradable, "reason": self.reason, "message": self.message}


GRADABLE = Grade(True)


#: The measures a verdict carries (evaluations record them; the limits are calibrated on them):
#: disc extent over the short side, over the field's diameter, and the disc's brightness over its ring's.
#: The mask's own uncertainty (``Segmentation.disc_uncertainty`` / ``cup_uncertainty``) too.
MEASURES: tuple[str, ...] = ("disc_fraction", "disc_field_ratio", "disc_contrast", "disc_uncertainty",
                             "cup_uncertainty")


def _fail(reason: str, message: str, measures: dict[str, float] | None = None) -> Grade:
    return Grade(False, reason, message, measures or {})


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
    if q.saturation < MIN_SATURATION:
        return _fail(NO_COLOUR, f"grey-scale or red-free image (colour saturation {q.saturation:.0f}/255, needs "
                                f"{MIN_SATURATION:.0f}): the model reads colour photographs only")
    return GRADABLE


def _touches_edge(seg: Segmentation, h: int, w: int) -> bool:
    x0, y0, x1, y1 = (float(v) for v in np.asarray(seg.box, dtype=np.float64).reshape(4))
    m = EDGE_MARGIN_PX
    if x0 <= m or y0 <= m or x1 >= w - m or y1 >= h - m:
        return True
    d = seg.disc
    return bool(d[0].any() or d[-1].any() or d[:, 0].any() or d[:, -1].any())


def _disc_bounds(disc: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), inclusive, of a non-empty disc mask."""
    rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _disc_extent(disc: np.ndarray) -> int:
    """Larger of the disc mask's row and column extents (pixels)."""
    r0, r1, c0, c1 = _disc_bounds(disc)
    return max(r1 - r0 + 1, c1 - c0 + 1)


def disc_contrast(disc: np.ndarray, q: ImageQuality) -> float:
    """Mean grey level inside ``disc`` (bool [H, W] at the original size) over that of the ring
    around it (the disc dilated by :data:`RING_FRACTION` of its extent), on ``q.grey``; NaN when
    the image was not measured or the ring has too few pixels inside the image."""
    if q.grey is None:
        return math.nan
    k = q.step
    small = np.ascontiguousarray(disc[::k, ::k][: q.grey.shape[0], : q.grey.shape[1]])
    if not small.any():
        return math.nan
    top, bottom, left, right = _disc_bounds(small)
    r = max(1, int(round(RING_FRACTION * max(bottom - top + 1, right - left + 1))))
    # the ring lies within r of the disc: dilate that window only (the same pixels, a few times faster)
    r0, r1 = max(0, top - r), min(small.shape[0], bottom + r + 1)
    c0, c1 = max(0, left - r), min(small.shape[1], right + r + 1)
    inside = small[r0:r1, c0:c1]
    grown = cv2.dilate(inside.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    ring = grown.astype(bool) & ~inside
    if ring.sum() < max(8, small.sum() // 4):
        return math.nan
    inner = float(q.grey[small].mean())
    outer = float(q.grey[r0:r1, c0:c1][ring].mean())
    return inner / max(outer, 1.0)


def _limit_failure(name: str, m: dict[str, float], lim: GradingLimits) -> tuple[str, str]:
    """(reason, message) of the breached limit ``name`` (:meth:`GradingLimits.breached`)."""
    if name == "max_disc_fraction":
        return DISC_TOO_LARGE, (f"disc spans {m['disc_fraction']:.0%} of the image's short side (at most "
                                f"{lim.max_disc_fraction:.0%} is plausible)")
    if name in ("min_disc_field_ratio", "max_disc_field_ratio"):
        return DISC_SIZE_FOR_FIELD, (f"disc spans {m['disc_field_ratio']:.0%} of the fundus field's diameter; this "
                                     f"model's discs span {lim.min_disc_field_ratio:.0%}-{lim.max_disc_field_ratio:.0%}")
    if name == "min_disc_contrast":
        return DISC_NOT_BRIGHT, (f"the disc is not brighter than its surroundings (ratio {m['disc_contrast']:.2f}, "
                                 f"needs {lim.min_disc_contrast:.2f}): not on the optic nerve head")
    part = "disc" if name == "max_disc_uncertainty" else "cup"
    return MASK_UNSURE, (f"the model is unsure of the {part}'s outline ({m[part + '_uncertainty']:.2f} of its area in "
                         f"the unsure band, at most {getattr(lim, name):.2f})")


def grade_detection(seg: Segmentation, min_disc_score: float, quality: ImageQuality | None = None,
                    limits: GradingLimits | None = None) -> Grade:
    """The checks on the detected disc and cup (``seg`` at the original image size); the field
    and brightness checks need ``quality`` (:func:`measure_image` of the same image)."""
    lim = limits or GradingLimits()
    if not seg.found:
        return _fail(NO_DISC, "no optic disc found")
    if seg.score < min_disc_score:
        return _fail(LOW_DISC_SCORE, f"disc score {seg.score:.3f} is below the model's minimum {min_disc_score:.3f}")
    h, w = seg.disc.shape
    if _touches_edge(seg, h, w):
        return _fail(DISC_AT_EDGE, "the disc touches the image border (cut off)")
    disc, cup = seg.cropped()  # the masks are empty outside the window: same answers, fewer pixels
    extent, side = _disc_extent(disc), min(h, w)
    m: dict[str, float] = {"disc_fraction": extent / side, "disc_uncertainty": seg.disc_uncertainty,
                           "cup_uncertainty": seg.cup_uncertainty}
    if quality is not None:
        m["disc_field_ratio"] = extent / quality.field_px if quality.field_edge and quality.field_px > 0 else math.nan
        m["disc_contrast"] = disc_contrast(seg.disc, quality)
    if extent < MIN_DISC_PX or extent < MIN_DISC_FRACTION * side:
        return _fail(DISC_TOO_SMALL, f"disc spans {extent} px ({extent / side:.1%} of the short side); needs "
                                     f"{MIN_DISC_PX} px and {MIN_DISC_FRACTION:.0%}", m)
    breach = lim.breached(m)
    if breach is not None:
        return _fail(*_limit_failure(breach, m, lim), m)
    if not cup.any():
        return _fail(NO_CUP, "no cup found inside the disc", m)
    return Grade(True, measures=m)


def grade(quality: ImageQuality, seg: Segmentation, min_disc_score: float,
          limits: GradingLimits | None = None) -> Grade:
    """The verdict on one image: image checks first, then the detection (see the module table)."""
    verdict = grade_image(quality)
    return verdict if not verdict.gradable else grade_detection(seg, min_disc_score, quality, limits)


def check_min_score(value: float, what: str = "min_disc_score") -> float:
    """``value`` if it is a probability in [0, 1), else ValueError naming ``what``."""
    v = float(value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return v


def apply_grading_file(grading: Any, path: Path) -> None:
    """Set a :class:`rfnet.config.GradingConfig`'s ``min_disc_score``, ``limits`` and ``referral_vcdr``
    from a calibration JSON (what ``python -m rfnet.screening_calibration`` writes; keys it lacks stay
    as they are). ``UsageError`` naming the file and the bad value."""
    from rfnet.errors import UsageError

    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if "min_disc_score" in data:
            grading.min_disc_score = check_min_score(data["min_disc_score"])
        if "limits" in data:
            GradingLimits.from_mapping(data["limits"])
            grading.limits = {str(k): float(v) for k, v in (data["limits"] or {}).items()}
        if "referral_vcdr" in data:
            r = data["referral_vcdr"]
            grading.referral_vcdr = None if r is None else check_min_score(r, "referral_vcdr")
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a grading calibration file ({exc})") from None
