"""REFUGE metric formulas on hand-constructed masks, AUC against scipy and brute force."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from rfnet.common import metrics as M


def _rect(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_dice_iou_known_overlap() -> None:
    a = _rect(40, 40, 0, 10, 0, 10)
    b = _rect(40, 40, 0, 10, 5, 15)
    assert M.dice(a, b) == pytest.approx(2 * 50 / 200, abs=1e-12)
    assert M.iou(a, b) == pytest.approx(50 / 150, abs=1e-12)
    assert M.dice(a, a) == 1.0 and M.iou(a, a) == 1.0
    empty = np.zeros_like(a)
    assert M.dice(empty, a) == 0.0 and M.iou(a, empty) == 0.0
    assert math.isnan(M.dice(empty, empty)) and math.isnan(M.iou(empty, empty))
    with pytest.raises(ValueError, match="shapes differ"):
        M.dice(a, a[:5])


def test_cdr_on_rectangles() -> None:
    disc = _rect(100, 100, 10, 60, 10, 70)  # 50 rows x 60 cols
    cup = _rect(100, 100, 20, 40, 30, 50)  # 20 rows x 20 cols
    assert M.vertical_diameter(disc) == 50 and M.vertical_diameter(cup) == 20
    assert M.vcdr(disc, cup) == pytest.approx(20 / (50 + 1e-7), rel=1e-15)
    assert M.vcdr_extent(disc, cup) == pytest.approx(20 / (50 + 1e-7), rel=1e-15)
    assert M.hcdr(disc, cup) == pytest.approx(20 / 60, rel=1e-8)
    assert M.area_cdr(disc, cup) == pytest.approx(400 / 3000, rel=1e-8)
    rep = M.cdr_report(disc, cup)
    assert rep["disc_vertical_diameter"] == 50 and rep["cup_area"] == 400
    assert M.vcdr(disc, np.zeros_like(cup)) == 0.0
    assert M.vcdr(np.zeros_like(disc), np.zeros_like(cup)) == 0.0


def test_column_count_differs_from_extent() -> None:
    # a cup made of two vertical bars in one column band with a gap: count 20, extent 30
    disc = _rect(100, 100, 0, 40, 0, 40)
    cup = _rect(100, 100, 5, 15, 10, 12) | _rect(100, 100, 25, 35, 10, 12)
    assert M.vertical_diameter(cup) == 20
    assert M.vertical_extent(cup) == 30
    assert M.vcdr(disc, cup) == pytest.approx(0.5, abs=1e-8)
    assert M.vcdr_extent(disc, cup) == pytest.approx(0.75, abs=1e-8)
    # column count uses the longest column, not the union of rows
    stair = _rect(50, 50, 0, 10, 0, 5) | _rect(50, 50, 10, 20, 5, 10)
    assert M.vertical_diameter(stair) == 10 and M.vertical_extent(stair) == 20


def test_case_metrics_and_summarize() -> None:
    gd, gc = _rect(64, 64, 10, 50, 10, 50), _rect(64, 64, 20, 40, 20, 40)
    pd, pc = _rect(64, 64, 10, 50, 10, 50), _rect(64, 64, 20, 30, 20, 40)
    row = M.case_metrics(pd, pc, gd, gc)
    assert row["dice_disc"] == 1.0
    assert row["dice_cup"] == pytest.approx(2 * 200 / 600)
    assert row["miou"] == pytest.approx((1.0 + 0.5) / 2)
    assert row["vcdr_pred"] == pytest.approx(0.25, abs=1e-8) and row["vcdr_gt"] == pytest.approx(0.5, abs=1e-8)
    assert row["vcdr_ae"] == pytest.approx(0.25, abs=1e-8)
    assert M.miou(pd, pc, gd, gc) == pytest.approx(0.75)
    assert M.vcdr_mae([0.5, 0.7], [0.6, 0.4]) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        M.vcdr_mae([0.5], [0.5, 0.6])
    s = M.summarize([{"name": "a", "dice_cup": 0.5, "x": math.nan}, {"name": "b", "dice_cup": 1.0, "x": math.nan}])
    assert s["dice_cup"] == pytest.approx((0.75, 0.25))
    assert "name" not in s and all(math.isnan(v) for v in s["x"])
    s2 = M.summarize([{"v": 1.0}, {"v": math.nan}, {"v": 3.0}])
    assert s2["v"] == pytest.approx((2.0, 1.0))


def test_refuge_seg_round_trip() -> None:
    disc = _rect(10, 10, 2, 8, 2, 8)
    cup = _rect(10, 10, 4, 6, 4, 6)
    seg = M.to_refuge_seg(disc, cup)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) == {0, 128, 255}
    assert (seg == 0).sum() == 4 and (seg == 128).sum() == 32
    d, c = M.from_refuge_seg(seg)
    np.testing.assert_array_equal(d, disc)
    np.testing.assert_array_equal(c, cup)


def _brute_auc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_scipy_and_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = (0, 1)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding creates many ties
    auc = M.roc_auc(s, y)
    u = mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided").statistic
    assert auc == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)
    assert auc == pytest.approx(_brute_auc(s, y), abs=1e-12)


def test_auc_edge_cases() -> None:
    assert M.roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert M.roc_auc([0.5, 0.5], [0, 1]) == 0.5
    assert math.isnan(M.roc_auc([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError, match="labels"):
        M.roc_auc([0.1, 0.2], [0, 2])


def test_sensitivity_at_85_specificity() -> None:
    neg = [0.1] * 16 + [0.5, 0.6, 0.7, 0.75]  # 20 negatives: at most 3 may score >= threshold
    pos = [0.3, 0.55, 0.8, 0.9]
    s, y = np.array(neg + pos), np.array([0] * 20 + [1] * 4)
    # threshold 0.55 -> FP 3 (spec 0.85), TP 3 -> 0.75; threshold 0.5 -> spec 0.80 (not allowed)
    assert M.sensitivity_at_specificity(s, y, 0.85) == pytest.approx(0.75)
    res = M.glaucoma_classification(s, y)
    assert res["sensitivity_at_85_specificity"] == pytest.approx(0.75)
    assert res["auc"] == pytest.approx(_brute_auc(s, y))
    # brute force over all thresholds on random data
    rng = np.random.default_rng(5)
    y2 = rng.integers(0, 2, 80)
    s2 = np.round(rng.normal(y2, 1.0), 1)
    best = max(
        ((s2 >= t) & (y2 == 1)).sum() / (y2 == 1).sum()
        for t in list(np.unique(s2)) + [np.inf]
        if 1 - ((s2 >= t) & (y2 == 0)).sum() / (y2 == 0).sum() >= 0.85
    )
    assert M.sensitivity_at_specificity(s2, y2) == pytest.approx(best, abs=1e-12)


def test_cdr_agreement_mae_and_pearson() -> None:
    from rfnet.common.metrics import cdr_agreement

    a = cdr_agreement([0.3, 0.5, 0.7, 0.9], [0.35, 0.45, 0.75, 0.85])
    assert a["n"] == 4 and a["mae"] == pytest.approx(0.05)
    assert a["pearson"] == pytest.approx(np.corrcoef([0.3, 0.5, 0.7, 0.9], [0.35, 0.45, 0.75, 0.85])[0, 1])
    flat = cdr_agreement([0.6, 0.6, 0.6], [0.3, 0.5, 0.9])  # a model that draws the same cup for every eye
    assert math.isnan(flat["pearson"]) and flat["mae"] == pytest.approx((0.3 + 0.1 + 0.3) / 3)
    assert cdr_agreement([], [])["n"] == 0
    with pytest.raises(ValueError):
        cdr_agreement([0.1], [0.1, 0.2])


def test_fit_expert_scale_recovers_a_line_and_refuses_too_few_pairs() -> None:
    x = np.array([0.3, 0.5, 0.7, 0.9])
    a, b = M.fit_expert_scale(x, 0.8 * x + 0.15)
    assert (a, b) == (pytest.approx(0.8, abs=1e-9), pytest.approx(0.15, abs=1e-9))
    with pytest.raises(ValueError, match="at least 3 pairs"):
        M.fit_expert_scale([0.3, 0.5], [0.4, 0.6])
    with pytest.raises(ValueError, match="varying"):
        M.fit_expert_scale([0.5, 0.5, 0.5], [0.4, 0.6, 0.5])


def test_to_expert_scale_maps_by_the_line_and_clips_to_a_ratio() -> None:
    out = M.to_expert_scale(np.array([0.0, 0.5, 1.0]), (0.8, 0.25))
    np.testing.assert_allclose(out, [0.25, 0.65, 1.0])  # 1.05 clipped to 1
    assert float(M.to_expert_scale(0.1, (1.0, -0.2))) == 0.0
