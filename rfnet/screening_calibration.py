"""Calibrate a model's verdict and referral threshold on cross-validation rows (torch-free).

    python -m rfnet.screening_calibration --per-image cv/p*/per_image.csv --out grading.json
    python -m rfnet.screening_calibration --per-image lodo/*/per_image.csv --apply grading.json

Input: the ``per_image.csv`` of ``rfnet.evaluate`` runs on held-out images (each image scored by a
model that did not train on it), made with the limits off (``--grading`` with ``min_disc_score``
0 and ``max_disc_fraction`` 1), so each row carries its detection score, the verdict's measures
(:data:`rfnet.common.gradability.MEASURES`), its reason when a fixed check refused it (image
checks, no disc, disc at the edge, too small, no cup), its errors against the ground truth and,
where the dataset has them, a glaucoma label.

Calibration (the rule declared in docs/lab/screen-cv.md):

* ``min_disc_score``: ``margin x`` the lowest score of a row whose disc was found (disc Dice >=
  0.5), as ``rfnet.grading_calibration`` proposes it;
* the limits (:class:`rfnet.common.gradability.GradingLimits`): a greedy search over quantiles of
  each measure among the *well-segmented* rows (:func:`rfnet.crossval.is_wrong` false): each step
  takes the candidate refusing the most wrong rows per well row it refuses, while at least
  ``--min-kept`` of the well rows of every dataset stay gradable;
* then the envelope of the well-segmented rows (:func:`envelope_limits`): the disc-to-field ratio
  within [low / 1.5, high x 1.5], the disc's contrast at least 0.95 x low, where low and high are
  the 0.5 % and 99.5 % quantiles (one atypical image must not open the envelope);
* ``referral_vcdr``: the lowest risk (vCDR on the experts' scale where the rows have it, else the
  vCDR) that keeps ``--specificity`` among the gradable labelled normals. Its honest figures come
  from the folds: each fold's threshold is chosen on the other folds' rows and applied to its own.

The verdict's honest figures come from the folds too (``report_cv``, :func:`cross_fitted`): each
fold's limits chosen on the other folds' rows and applied to its own; ``report`` is in sample.

``--apply FILE`` judges a calibration on other rows (the leave-one-dataset-out evaluations):
per dataset, gradable, wrong but graded, well kept, and the referral's sensitivity / specificity.
Exit status: 0 done, 2 bad input.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.common import gradability as G
from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.fileio import atomic_write_json
from rfnet.common.metrics import roc_auc
from rfnet.crossval import cell_float, is_wrong
from rfnet.grading_calibration import propose
from rfnet.errors import RFNetError, UsageError

log = logging.getLogger(__name__)

#: Reasons a row keeps whatever the limits: the fixed checks (image, detection, cup).
FIXED_REASONS = frozenset({G.IMAGE_TOO_SMALL, G.IMAGE_TOO_DARK, G.IMAGE_TOO_FLAT, G.NOT_FUNDUS_COLOUR, G.NO_COLOUR,
                           G.NO_DISC, G.DISC_AT_EDGE, G.DISC_TOO_SMALL, G.NO_CUP})
QUANTILES = (0.005, 0.01, 0.02, 0.03, 0.05)


@dataclass(frozen=True)
class Row:
    """What the calibration needs of one per_image.csv row."""

    name: str
    dataset: str
    fold: str
    reason: str
    score: float
    dice_disc: float
    wrong: bool
    measures: dict[str, float]
    risk: float
    label: int | None


def read_rows(paths: Sequence[Path]) -> list[Row]:
    """Rows of ``rfnet.evaluate``'s per_image.csv files (``UsageError`` naming a file without the columns)."""
    out: list[Row] = []
    for path in paths:
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        missing = {"name", "score", "dice_disc", "reason", *G.MEASURES} - set(rows[0] if rows else {})
        if not rows or missing:
            raise UsageError(f"{path}: not a per_image.csv with the verdict's measures (missing {sorted(missing)}); "
                             "evaluate again with this version of rfnet.evaluate")
        for r in rows:
            risk = cell_float(r.get("vcdr_expert_pred")) if r.get("vcdr_expert_pred") else cell_float(r.get("vcdr_pred"))
            label = r.get("label", "")
            out.append(Row(r["name"], r.get("dataset", "") or "", path.parent.name, r.get("reason", "") or "",
                           cell_float(r["score"]), cell_float(r["dice_disc"]), is_wrong(r),
                           {m: cell_float(r.get(m)) for m in G.MEASURES}, risk, int(label) if label not in ("", None) else None))
    if not out:
        raise UsageError("no rows in the per_image.csv files given")
    return out


def refused(row: Row, min_score: float, limits: G.GradingLimits) -> bool:
    """The verdict of :func:`rfnet.common.gradability.grade_detection` on the row's measures."""
    return row.reason in FIXED_REASONS or row.score < min_score or limits.breached(row.measures) is not None


def _kept(rows: Sequence[Row], min_score: float, limits: G.GradingLimits) -> dict[str, float]:
    """Per dataset: the share of well-segmented rows that stay gradable."""
    out: dict[str, float] = {}
    for ds in sorted({r.dataset for r in rows}):
        well = [r for r in rows if r.dataset == ds and not r.wrong]
        out[ds] = sum(not refused(r, min_score, limits) for r in well) / len(well) if well else math.nan
    return out


def calibrate_limits(rows: Sequence[Row], min_score: float, min_kept: float) -> G.GradingLimits:
    """The greedy search of the module docstring."""
    limits = G.GradingLimits(max_disc_fraction=1.0)
    well = [r for r in rows if not r.wrong]
    candidates: list[tuple[str, float]] = []
    for name, measure, side in G.LIMIT_MEASURES:
        values = np.array([r.measures[measure] for r in well], np.float64)
        values = values[~np.isnan(values)]
        if values.size:
            for q in QUANTILES:
                candidates.append((name, float(np.quantile(values, q if side == "low" else 1 - q))))
    while True:
        base = {r.name for r in rows if refused(r, min_score, limits)}
        best, best_gain = None, 0.0
        for name, value in candidates:
            side = dict((n, s) for n, _, s in G.LIMIT_MEASURES)[name]
            current = getattr(limits, name)
            if (side == "low" and value <= current) or (side == "high" and value >= current):
                continue  # not tighter than what is set
            trial = _replace(limits, name, value)
            kept = [v for v in _kept(rows, min_score, trial).values() if not math.isnan(v)]
            if kept and min(kept) < min_kept:
                continue
            newly = [r for r in rows if r.name not in base and refused(r, min_score, trial)]
            wrong = sum(r.wrong for r in newly)
            gain = wrong / (1 + len(newly) - wrong)
            if wrong and gain > best_gain:
                best, best_gain = (name, value), gain
        if best is None:
            return limits
        limits = _replace(limits, *best)
        log.debug("limit %s = %.4f", *best)  # debug: cross-fitting runs the search once per fold


#: Envelope limits set after the search (docs/lab/screen-cv.md, second and fourth addenda): the
#: disc-to-field ratio within [low / 1.5, high x 1.5] of the well-segmented rows, the disc's contrast
#: at least 0.95 x low, low and high being their ENVELOPE_QUANTILE and 1 - ENVELOPE_QUANTILE
#: quantiles: failures only an unseen camera shows (a disc several times too large for its field, a
#: disc off the nerve head) never appear among rows of cameras the model trained on, and quantiles,
#: not extremes, so that one atypical image (a crop that shows four dark corners) cannot open it.
FIELD_RATIO_MARGIN = 1.5
CONTRAST_MARGIN = 0.95
ENVELOPE_QUANTILE = 0.005


def envelope_limits(rows: Sequence[Row], limits: G.GradingLimits) -> G.GradingLimits:
    """``limits`` with the envelope of the well-segmented rows added where it is tighter."""
    well = [r for r in rows if not r.wrong]
    ratios = np.array([r.measures["disc_field_ratio"] for r in well], np.float64)
    ratios = ratios[~np.isnan(ratios)]
    contrast = np.array([r.measures["disc_contrast"] for r in well], np.float64)
    contrast = contrast[~np.isnan(contrast)]
    if ratios.size:
        limits = _replace(limits, "min_disc_field_ratio", max(limits.min_disc_field_ratio,
                                                                _low(ratios) / FIELD_RATIO_MARGIN))
        limits = _replace(limits, "max_disc_field_ratio", min(limits.max_disc_field_ratio,
                                                                _high(ratios) * FIELD_RATIO_MARGIN))
    if contrast.size:
        limits = _replace(limits, "min_disc_contrast", max(limits.min_disc_contrast,
                                                             _low(contrast) * CONTRAST_MARGIN))
    return limits


def _low(values: np.ndarray) -> float:
    return float(np.quantile(values, ENVELOPE_QUANTILE))


def _high(values: np.ndarray) -> float:
    return float(np.quantile(values, 1.0 - ENVELOPE_QUANTILE))


def _replace(limits: G.GradingLimits, name: str, value: float) -> G.GradingLimits:
    return G.GradingLimits(**{**{k: getattr(limits, k) for k in G.GradingLimits.__dataclass_fields__}, name: value})


def referral_threshold(rows: Sequence[Row], specificity: float) -> float | None:
    """Lowest risk that keeps ``specificity`` among the labelled normals (None without normals)."""
    normals = np.sort([r.risk for r in rows if r.label == 0 and not math.isnan(r.risk)])
    if normals.size == 0:
        return None
    k = int(math.ceil(specificity * normals.size)) - 1
    # above the k-th normal: at least k + 1 normals fall below the threshold
    return float(min(0.999, normals[min(k, normals.size - 1)] + 1e-6))


def referral_figures(rows: Sequence[Row], threshold: float) -> dict[str, float]:
    lab = [r for r in rows if r.label in (0, 1) and not math.isnan(r.risk)]
    pos, neg = [r for r in lab if r.label == 1], [r for r in lab if r.label == 0]
    return {"n_glaucoma": len(pos), "n_normal": len(neg),
            "sensitivity": sum(r.risk >= threshold for r in pos) / len(pos) if pos else math.nan,
            "specificity": sum(r.risk < threshold for r in neg) / len(neg) if neg else math.nan}


def auc(rows: Sequence[Row]) -> float:
    """ROC AUC of the risk over the labelled rows with a risk (:func:`rfnet.common.metrics.roc_auc`)."""
    labelled = [r for r in rows if r.label in (0, 1) and not math.isnan(r.risk)]
    return roc_auc([r.risk for r in labelled], [int(r.label or 0) for r in labelled])


def nested_referral(rows: Sequence[Row], specificity: float) -> dict[str, float]:
    """Each fold's threshold from the other folds' gradable rows, applied to its own; pooled figures."""
    applied: list[Row] = []
    hits: list[tuple[Row, bool]] = []
    for fold in sorted({r.fold for r in rows}):
        t = referral_threshold([r for r in rows if r.fold != fold], specificity)
        if t is None:
            continue
        for r in rows:
            if r.fold == fold and r.label in (0, 1) and not math.isnan(r.risk):
                applied.append(r)
                hits.append((r, r.risk >= t))
    pos = [h for r, h in hits if r.label == 1]
    neg = [h for r, h in hits if r.label == 0]
    return {"n_glaucoma": len(pos), "n_normal": len(neg), "auc": auc(applied),
            "sensitivity": sum(pos) / len(pos) if pos else math.nan,
            "specificity": sum(not h for h in neg) / len(neg) if neg else math.nan}


def report(rows: Sequence[Row], min_score: float, limits: G.GradingLimits) -> dict[str, dict[str, float]]:
    """Per dataset (and all): images, gradable, wrong but graded (count and share), well kept."""
    return tally(rows, [not refused(r, min_score, limits) for r in rows])


def tally(rows: Sequence[Row], gradable: Sequence[bool]) -> dict[str, dict[str, float]]:
    """:func:`report`'s figures for rows whose verdicts are given (``gradable[i]`` for ``rows[i]``)."""
    out: dict[str, dict[str, float]] = {}
    for ds in [*sorted({r.dataset for r in rows}), "all"]:
        part = [(r, g) for r, g in zip(rows, gradable) if ds == "all" or r.dataset == ds]
        well = [g for r, g in part if not r.wrong]
        wrong = sum(r.wrong for r, g in part if g)
        out[ds] = {"images": len(part), "gradable": sum(g for _, g in part), "wrong_graded": wrong,
                   "wrong_graded_share": wrong / len(part), "well_kept": sum(well) / len(well) if well else math.nan}
    return out


def verdict_limits(rows: Sequence[Row], margin: float, min_kept: float) -> tuple[float, G.GradingLimits]:
    """The minimum disc score and the limits the declared rule chooses on ``rows``."""
    found = [r.score for r in rows if r.dice_disc >= 0.5 and r.reason not in FIXED_REASONS]
    min_score = propose(found, margin)
    return min_score, envelope_limits(rows, calibrate_limits(rows, min_score, min_kept))


def cross_fitted(rows: Sequence[Row], margin: float, min_kept: float) -> dict[str, dict[str, float]]:
    """Each fold's verdict chosen on the other folds' rows and applied to its own; pooled figures.

    The honest figures of the verdict: :func:`report` on the rows it was calibrated on is in sample.
    Needs rows from at least two folds (``UsageError`` otherwise).
    """
    folds = sorted({r.fold for r in rows})
    if len(folds) < 2:
        raise UsageError("cross-fitting needs per_image.csv files of at least two folds (one folder each)")
    ordered: list[Row] = []
    gradable: list[bool] = []
    for fold in folds:
        min_score, limits = verdict_limits([r for r in rows if r.fold != fold], margin, min_kept)
        own = [r for r in rows if r.fold == fold]
        ordered += own
        gradable += [not refused(r, min_score, limits) for r in own]
    return tally(ordered, gradable)


def report_table(rep: dict[str, dict[str, float]]) -> str:
    """:func:`report`'s figures as a Markdown table."""
    lines = ["| dataset | images | gradable | wrong but graded | well segmented kept |", "|---|---|---|---|---|"]
    for ds, st in rep.items():
        lines.append(f"| {ds} | {int(st['images'])} | {int(st['gradable'])} | {int(st['wrong_graded'])} "
                     f"({st['wrong_graded_share']:.1%}) | {st['well_kept']:.1%} |")
    return "\n".join(lines)


def _gradable_only(rows: Sequence[Row], min_score: float, limits: G.GradingLimits) -> list[Row]:
    return [r for r in rows if not refused(r, min_score, limits)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rfnet.screening_calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("--per-image", nargs="+", type=Path, required=True, help="rfnet.evaluate per_image.csv files")
    p.add_argument("--out", type=Path, help="write the calibration (JSON for export_onnx.py --grading) here")
    p.add_argument("--apply", type=Path, help="judge this calibration on the rows instead of calibrating")
    p.add_argument("--margin", type=float, default=0.5, help="min disc score = margin x lowest true-disc score (0.5)")
    p.add_argument("--min-kept", type=float, default=0.97, help="well-segmented rows kept per dataset (0.97)")
    p.add_argument("--specificity", type=float, default=0.85, help="referral specificity on the normals (0.85)")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    args = p.parse_args(argv)
    setup_logging()
    try:
        rows = read_rows(args.per_image)
        if args.apply is not None:
            return _judge(rows, args.apply)
        if args.out is None:
            raise UsageError("give --out FILE (or --apply FILE)")
        if args.out.exists() and not args.overwrite:
            raise UsageError(f"{args.out}: exists; pass --overwrite to replace it")
        result = _calibrate(rows, args.margin, args.min_kept, args.specificity)
    except (RFNetError, ValueError) as exc:
        log.error("%s", exc)
        return ExitCode.USAGE
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return ExitCode.OK


def _calibrate(rows: list[Row], margin: float, min_kept: float, specificity: float) -> dict[str, Any]:
    min_score, limits = verdict_limits(rows, margin, min_kept)
    graded = _gradable_only(rows, min_score, limits)
    threshold = referral_threshold(graded, specificity)
    rep = report(rows, min_score, limits)
    print(f"min disc score {min_score}; limits {limits.to_dict()}")
    print("on the rows it was calibrated on (in sample):")
    print(report_table(rep))
    rep_cv = cross_fitted(rows, margin, min_kept) if len({r.fold for r in rows}) > 1 else {}
    if rep_cv:
        print("cross-fitted (each fold's verdict calibrated on the other folds' rows):")
        print(report_table(rep_cv))
    nested = nested_referral(graded, specificity) if threshold is not None else {}
    if threshold is not None:
        print(f"referral vCDR {threshold:.4f}; per fold (threshold from the other folds): AUC {nested['auc']:.3f}, "
              f"sensitivity {nested['sensitivity']:.3f}, specificity {nested['specificity']:.3f} "
              f"({nested['n_glaucoma']} glaucoma, {nested['n_normal']} normal)")
    return {"min_disc_score": min_score, "limits": limits.to_dict(), "referral_vcdr": threshold,
            "report": rep, "report_cv": rep_cv, "referral_cv": nested, "rule": "docs/lab/screen-cv.md, rule 2 addendum and rule 3"}


def _judge(rows: list[Row], path: Path) -> int:
    try:
        data = json.loads(path.read_text())
        min_score = float(data.get("min_disc_score", 0.0))
        limits = G.GradingLimits.from_mapping(data.get("limits"))
        threshold = data.get("referral_vcdr")
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a calibration file ({exc})") from None
    print(report_table(report(rows, min_score, limits)))
    graded = _gradable_only(rows, min_score, limits)
    if threshold is not None and any(r.label in (0, 1) for r in graded):
        fig = referral_figures(graded, float(threshold))
        print(f"referral at vCDR {threshold}: AUC {auc(graded):.3f}, sensitivity {fig['sensitivity']:.3f}, "
              f"specificity {fig['specificity']:.3f} ({fig['n_glaucoma']} glaucoma, {fig['n_normal']} normal, gradable)")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
