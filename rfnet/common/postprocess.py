"""Model outputs -> clean disc / cup masks at the original image size (torch-free).

Steps (what glaucoma-screening users expect, field notes section 4):
1. take the top-scoring detection (outputs are sorted; padded slots have score 0);
2. map its box from network-input pixels to original pixels through the :class:`Letterbox`;
3. paste each S x S probability map into the original image at that box, bilinear, as
   Mask R-CNN does (:func:`paste_mask`);
4. threshold (``prob > threshold``), keep the largest connected component, fill holes;
5. ``cup = cup AND disc`` (the cup lies inside the disc by definition); when no disc pixel
   reaches the threshold in the cup map, the cup is taken at half the map's maximum inside
   the disc (:data:`CUP_FALLBACK_RATIO`) instead of reporting no cup (see below);
6. optionally replace each mask by its least-squares ellipse (``cv2.fitEllipse``).

Steps 3-5 run in a window: the pasted box plus :data:`WINDOW_MARGIN` background pixels
(outside the box every probability is 0, so nothing can be foreground there). The window's
masks are then placed into full-size arrays, and :attr:`Segmentation.window` records it so
CDRs and overlays can work on it too. The result is identical to post-processing the full
image (largest component: all foreground lies inside; hole filling: background on a window
edge touches the outside of the box, which in the full image is background joined to the
image border), at a fraction of the cost on large fundus photographs. With ``ellipse`` the
window is the whole image, as fitted ellipses may reach beyond the box.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.common.preprocess import Letterbox


#: Relative cup threshold used when the fixed threshold leaves the cup empty. A physiological
#: cup exists in practically every optic disc, and "no cup" reads as CDR 0, the healthiest
#: possible answer: a silent false negative in glaucoma screening. Seen on Drishti-GS
#: (drishtiGS_075, a low-contrast disc detected with score 0.56): cup map maximum 0.485,
#: so nothing passed 0.5 and the CDR came out 0 against the experts' 0.70.
CUP_FALLBACK_RATIO = 0.5
#: Below this maximum the cup map carries no usable signal; the cup stays empty.
CUP_FALLBACK_MIN_PROB = 0.1
#: Background pixels kept around the pasted box in the window, so a mask touching the box edge
#: is still surrounded by background there (contour tracing of the overlays).
WINDOW_MARGIN = 1


@dataclass
class Segmentation:
    """Result for one image, at the original resolution.

    Attributes:
        disc: bool [H, W], optic disc (cup included).
        cup: bool [H, W], optic cup, a subset of ``disc``.
        box: float32 [4], x0, y0, x1, y1 of the detection in original pixels (clipped to
            the image; zeros when nothing was detected).
        score: detection score of the disc (0 when nothing was detected).
        disc_prob, cup_prob: float32 [H, W] pasted probabilities, when requested.
        cup_threshold: the cup threshold used: ``threshold``, or lower when the cup fell
            back to the relative threshold (a low-confidence cup, worth a second look).
    """

    disc: np.ndarray
    cup: np.ndarray
    box: np.ndarray
    score: float
    disc_prob: np.ndarray | None = None
    cup_prob: np.ndarray | None = None
    cup_threshold: float = 0.5
    cup_fallback: bool = False  # the cup came from the relative threshold (low confidence)
    # (row0, row1, col0, col1): disc and cup are empty outside these rows / columns (None: unknown)
    window: tuple[int, int, int, int] | None = None
    # how unsure the mask is (:func:`mask_uncertainty` of the top detection's disc and cup; NaN: none)
    disc_uncertainty: float = math.nan
    cup_uncertainty: float = math.nan

    @property
    def found(self) -> bool:
        """Whether a disc was detected and segmented."""
        y0, y1, x0, x1 = self.bounds()
        return bool(self.score > 0 and self.disc[y0:y1, x0:x1].any())

    def bounds(self) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)`` outside which both masks are empty (the whole image when
        :attr:`window` is unknown)."""
        return self.window if self.window is not None else (0, self.disc.shape[0], 0, self.disc.shape[1])

    def cropped(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of ``(disc, cup)`` inside :meth:`bounds`: every CDR and area of the full masks,
        computed on far fewer pixels."""
        y0, y1, x0, x1 = self.bounds()
        return self.disc[y0:y1, x0:x1], self.cup[y0:y1, x0:x1]


#: Probabilities between these count as unsure in :func:`mask_uncertainty`.
UNSURE_BAND = (0.25, 0.75)


def mask_uncertainty(prob: np.ndarray) -> float:
    """Pixels of an S x S probability map inside :data:`UNSURE_BAND` per pixel above one half: a
    sharp mask has only its outline there (a few per cent), a mask the model is unsure of a wide
    band; NaN for an empty mask."""
    p = np.asarray(prob, dtype=np.float32)
    inside = int((p > 0.5).sum())
    if inside == 0:
        return math.nan
    lo, hi = UNSURE_BAND
    return float(((p > lo) & (p < hi)).sum()) / inside


def paste_mask(prob: np.ndarray, box_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Paste an S x S probability map into an ``height x width`` image at ``box_xyxy``.

    The map is taken to cover the box exactly (continuous coordinates, pixel centres at
    +0.5): image pixel (x, y) with its centre inside the box gets the bilinear sample at
    ``u = (x + 0.5 - x0) / (x1 - x0) * S - 0.5`` (likewise v), edges clamped. This is the
    alignment-correct form of Mask R-CNN's "resize the mask to the box and paste it".
    Pixels outside the box are 0; a degenerate box gives all zeros.

    Args:
        prob: float [S, S] (any square or rectangular map, values in 0..1).
        box_xyxy: [4] box in original-image pixels (may extend beyond the image).
        height, width: original image size.
    Returns:
        float32 [height, width].
    """
    p = _prob_map(prob)
    out = np.zeros((height, width), dtype=np.float32)
    region = paste_region(box_xyxy, height, width)
    if region is not None:
        r0, r1, c0, c1 = region
        out[r0:r1, c0:c1] = _sample_box(p, box_xyxy, region)
    return out


def _prob_map(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob, dtype=np.float32)
    if p.ndim != 2:
        raise ValueError(f"prob must be 2-D [S,S], got shape {p.shape}")
    return p


def paste_region(box_xyxy: np.ndarray, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(row0, row1, col0, col1)``: the pixels whose centres fall inside ``[x0, x1) x [y0, y1)``,
    clipped to the image; None for a degenerate, non-finite or off-image box."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(4))
    if not (x1 > x0 and y1 > y0) or not np.isfinite([x0, y0, x1, y1]).all():
        return None
    c0 = max(0, int(np.ceil(x0 - 0.5)))
    c1 = min(width, int(np.ceil(x1 - 0.5)))
    r0 = max(0, int(np.ceil(y0 - 0.5)))
    r1 = min(height, int(np.ceil(y1 - 0.5)))
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, r1, c0, c1


def _sample_box(p: np.ndarray, box_xyxy: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """The bilinear samples of :func:`paste_mask` over ``region`` only: float32 [row1-row0, col1-col0]."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(4))
    r0, r1, c0, c1 = region
    sh, sw = p.shape
    u = ((np.arange(c0, c1, dtype=np.float64) + 0.5 - x0) / (x1 - x0) * sw - 0.5).astype(np.float32)
    v = ((np.arange(r0, r1, dtype=np.float64) + 0.5 - y0) / (y1 - y0) * sh - 0.5).astype(np.float32)
    return sample_bilinear(p, u, v)


def _neighbours(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, float32 weight of the upper) of each sample over ``n`` grid
    points, indices clamped to the edge (replicated border)."""
    c = np.asarray(coords, dtype=np.float64)
    lo = np.floor(c)
    frac = (c - lo).astype(np.float32)
    return np.clip(lo, 0, n - 1).astype(np.intp), np.clip(lo + 1, 0, n - 1).astype(np.intp), frac


def sample_bilinear(p: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``p`` [H,W] at columns ``u`` [n] and rows ``v`` [m] (every pair,
    edges replicated) -> float32 [m,n].

    Separable: columns first, then rows, each from its two neighbours with exact weights, so the
    result is the same on every OpenCV version. ``cv2.remap`` is not: OpenCV 4.x rounds the
    weights to 1/32 (between a 0 and a 1, the sample at 0.45 comes out 0.4375 on OpenCV 4.11,
    0.45 on 5.0), and numpy 1.x, which the serving extra needs, only gets OpenCV 4.x, so the
    same model gave different mask borders in the two environments.
    """
    src = np.asarray(p, dtype=np.float32)
    y0, y1, fy = _neighbours(v, src.shape[0])
    x0, x1, fx = _neighbours(u, src.shape[1])
    cols = src[:, x0] * (1.0 - fx) + src[:, x1] * fx  # [H, n]: small, H is the map's side
    out = cols[y0]  # whole-row gathers: contiguous copies
    out *= (1.0 - fy)[:, None]
    out += cols[y1] * fy[:, None]
    return out


def paste_window(prob: np.ndarray, box_xyxy: np.ndarray, window: tuple[int, int, int, int],
                 height: int, width: int) -> np.ndarray:
    """:func:`paste_mask` restricted to ``window`` ``(row0, row1, col0, col1)``: the same values as
    ``paste_mask(prob, box_xyxy, height, width)[row0:row1, col0:col1]``, float32."""
    wy0, wy1, wx0, wx1 = window
    out = np.zeros((wy1 - wy0, wx1 - wx0), dtype=np.float32)
    region = paste_region(box_xyxy, height, width)
    if region is not None:
        r0, r1, c0, c1 = region
        if r0 < wy0 or r1 > wy1 or c0 < wx0 or c1 > wx1:
            raise ValueError(f"window {window} does not contain the pasted box {region}")
        out[r0 - wy0 : r1 - wy0, c0 - wx0 : c1 - wx0] = _sample_box(_prob_map(prob), box_xyxy, region)
    return out


def mask_window(box_xyxy: np.ndarray, height: int, width: int, margin: int = WINDOW_MARGIN) -> tuple[int, int, int, int]:
    """The window post-processing works in: the pasted box grown by ``margin`` pixels, clipped to
    the image (``(0, 0, 0, 0)`` when nothing is pasted)."""
    region = paste_region(box_xyxy, height, width)
    if region is None:
        return 0, 0, 0, 0
    r0, r1, c0, c1 = region
    return max(0, r0 - margin), min(height, r1 + margin), max(0, c0 - margin), min(width, c1 + margin)


def _to_full(part: np.ndarray, window: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """A window's array placed into zeros of the full image size."""
    y0, y1, x0, x1 = window
    out = np.zeros((height, width), dtype=part.dtype)
    out[y0:y1, x0:x1] = part
    return out


def scale_box(box: np.ndarray, factor: float) -> np.ndarray:
    """Scale a [4] xyxy box by ``factor`` about its centre (float64 out)."""
    b = np.asarray(box, dtype=np.float64).reshape(4)
    cx, cy = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
    hw, hh = (b[2] - b[0]) * factor / 2.0, (b[3] - b[1]) * factor / 2.0
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [4] xyxy boxes (0 when both are empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def largest_component(binary: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component of a bool [H, W] mask."""
    m = np.asarray(binary, dtype=bool)
    if not m.any():
        return m.copy()
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 2:
        return m.copy()
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.asarray(labels == best)


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """Fill background regions not connected (4-connectivity) to the image border."""
    m = np.asarray(binary, dtype=bool)
    if not m.any():
        return m.copy()
    padded = np.pad(~m, 1, constant_values=True).astype(np.uint8)
    # 4-connected background is the topological dual of the 8-connected foreground
    _, labels = cv2.connectedComponents(padded, connectivity=4)
    outside = labels == labels[0, 0]
    return np.asarray(~outside[1:-1, 1:-1])


def clean_mask(binary: np.ndarray) -> np.ndarray:
    """Largest connected component, then hole filling: bool [H, W] -> bool [H, W]."""
    return fill_holes(largest_component(binary))


def fit_ellipse_mask(mask: np.ndarray) -> np.ndarray:
    """Replace a mask by the filled ellipse ``cv2.fitEllipse`` fits to its outer contour.

    Pixels whose centres lie inside the fitted ellipse are set. Masks whose contour has
    fewer than 5 points (cv2.fitEllipse's minimum) are returned unchanged.
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m.copy()
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    if len(contour) < 5:
        return m.copy()
    (cx, cy), (w, h), angle = cv2.fitEllipse(contour)
    a, b = w / 2.0, h / 2.0
    if a <= 0 or b <= 0:
        return m.copy()
    t = np.deg2rad(angle)
    # only the window around the ellipse needs evaluating
    r = max(a, b)
    r0, r1 = max(0, int(np.floor(cy - r))), min(m.shape[0], int(np.ceil(cy + r)) + 1)
    c0, c1 = max(0, int(np.floor(cx - r))), min(m.shape[1], int(np.ceil(cx + r)) + 1)
    out = np.zeros_like(m)
    if r1 <= r0 or c1 <= c0:
        return out
    ys, xs = np.mgrid[r0:r1, c0:c1]
    dx, dy = xs - cx, ys - cy
    # contour points are pixel centres, so test pixel centres (integer coordinates)
    xr = dx * np.cos(t) + dy * np.sin(t)
    yr = -dx * np.sin(t) + dy * np.cos(t)
    out[r0:r1, c0:c1] = (xr / a) ** 2 + (yr / b) ** 2 <= 1.0
    return out


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    lb: Letterbox,
    threshold: float = 0.5,
    ellipse: bool = False,
    *,
    keep_prob: bool = False,
    mask_box_scale: float = 1.0,
) -> Segmentation:
    """Turn one image's model outputs into a :class:`Segmentation` at the original size.

    Args:
        boxes: float [K, 4] xyxy in network-input pixels, sorted by score.
        scores: float [K]; padded slots are 0.
        masks: float [K, 2, S, S] probabilities (channel 0 disc, 1 cup).
        lb: the :class:`Letterbox` of this image.
        threshold: a pixel is foreground when ``prob > threshold``.
        ellipse: replace disc and cup by fitted ellipses (cup clipped to the disc again).
        keep_prob: also return the pasted probability maps.
        mask_box_scale: the masks cover each box scaled by this factor about its centre
            (the model's ``mask_head.box_scale``, export metadata ``rfnet.mask_box_scale``).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    masks = np.asarray(masks, dtype=np.float32)
    k = scores.shape[0]
    if boxes.shape != (k, 4) or masks.ndim != 4 or masks.shape[:2] != (k, 2):
        raise ValueError(
            f"inconsistent outputs: boxes {boxes.shape}, scores {scores.shape}, masks {masks.shape} "
            "(expected [K,4], [K], [K,2,S,S])"
        )
    h, w = lb.orig_h, lb.orig_w
    empty = np.zeros((h, w), dtype=bool)
    if k == 0 or float(scores.max()) <= 0.0:
        zeros = np.zeros((h, w), np.float32) if keep_prob else None
        return Segmentation(empty, empty.copy(), np.zeros(4, np.float32), 0.0, zeros,
                            None if zeros is None else zeros.copy(), window=(0, 0, 0, 0))
    i = int(np.argmax(scores))
    box_orig = scale_box(lb.boxes_to_original(boxes[i : i + 1].astype(np.float64))[0], mask_box_scale)
    # ellipses may reach beyond the box: the whole image then
    win = (0, h, 0, w) if ellipse else mask_window(box_orig, h, w)
    disc_prob = paste_window(masks[i, 0], box_orig, win, h, w)
    cup_prob = paste_window(masks[i, 1], box_orig, win, h, w)
    disc, cup, cup_threshold, fallback = _clean_pair(disc_prob, cup_prob, threshold)
    if ellipse:
        disc = fit_ellipse_mask(disc)
        cup = clean_mask(fit_ellipse_mask(cup) & disc)
    clipped = lb.boxes_to_original(boxes[i : i + 1].astype(np.float64), clip=True)[0].astype(np.float32)
    return Segmentation(
        disc=_to_full(disc, win, h, w),
        cup=_to_full(cup, win, h, w),
        box=clipped,
        score=float(scores[i]),
        disc_prob=_to_full(disc_prob, win, h, w) if keep_prob else None,
        cup_prob=_to_full(cup_prob, win, h, w) if keep_prob else None,
        cup_threshold=cup_threshold,
        cup_fallback=fallback,
        window=win,
        disc_uncertainty=mask_uncertainty(masks[i, 0]),
        cup_uncertainty=mask_uncertainty(masks[i, 1]),
    )


def _clean_pair(disc_prob: np.ndarray, cup_prob: np.ndarray, threshold: float
                ) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Steps 4-5 of the module docstring: ``(disc, cup, cup threshold used, cup fell back)``."""
    disc = clean_mask(disc_prob > threshold)
    cup = _cup_within(cup_prob > threshold, disc)
    cup_threshold, fallback = threshold, False
    if disc.any() and not cup.any():
        peak = float(cup_prob[disc].max())
        if peak >= CUP_FALLBACK_MIN_PROB:
            cup_threshold, fallback = CUP_FALLBACK_RATIO * peak, True
            cup = _cup_within(cup_prob > cup_threshold, disc)
    return disc, cup, cup_threshold, fallback


def _cup_within(binary: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """``clean_mask(clean_mask(binary) & disc)``: the cleaned cup clipped to the disc and cleaned
    again. A cleaned mask is one component without holes, which cleaning leaves as it is, so when
    the cup lies inside the disc (nearly always) the second cleaning is skipped: same result."""
    cup = clean_mask(binary)
    if not (cup & ~disc).any():
        return cup
    return clean_mask(cup & disc)
