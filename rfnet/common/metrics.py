"""Segmentation, cup-to-disc ratio and glaucoma-classification metrics (torch-free).

A faithful re-implementation of the REFUGE 2018 evaluation (whose official code no longer
runs on current NumPy / SciPy), plus the common variants reported beside it:

* masks: REFUGE files hold 0 = cup, 128 = disc rim, 255 = background; disc = ``seg < 255``
  (cup included), cup = ``seg == 0`` (:func:`from_refuge_seg`, :func:`to_refuge_seg`);
* Dice per image, ``2|A and B| / (|A| + |B|)``, **no epsilon**, then the mean over images;
* vertical diameter = ``np.max(np.sum(mask, axis=0))`` (the longest column count), vCDR =
  ``cup / (disc + 1e-7)``, scored by the mean absolute error against the ground truth;
* extent-based vCDR (``max row - min row + 1``) as the other common definition;
* classification: vCDR as the glaucoma risk score, ROC AUC and sensitivity at 85 %
  specificity.
All mask arguments are bool (or 0/1) arrays [H, W] of the same shape.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Added to CDR denominators, as in the REFUGE evaluation code.
CDR_EPS = 1e-7


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pred).astype(bool)
    b = np.asarray(gt).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: prediction {a.shape} vs ground truth {b.shape}")
    return a, b


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """REFUGE Dice ``2|P and G| / (|P| + |G|)`` without epsilon.

    When both masks are empty the ratio is 0/0: the REFUGE code then yields NaN (with a
    NumPy warning); this returns ``nan`` explicitly, and :func:`summarize` skips NaN
    values (reporting how many). REFUGE ground truths always contain a disc and a cup,
    so this happens only for data the loaders flag as bad.
    """
    a, b = _pair(pred, gt)
    denom = int(a.sum()) + int(b.sum())
    if denom == 0:
        return math.nan
    return 2.0 * int(np.logical_and(a, b).sum()) / denom


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two *predicted* masks (two backends, two precisions); unlike :func:`dice`
    against a ground truth, two empty masks agree perfectly (1.0)."""
    d = dice(a, b)
    return 1.0 if math.isnan(d) else d


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union ``|P and G| / |P or G|``; ``nan`` when both are empty."""
    a, b = _pair(pred, gt)
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return math.nan
    return int(np.logical_and(a, b).sum()) / union


def vertical_diameter(mask: np.ndarray) -> int:
    """REFUGE vertical diameter: the largest number of mask pixels in one column (0 if empty)."""
    m = np.asarray(mask).astype(bool)
    if m.size == 0:
        return 0
    return int(np.max(np.sum(m, axis=0)))


def horizontal_diameter(mask: np.ndarray) -> int:
    """Horizontal analogue of :func:`vertical_diameter`: the largest pixel count in one row."""
    m = np.asarray(mask).astype(bool)
    if m.size == 0:
        return 0
    return int(np.max(np.sum(m, axis=1)))


def vertical_extent(mask: np.ndarray) -> int:
    """``max row - min row + 1`` of the mask pixels (0 if empty)."""
    rows = np.flatnonzero(np.asarray(mask).astype(bool).any(axis=1))
    return 0 if rows.size == 0 else int(rows[-1] - rows[0] + 1)


def vcdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """REFUGE vertical cup-to-disc ratio ``vd(cup) / (vd(disc) + 1e-7)`` (column counts)."""
    return vertical_diameter(cup) / (vertical_diameter(disc) + CDR_EPS)


def vcdr_extent(disc: np.ndarray, cup: np.ndarray) -> float:
    """Extent-based vCDR ``extent(cup) / (extent(disc) + 1e-7)``, extent = max row - min row + 1."""
    return vertical_extent(cup) / (vertical_extent(disc) + CDR_EPS)


def hcdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """Horizontal CDR by row counts, ``hd(cup) / (hd(disc) + 1e-7)`` (mirror of :func:`vcdr`)."""
    return horizontal_diameter(cup) / (horizontal_diameter(disc) + CDR_EPS)


def area_cdr(disc: np.ndarray, cup: np.ndarray) -> float:
    """Area CDR ``|cup| / (|disc| + 1e-7)``."""
    return int(np.asarray(cup).astype(bool).sum()) / (int(np.asarray(disc).astype(bool).sum()) + CDR_EPS)


def cdr_report(disc: np.ndarray, cup: np.ndarray) -> dict[str, float]:
    """All CDR variants and the underlying sizes (pixels) of one disc / cup pair."""
    return {
        "vcdr": vcdr(disc, cup),
        "vcdr_extent": vcdr_extent(disc, cup),
        "hcdr": hcdr(disc, cup),
        "area_cdr": area_cdr(disc, cup),
        "disc_vertical_diameter": float(vertical_diameter(disc)),
        "cup_vertical_diameter": float(vertical_diameter(cup)),
        "disc_area": float(np.asarray(disc).astype(bool).sum()),
        "cup_area": float(np.asarray(cup).astype(bool).sum()),
    }


def miou(pred_disc: np.ndarray, pred_cup: np.ndarray, gt_disc: np.ndarray, gt_cup: np.ndarray) -> float:
    """Mean IoU over the two segmented structures: ``(IoU(disc) + IoU(cup)) / 2``.

    Why these two classes: the RF-Net paper (Table 1) reports one mIoU beside Dice_OD and
    Dice_OC without defining it. Averaging over the structures it segments matches those
    two Dice columns; background is excluded because its IoU is close to 1 on every fundus
    image (it covers ~98 % of the pixels), which would inflate the mean and hide cup errors.
    """
    return (iou(pred_disc, gt_disc) + iou(pred_cup, gt_cup)) / 2.0


def vcdr_mae(pred_vcdr: Sequence[float] | np.ndarray, gt_vcdr: Sequence[float] | np.ndarray) -> float:
    """REFUGE vCDR score: mean absolute error between predicted and ground-truth vCDRs."""
    p = np.asarray(pred_vcdr, dtype=np.float64).reshape(-1)
    g = np.asarray(gt_vcdr, dtype=np.float64).reshape(-1)
    if p.shape != g.shape or p.size == 0:
        raise ValueError(f"need equally many predicted and ground-truth vCDRs, got {p.size} and {g.size}")
    return float(np.mean(np.abs(p - g)))


def cdr_agreement(pred: Sequence[float] | np.ndarray, ref: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Agreement of predicted CDRs with reference CDRs (the masks' or the experts'):
    ``{"n", "mae", "pearson"}``; Pearson is NaN for fewer than 3 pairs or a constant side."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    g = np.asarray(ref, dtype=np.float64).reshape(-1)
    if p.shape != g.shape:
        raise ValueError(f"need equally many predicted and reference CDRs, got {p.size} and {g.size}")
    if p.size == 0:
        return {"n": 0, "mae": math.nan, "pearson": math.nan}
    r = math.nan
    if p.size >= 3 and p.std() > 0 and g.std() > 0:
        r = float(np.corrcoef(p, g)[0, 1])
    return {"n": int(p.size), "mae": float(np.mean(np.abs(p - g))), "pearson": r}


def fit_expert_scale(mask_vcdr: Sequence[float] | np.ndarray, expert_cdr: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Least-squares line ``expert ~ a * mask_vcdr + b`` over ground-truth pairs: ``(a, b)``.

    Why: Drishti-GS's experts' CDR is larger than the vertical CDR of the all-agree masks a
    model is trained and scored on (by about 0.05 over its 50 training images), so a model that
    drew those masks perfectly would still read low on the experts' scale. The line is fitted
    on the *ground truth* of training images only (their masks' vCDR and the experts' mean)
    and applied to a model's predicted vCDR. ``ValueError`` for fewer than 3 pairs or a
    constant ``mask_vcdr``.
    """
    x = np.asarray(mask_vcdr, dtype=np.float64).reshape(-1)
    y = np.asarray(expert_cdr, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"need equally many mask vCDRs and expert CDRs, got {x.size} and {y.size}")
    if x.size < 3 or not np.ptp(x) > 0:
        raise ValueError(f"need at least 3 pairs with varying mask vCDR to fit a line, got {x.size}")
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def to_expert_scale(vcdr_value: float | np.ndarray, line: tuple[float, float]) -> np.ndarray:
    """A vCDR (or an array of them) on the experts' scale: ``a * vcdr + b`` of
    :func:`fit_expert_scale`'s ``line``, clipped to [0, 1] (a ratio of diameters)."""
    a, b = line
    return np.clip(a * np.asarray(vcdr_value, dtype=np.float64) + b, 0.0, 1.0)


def case_metrics(pred_disc: np.ndarray, pred_cup: np.ndarray, gt_disc: np.ndarray, gt_cup: np.ndarray) -> dict[str, float]:
    """Per-image metrics comparing a prediction with the ground truth.

    Keys: ``dice_disc``, ``dice_cup``, ``iou_disc``, ``iou_cup``, ``miou``, and for each
    CDR variant ``X`` in (vcdr, vcdr_extent, hcdr, area_cdr): ``X_pred``, ``X_gt`` and
    ``X_ae`` (absolute error; its mean over images is the REFUGE vCDR MAE for ``vcdr``).

    ``miou`` is the mean of the disc IoU and the cup IoU (see :func:`miou` for why).
    """
    i_d, i_c = iou(pred_disc, gt_disc), iou(pred_cup, gt_cup)
    out: dict[str, float] = {
        "dice_disc": dice(pred_disc, gt_disc),
        "dice_cup": dice(pred_cup, gt_cup),
        "iou_disc": i_d,
        "iou_cup": i_c,
        "miou": (i_d + i_c) / 2.0,
    }
    for name, fn in (("vcdr", vcdr), ("vcdr_extent", vcdr_extent), ("hcdr", hcdr), ("area_cdr", area_cdr)):
        p, g = fn(pred_disc, pred_cup), fn(gt_disc, gt_cup)
        out[f"{name}_pred"] = p
        out[f"{name}_gt"] = g
        out[f"{name}_ae"] = abs(p - g)
    return out


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """Mean and population standard deviation (ddof=0) of every numeric key over the rows.

    NaN values (e.g. Dice of two empty masks) are left out of that key's statistics; a key
    whose values are all NaN gives ``(nan, nan)``. Non-numeric values (names) are ignored.
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, v in row.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                continue
            values.setdefault(key, []).append(float(v))
    out: dict[str, tuple[float, float]] = {}
    for key, vals in values.items():
        arr = np.asarray(vals, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        out[key] = (float(arr.mean()), float(arr.std())) if arr.size else (math.nan, math.nan)
    return out


def _check_scores(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (glaucoma)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y.astype(np.int64)


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic with average ranks for ties:
    ``P(score_pos > score_neg) + 0.5 P(score_pos == score_neg)``. ``nan`` if a class is absent."""
    s, y = _check_scores(scores, labels)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average rank (1-based) over each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC operating points for the rule ``score >= t`` over every distinct score ``t``.

    Returns (fpr, tpr, thresholds), starting at (0, 0) with threshold ``+inf``.
    """
    s, y = _check_scores(scores, labels)
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    tpr = np.array([((s >= t) & (y == 1)).sum() / n_pos for t in thresholds])
    fpr = np.array([((s >= t) & (y == 0)).sum() / n_neg for t in thresholds])
    return fpr, tpr, thresholds


def sensitivity_at_specificity(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, specificity: float = 0.85
) -> float:
    """Highest sensitivity among ROC operating points whose specificity is >= ``specificity``.

    Ties in the score are never split (a threshold classifies all equal scores alike).
    ``nan`` if a class is absent.
    """
    s, y = _check_scores(scores, labels)
    if y.sum() == 0 or (1 - y).sum() == 0:
        return math.nan
    fpr, tpr, _ = roc_curve(s, y)
    ok = (1.0 - fpr) >= specificity - 1e-12
    return float(tpr[ok].max())  # the (0, 0) point always qualifies


def glaucoma_classification(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> dict[str, float]:
    """REFUGE classification task with a risk score (vCDR): AUC and sensitivity at 85 % specificity.

    Args:
        scores: [N] risk scores (higher = more likely glaucoma), e.g. predicted vCDR.
        labels: [N] 1 = glaucoma, 0 = normal.
    """
    return {
        "auc": roc_auc(scores, labels),
        "sensitivity_at_85_specificity": sensitivity_at_specificity(scores, labels, 0.85),
    }


def to_refuge_seg(disc: np.ndarray, cup: np.ndarray, bounds: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """bool disc / cup [H, W] -> REFUGE uint8 map: 0 cup, 128 disc rim, 255 background.

    A cup pixel outside the disc is still written as cup (0), as REFUGE's ``seg == 0``.
    ``bounds`` (row0, row1, col0, col1), when both masks are empty outside it (a
    :class:`~rfnet.common.postprocess.Segmentation`'s ``bounds()``), limits the work to it.
    """
    d, c = _pair(disc, cup)
    seg = np.full(d.shape, 255, dtype=np.uint8)
    y0, y1, x0, x1 = bounds if bounds is not None else (0, d.shape[0], 0, d.shape[1])
    win = seg[y0:y1, x0:x1]
    win[d[y0:y1, x0:x1]] = 128
    win[c[y0:y1, x0:x1]] = 0
    return seg


def from_refuge_seg(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """REFUGE uint8 map -> (disc = ``seg < 255``, cup = ``seg == 0``), both bool [H, W]."""
    s = np.asarray(seg)
    return s < 255, s == 0
