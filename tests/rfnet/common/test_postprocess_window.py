"""Post-processing in the detection box's window gives exactly what full-image post-processing gave.

The reference below is the full-image algorithm as it was before the window (paste both maps
into the whole image, threshold, clean, cup fallback, CDRs of the full masks), built from the
public full-image functions; the outputs are constructed from generated fundus masks with
noise that makes holes, islands and ragged edges, and boxes that leave the image.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from rfnet.common.metrics import cdr_report
from rfnet.common.postprocess import (
    CUP_FALLBACK_MIN_PROB,
    CUP_FALLBACK_RATIO,
    Segmentation,
    clean_mask,
    fit_ellipse_mask,
    mask_window,
    paste_mask,
    paste_window,
    postprocess,
    scale_box,
)
from rfnet.common.preprocess import Letterbox, letterbox_mask
from rfnet.data.synthetic import generate_sample


def _reference(boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray, lb: Letterbox, threshold: float,
               ellipse: bool, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Full-image post-processing: (disc, cup, disc_prob, cup_prob, fallback)."""
    h, w = lb.orig_h, lb.orig_w
    i = int(np.argmax(scores))
    box = scale_box(lb.boxes_to_original(boxes[i : i + 1].astype(np.float64))[0], scale)
    dp, cp = paste_mask(masks[i, 0], box, h, w), paste_mask(masks[i, 1], box, h, w)
    disc = clean_mask(dp > threshold)
    cup = clean_mask(clean_mask(cp > threshold) & disc)
    fallback = False
    if disc.any() and not cup.any() and float(cp[disc].max()) >= CUP_FALLBACK_MIN_PROB:
        fallback = True
        cup = clean_mask(clean_mask(cp > CUP_FALLBACK_RATIO * float(cp[disc].max())) & disc)
    if ellipse:
        disc = fit_ellipse_mask(disc)
        cup = clean_mask(fit_ellipse_mask(cup) & disc)
    return disc, cup, dp, cp, fallback


def _case(seed: int, h: int, w: int, shift: tuple[float, float] = (0.0, 0.0), noise: float = 0.35
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Letterbox]:
    """Model-like outputs (boxes [3,4], scores [3], masks [3,2,28,28]) of a generated eye resized to h x w."""
    rng = np.random.default_rng(seed)
    _, disc, cup = generate_sample(rng, 256)
    disc = cv2.resize(disc.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    cup = cv2.resize(cup.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    lb = Letterbox.compute(h, w, 512)
    d_in, c_in = letterbox_mask(disc, lb), letterbox_mask(cup, lb)
    ys, xs = np.nonzero(d_in)
    box = np.array([xs.min() - 6 + shift[0], ys.min() - 6 + shift[1], xs.max() + 7 + shift[0], ys.max() + 7 + shift[1]],
                   np.float32)
    x0, y0 = max(0, int(xs.min()) - 6), max(0, int(ys.min()) - 6)
    x1, y1 = int(xs.max()) + 7, int(ys.max()) + 7
    maps = [cv2.resize(m[y0:y1, x0:x1].astype(np.float32), (28, 28), interpolation=cv2.INTER_AREA) for m in (d_in, c_in)]
    mask = np.clip(np.stack(maps) + rng.normal(0.0, noise, (2, 28, 28)).astype(np.float32), 0.0, 1.0)
    boxes = np.stack([box, box + 40.0, np.zeros(4, np.float32)])
    masks = np.stack([mask, rng.random((2, 28, 28)).astype(np.float32), np.zeros((2, 28, 28), np.float32)])
    return boxes, np.array([0.8, 0.3, 0.0], np.float32), masks, lb


CASES = [
    dict(seed=1, h=390, w=580),
    dict(seed=2, h=600, w=450, noise=0.5),
    dict(seed=3, h=300, w=300, shift=(-160.0, -140.0)),  # the box leaves the image at the top left
    dict(seed=4, h=420, w=620, shift=(200.0, 230.0)),  # ... at the bottom right
    dict(seed=5, h=512, w=512, noise=0.0),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c["seed"]) for c in CASES])
@pytest.mark.parametrize("threshold,scale,ellipse", [(0.5, 1.0, False), (0.3, 1.25, False), (0.7, 1.0, True)])
def test_window_equals_full_image(case: dict, threshold: float, scale: float, ellipse: bool) -> None:
    boxes, scores, masks, lb = _case(**case)
    disc, cup, dp, cp, fallback = _reference(boxes, scores, masks, lb, threshold, ellipse, scale)
    seg = postprocess(boxes, scores, masks, lb, threshold, ellipse, keep_prob=True, mask_box_scale=scale)
    np.testing.assert_array_equal(seg.disc, disc)
    np.testing.assert_array_equal(seg.cup, cup)
    np.testing.assert_array_equal(seg.disc_prob, dp)
    np.testing.assert_array_equal(seg.cup_prob, cp)
    assert seg.cup_fallback == fallback
    assert cdr_report(*seg.cropped()) == cdr_report(disc, cup)
    y0, y1, x0, x1 = seg.bounds()
    outside = np.ones_like(disc)
    outside[y0:y1, x0:x1] = False
    assert not (seg.disc & outside).any() and not (seg.cup & outside).any()


def test_cases_exercise_holes_islands_and_fallback() -> None:
    """The noisy cases are not trivially clean: thresholding them leaves holes and islands."""
    boxes, scores, masks, lb = _case(**CASES[1])
    raw = paste_mask(masks[0, 0], lb.boxes_to_original(boxes[:1].astype(np.float64))[0], lb.orig_h, lb.orig_w) > 0.5
    assert cv2.connectedComponents(raw.astype(np.uint8))[0] > 2
    weak = masks.copy()
    weak[0, 1] *= 0.4  # the cup nowhere reaches 0.5: fallback
    disc, cup, _, _, fallback = _reference(boxes, scores, weak, lb, 0.5, False, 1.0)
    seg = postprocess(boxes, scores, weak, lb)
    assert fallback and seg.cup_fallback
    np.testing.assert_array_equal(seg.cup, cup)


def test_paste_window_is_a_slice_of_paste_mask() -> None:
    prob = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    for box in ([10.3, 4.7, 40.2, 30.9], [-5.0, -3.0, 12.0, 8.0], [50.0, 40.0, 80.0, 70.0]):
        b = np.array(box)
        win = mask_window(b, 60, 64)
        y0, y1, x0, x1 = win
        np.testing.assert_array_equal(paste_window(prob, b, win, 60, 64), paste_mask(prob, b, 60, 64)[y0:y1, x0:x1])
    assert mask_window(np.array([10.0, 10.0, 20.0, 20.0]), 100, 100) == (9, 21, 9, 21)
    assert mask_window(np.array([0.0, 0.0, 20.0, 20.0]), 100, 100) == (0, 21, 0, 21)
    assert mask_window(np.array([5.0, 5.0, 5.0, 9.0]), 100, 100) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="does not contain"):
        paste_window(prob, np.array([10.0, 10.0, 20.0, 20.0]), (12, 20, 10, 20), 100, 100)


def test_segmentation_bounds_and_crop() -> None:
    disc = np.zeros((20, 30), bool)
    disc[5:9, 10:15] = True
    seg = Segmentation(disc, disc.copy(), np.zeros(4, np.float32), 0.9, window=(4, 10, 9, 16))
    d, c = seg.cropped()
    assert d.shape == (6, 7) and d.sum() == disc.sum() and seg.found
    plain = Segmentation(disc, disc.copy(), np.zeros(4, np.float32), 0.9)
    assert plain.bounds() == (0, 20, 0, 30) and plain.cropped()[0].shape == (20, 30)
    empty = postprocess(np.zeros((1, 4), np.float32), np.zeros(1, np.float32), np.zeros((1, 2, 8, 8), np.float32),
                        Letterbox.compute(20, 30, 64))
    assert empty.bounds() == (0, 0, 0, 0) and cdr_report(*empty.cropped())["vcdr"] == 0.0 and not empty.found
