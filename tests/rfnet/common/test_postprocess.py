"""Pasting probability maps, cleaning masks and the full post-processing on constructed outputs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from rfnet.common.metrics import dice
from rfnet.common.postprocess import (_cup_within, clean_mask, fill_holes, fit_ellipse_mask, largest_component, paste_mask, postprocess,
                                      sample_bilinear)
from rfnet.common.preprocess import Letterbox, letterbox_mask


def test_paste_constant_map_fills_box_exactly() -> None:
    out = paste_mask(np.ones((56, 56), np.float32), np.array([10.0, 20.0, 30.0, 50.0]), 100, 100)
    assert out.dtype == np.float32 and out.shape == (100, 100)
    exp = np.zeros((100, 100), np.float32)
    exp[20:50, 10:30] = 1.0
    np.testing.assert_array_equal(out, exp)


def test_paste_bilinear_values_and_clipping() -> None:
    prob = np.zeros((4, 4), np.float32)
    prob[:, 2:] = 1.0
    out = paste_mask(prob, np.array([0.0, 0.0, 40.0, 40.0]), 50, 50)
    # x=19 samples u=1.45 -> 0.45, x=20 samples u=1.55 -> 0.55 (linear between columns 1 and 2)
    assert out[5, 19] == pytest.approx(0.45, abs=1e-5) and out[5, 20] == pytest.approx(0.55, abs=1e-5)
    thr = out > 0.5
    assert thr[:40, 20:40].all() and not thr[:, :20].any() and not thr[:, 40:].any()
    # a box partly outside the image is clipped, not shifted
    part = paste_mask(np.ones((8, 8), np.float32), np.array([-10.0, -10.0, 10.0, 10.0]), 30, 30)
    assert part[:10, :10].all() and part.sum() == 100
    assert not paste_mask(np.ones((8, 8)), np.array([5.0, 5.0, 5.0, 9.0]), 20, 20).any()


def test_clean_mask() -> None:
    m = np.zeros((40, 40), bool)
    m[5:25, 5:25] = True
    m[10:15, 10:15] = False  # hole
    m[30:35, 30:35] = True  # smaller blob
    lcc = largest_component(m)
    assert not lcc[30:35, 30:35].any() and lcc[5, 5]
    filled = fill_holes(lcc)
    assert filled[10:15, 10:15].all()
    c = clean_mask(m)
    exp = np.zeros_like(m)
    exp[5:25, 5:25] = True
    np.testing.assert_array_equal(c, exp)
    # a notch open to the outside is not a hole
    notch = exp.copy()
    notch[5:15, 12:14] = False
    np.testing.assert_array_equal(fill_holes(notch), notch)
    assert not clean_mask(np.zeros((5, 5), bool)).any()


def _circle(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_fit_ellipse_mask() -> None:
    m = np.zeros((200, 200), np.uint8)
    cv2.ellipse(m, (100, 90), (60, 40), 30, 0, 360, 1, -1)
    e = fit_ellipse_mask(m.astype(bool))
    assert dice(e, m.astype(bool)) > 0.98
    # a square becomes a rounded shape of similar area
    sq = np.zeros((100, 100), bool)
    sq[20:80, 20:80] = True
    es = fit_ellipse_mask(sq)
    assert not es[20, 20] and es[50, 50] and abs(es.sum() / sq.sum() - 1) < 0.3


def _outputs_from_masks(disc: np.ndarray, cup: np.ndarray, lb: Letterbox, s: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """Build (box [4], mask [2,S,S]) in network-input pixels from original-size masks."""
    d_in, c_in = letterbox_mask(disc, lb), letterbox_mask(cup, lb)
    ys, xs = np.nonzero(d_in)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    x0, y0, x1, y1 = box.astype(int)
    crop = [cv2.resize(m[y0:y1, x0:x1].astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR) for m in (d_in, c_in)]
    return box, np.stack(crop)


def test_postprocess_recovers_masks_at_original_size() -> None:
    h, w = 300, 420
    disc = _circle(h, w, 250, 140, 60)
    cup = _circle(h, w, 255, 145, 30)
    lb = Letterbox.compute(h, w, 512)
    box, mask = _outputs_from_masks(disc, cup, lb)
    junk_mask = np.zeros_like(mask)
    boxes = np.stack([np.array([0, 0, 50, 50], np.float32), box, np.zeros(4, np.float32)])
    scores = np.array([0.3, 0.9, 0.0], np.float32)  # best detection is not first
    masks = np.stack([junk_mask + 1.0, mask, junk_mask])
    seg = postprocess(boxes, scores, masks, lb, keep_prob=True)
    assert seg.score == pytest.approx(0.9) and seg.found
    assert seg.disc.shape == (h, w) and seg.disc.dtype == bool
    assert dice(seg.disc, disc) > 0.97 and dice(seg.cup, cup) > 0.95
    assert not (seg.cup & ~seg.disc).any()
    np.testing.assert_allclose(seg.box, [190, 80, 311, 201], atol=2.0)
    assert seg.disc_prob is not None and seg.disc_prob.shape == (h, w)
    ell = postprocess(boxes, scores, masks, lb, ellipse=True)
    assert dice(ell.disc, disc) > 0.97 and not (ell.cup & ~ell.disc).any()


def test_postprocess_cup_clipped_to_disc_and_empty() -> None:
    lb = Letterbox.compute(64, 64, 64)
    mask = np.zeros((1, 2, 8, 8), np.float32)
    mask[0, 0, :, :4] = 1.0  # disc: left half of the box
    mask[0, 1, 2:6, 2:6] = 1.0  # cup straddles the disc edge
    seg = postprocess(np.array([[0, 0, 32, 32]], np.float32), np.array([1.0], np.float32), mask, lb)
    assert seg.disc[:, :16].any() and not seg.disc[:, 16:].any()
    assert seg.cup.any() and not (seg.cup & ~seg.disc).any()
    none = postprocess(np.zeros((2, 4), np.float32), np.zeros(2, np.float32), np.zeros((2, 2, 8, 8), np.float32), lb)
    assert none.score == 0.0 and not none.found and not none.disc.any() and none.disc.shape == (64, 64)
    with pytest.raises(ValueError, match="inconsistent outputs"):
        postprocess(np.zeros((2, 4)), np.zeros(3), np.zeros((2, 2, 8, 8)), lb)


def test_weak_cup_falls_back_to_half_its_peak_and_is_flagged() -> None:
    lb = Letterbox.compute(64, 64, 64)
    box, score = np.array([[0, 0, 32, 32]], np.float32), np.array([0.6], np.float32)
    mask = np.zeros((1, 2, 8, 8), np.float32)
    mask[0, 0] = 1.0  # disc fills the box
    mask[0, 1, 2:6, 2:6] = 0.4  # a cup the model is unsure of: nothing reaches 0.5
    mask[0, 1, 3:5, 3:5] = 0.45
    seg = postprocess(box, score, mask, lb)
    assert seg.cup_fallback and seg.cup_threshold == pytest.approx(0.225)
    # the cup is the region above half the peak, inside the disc
    assert seg.cup[14, 14] and not seg.cup[2, 2] and 0.1 < seg.cup.sum() / seg.disc.sum() < 0.6
    confident = mask.copy()
    confident[0, 1, 2:6, 2:6] = 0.9
    seg = postprocess(box, score, confident, lb)
    assert not seg.cup_fallback and seg.cup_threshold == 0.5 and seg.cup.any()
    flat = mask.copy()
    flat[0, 1] = 0.05  # no signal at all: no cup rather than noise
    seg = postprocess(box, score, flat, lb)
    assert not seg.cup.any() and not seg.cup_fallback


def test_sample_bilinear_is_exact_bilinear_on_any_opencv() -> None:
    """Against the textbook formula in float64, edges replicated (cv2.remap on OpenCV 4.x rounds
    its weights to 1/32 and was off by up to 0.03 here)."""
    rng = np.random.default_rng(1)
    p = rng.random((7, 9)).astype(np.float32)
    u = np.array([-0.7, 0.0, 0.45, 3.25, 7.9, 8.0, 9.4], np.float32)
    v = np.array([-1.0, 0.3, 2.5, 5.99, 6.0, 6.8], np.float32)
    want = np.zeros((v.size, u.size))
    for i, y in enumerate(v.astype(np.float64)):
        for j, x in enumerate(u.astype(np.float64)):
            x0, y0 = np.floor(x), np.floor(y)
            fx, fy = x - x0, y - y0
            px = lambda r, c: float(p[int(np.clip(r, 0, 6)), int(np.clip(c, 0, 8))])  # noqa: E731
            want[i, j] = ((1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1))
                          + fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1)))
    got = sample_bilinear(p, u, v)
    assert got.dtype == np.float32 and got.shape == (6, 7)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_cup_within_the_disc_equals_cleaning_twice() -> None:
    """The skipped second cleaning changes nothing: random blobby masks, with the cup inside,
    across and outside the disc."""
    rng = np.random.default_rng(0)
    inside = 0
    for _ in range(300):
        size = int(rng.integers(8, 40))
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 3)))
        disc = clean_mask(noise > np.quantile(noise, rng.uniform(0.2, 0.8)))
        cup_raw = noise > np.quantile(noise, rng.uniform(0.5, 0.97)) + float(rng.uniform(-0.05, 0.05))
        expected = clean_mask(clean_mask(cup_raw) & disc)
        got = _cup_within(cup_raw, disc)
        np.testing.assert_array_equal(got, expected)
        inside += int(not (clean_mask(cup_raw) & ~disc).any())
    assert 30 < inside < 270  # both paths are exercised
