"""Summarise a k-fold cross-validation: ``python -m rfnet.crossval EVAL_DIR [EVAL_DIR ...]``.

Each ``EVAL_DIR`` is the ``--out`` of one ``rfnet.evaluate --fold K`` run (its
``per_image.csv``). Prints a Markdown table with one row per fold and the pooled mean over
every held-out image: disc / cup Dice, mIoU, vCDR MAE against the masks and against the
experts' mean CDR, and the Pearson correlation of the predicted vCDR with the experts' (and
with the masks'), all over gradable images for the CDR columns; Dice over all images. With
``--overlays OUT`` it also writes crops of the best and worst cases by cup Dice (prediction
left, ground truth right), taken from the evaluations' overlay images. With ``--expert-scale``
it adds what the vCDR would score on the experts' scale: for each fold, a line from the masks'
vCDR to the experts' mean CDR is fitted on the ground truth of the *other* folds' images (the
fold's training images when every fold is given; ``rfnet.common.metrics.fit_expert_scale``) and
applied to the fold's predicted vCDR. Its last two columns are the model's own line instead
(``vcdr_expert_pred``, from a checkpoint trained with ``train.fit_expert_scale``: the line its
trainer fitted on its training images), as ``rfnet.evaluate`` reports it; empty without one.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.fileio import atomic_write_json
from rfnet.common.imageio import ImageReadError, read_image, read_mask, write_image
from rfnet.common.metrics import cdr_agreement, fit_expert_scale, from_refuge_seg, to_expert_scale

log = logging.getLogger(__name__)

COLUMNS = ("images", "gradable", "dice_disc", "dice_cup", "miou", "vcdr_mae_masks", "vcdr_mae_experts",
           "pearson_experts", "pearson_masks", "wrong_graded", "well_kept")
#: A result is *wrong* when its disc Dice is below WRONG_DICE or its vCDR is off by more than
#: WRONG_VCDR; "wrong but graded" counts the gradable ones, "well kept" is the share of the
#: images segmented well (not wrong) that stay gradable.
WRONG_DICE = 0.8
WRONG_VCDR = 0.2
_COUNTS = ("images", "gradable", "wrong_graded")


def cell_float(v: Any) -> float:
    """A per-image CSV cell as a float; NaN for an empty or missing cell."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_rows(eval_dir: Path) -> list[dict[str, Any]]:
    """The per-image rows of one evaluation (``FileNotFoundError`` / ``ValueError`` naming the file)."""
    path = eval_dir / "per_image.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"name", "dice_disc", "dice_cup", "miou", "vcdr_pred", "vcdr_gt"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ValueError(f"{path}: not a per_image.csv of rfnet.evaluate (missing {sorted(missing)})")
    return rows


def _gradable(row: dict[str, Any]) -> bool:
    return str(row.get("gradable", "1")) in ("1", "True", "true")


def _pairs(rows: list[dict[str, Any]], pred: str, ref: str, gradable_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``(pred, ref)`` values of the rows that have both (and are gradable, with ``gradable_only``)."""
    keep = [r for r in rows if r.get(pred, "") not in ("", None) and r.get(ref, "") not in ("", None)
            and (not gradable_only or _gradable(r))]
    return np.array([cell_float(r[pred]) for r in keep]), np.array([cell_float(r[ref]) for r in keep])


def is_wrong(row: dict[str, Any]) -> bool:
    """Disc Dice below :data:`WRONG_DICE` or vCDR error above :data:`WRONG_VCDR` (the error whatever
    the verdict, ``vcdr_ae_all``, where the row has it)."""
    err = cell_float(row.get("vcdr_ae_all", row.get("vcdr_ae")))
    return cell_float(row["dice_disc"]) < WRONG_DICE or not err <= WRONG_VCDR


def fold_stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The table's columns for a set of per-image rows."""
    grad = [r for r in rows if _gradable(r)]
    well = [r for r in rows if not is_wrong(r)]
    masks = cdr_agreement(*_pairs(rows, "vcdr_pred", "vcdr_gt", gradable_only=True))
    experts = cdr_agreement(*_pairs(rows, "vcdr_pred", "expert_cdr", gradable_only=True))
    mean = lambda key: float(np.nanmean([cell_float(r[key]) for r in rows])) if rows else math.nan  # noqa: E731
    return {
        "images": len(rows), "gradable": len(grad), "dice_disc": mean("dice_disc"), "dice_cup": mean("dice_cup"),
        "miou": mean("miou"), "vcdr_mae_masks": masks["mae"], "vcdr_mae_experts": experts["mae"],
        "pearson_experts": experts["pearson"], "pearson_masks": masks["pearson"],
        "wrong_graded": sum(1 for r in grad if is_wrong(r)),
        "well_kept": sum(1 for r in well if _gradable(r)) / len(well) if well else math.nan,
    }


def by_dataset(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by their ``dataset`` column (one group "" for rows without it)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r.get("dataset") or ""), []).append(r)
    return dict(sorted(out.items()))


def markdown_table(folds: list[tuple[str, dict[str, float]]], pooled: dict[str, float]) -> str:
    head = "| fold | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, st in [*folds, ("**all (pooled)**", pooled)]:
        cells = [f"{int(st[c])}" if c in _COUNTS else _num_or_dash(st[c]) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def expert_scale_stats(folds: list[tuple[str, list[dict[str, Any]]]]) -> list[tuple[str, dict[str, float]]]:
    """Per fold and pooled: the line fitted on the other folds' ground truth (``a``, ``b``, ``n_fit``)
    and the predicted vCDR's MAE and mean bias against the experts' mean, raw and mapped."""
    if len(folds) < 2:
        raise ValueError("--expert-scale needs at least two folds (each fold's line is fitted on the others)")
    out, raw_all, mapped_all, exp_all = [], [], [], []
    for i, (name, rows) in enumerate(folds):
        gt, gt_exp = _pairs([r for j, (_, rs) in enumerate(folds) if j != i for r in rs], "vcdr_gt", "expert_cdr",
                            gradable_only=False)
        try:
            a, b = fit_expert_scale(gt, gt_exp)
        except ValueError as exc:
            raise ValueError(f"{name}: no experts' scale from the other folds' ground truth: {exc}") from None
        pred, exp = _pairs(rows, "vcdr_pred", "expert_cdr", gradable_only=True)
        mapped = to_expert_scale(pred, (a, b))
        out.append((name, _scale_row(pred, mapped, exp) | {"a": a, "b": b, "n_fit": float(gt.size)} | _own_line(rows)))
        raw_all.append(pred)
        mapped_all.append(mapped)
        exp_all.append(exp)
    pooled = _scale_row(np.concatenate(raw_all), np.concatenate(mapped_all), np.concatenate(exp_all))
    every = [r for _, rs in folds for r in rs]
    return [*out, ("**all (pooled)**", pooled | {"a": math.nan, "b": math.nan, "n_fit": math.nan} | _own_line(every))]


def _own_line(rows: list[dict[str, Any]]) -> dict[str, float]:
    """MAE and Pearson r against the experts of the model's own ``vcdr_expert_pred`` (NaN without it)."""
    own = cdr_agreement(*_pairs(rows, "vcdr_expert_pred", "expert_cdr", gradable_only=True))
    return {"mae_own": own["mae"], "pearson_own": own["pearson"]}


def _scale_row(raw: np.ndarray, mapped: np.ndarray, exp: np.ndarray) -> dict[str, float]:
    nan = math.nan
    return {"mae_raw": cdr_agreement(raw, exp)["mae"], "mae_scaled": cdr_agreement(mapped, exp)["mae"],
            "bias_raw": float(np.mean(raw - exp)) if exp.size else nan,
            "bias_scaled": float(np.mean(mapped - exp)) if exp.size else nan}


def _num_or_dash(v: float) -> str:
    """A table cell: the value to 4 decimals, or "-" where there is none (NaN)."""
    return "-" if math.isnan(v) else f"{v:.4f}"


def expert_scale_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = ["| fold | line a, b (fitted on n images) | vCDR MAE vs experts: raw | on the experts' scale "
             "| mean bias: raw | on the experts' scale | the model's own line: MAE | its Pearson r |",
             "|---|---|---|---|---|---|---|---|"]
    for name, st in rows:
        fit = "-" if math.isnan(st["a"]) else f"{st['a']:.3f}, {st['b']:+.3f} ({int(st['n_fit'])})"
        lines.append(f"| {name} | {fit} | {st['mae_raw']:.4f} | {st['mae_scaled']:.4f} | {st['bias_raw']:+.4f} "
                     f"| {st['bias_scaled']:+.4f} | {_num_or_dash(st['mae_own'])} | {_num_or_dash(st['pearson_own'])} |")
    return "\n".join(lines)


def _disc_crop(eval_dir: Path, name: str, half: int) -> Any:
    """Prediction | ground truth overlay of ``name``, cropped to a square around the predicted disc."""
    ov = read_image(eval_dir / "overlays" / f"{name}.jpg")
    seg = read_mask(eval_dir / "segmentation" / f"{name}.bmp")
    disc, _ = from_refuge_seg(seg)
    w = ov.shape[1] // 2
    ys, xs = np.nonzero(disc) if disc.any() else (np.array([seg.shape[0] // 2]), np.array([w // 2]))
    cy, cx = int(ys.mean()), int(xs.mean())
    # the square is clipped to one panel: near a small image's edge it would reach into the other
    y0, x0 = max(0, cy - half), max(0, cx - half)
    y1, x1 = min(ov.shape[0], cy + half), min(w, cx + half)
    return np.hstack([ov[y0:y1, x0:x1], ov[y0:y1, w + x0:w + x1]])


def write_cases(rows: list[tuple[Path, dict[str, Any]]], out: Path, n: int = 2, half: int = 320) -> list[Path]:
    """Crops of the ``n`` best and ``n`` worst images by cup Dice into ``out``; their paths."""
    ranked = sorted(rows, key=lambda dr: cell_float(dr[1]["dice_cup"]))
    written = []
    for tag, pick in (("worst", ranked[:n]), ("best", ranked[::-1][:n])):
        for eval_dir, r in pick:
            try:
                crop = _disc_crop(eval_dir, r["name"], half)
            except (ImageReadError, FileNotFoundError) as exc:
                log.warning("no overlay for %s: %s", r["name"], exc)
                continue
            path = out / f"cv_{tag}_{r['name']}_cup{cell_float(r['dice_cup']):.2f}.jpg"
            write_image(path, np.ascontiguousarray(crop[::2, ::2]))  # half size, for documents
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rfnet.crossval", description=__doc__.split("\n\n")[0])
    p.add_argument("eval_dirs", nargs="+", help="rfnet.evaluate output folders, one per fold")
    p.add_argument("--json", help="also write the table as JSON here")
    p.add_argument("--overlays", help="write best / worst case crops into this folder")
    p.add_argument("--expert-scale", action="store_true",
                   help="also map each fold's vCDR to the experts' scale by a line fitted on the other folds' ground truth")
    args = p.parse_args(argv)
    setup_logging()
    folds, fold_rows, pooled_rows = [], [], []
    try:
        for d in map(Path, args.eval_dirs):
            rows = read_rows(d)
            folds.append((d.name, fold_stats(rows)))
            fold_rows.append((d.name, rows))
            pooled_rows += [(d, r) for r in rows]
        scaled = expert_scale_stats(fold_rows) if args.expert_scale else None
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return ExitCode.USAGE
    pooled = fold_stats([r for _, r in pooled_rows])
    print(markdown_table(folds, pooled))
    groups = by_dataset([r for _, r in pooled_rows])
    per_dataset: dict[str, Any] = {}
    if len(groups) > 1 or "" not in groups:
        for name, rows in groups.items():
            per_fold = [(fold, fold_stats(by_dataset(rs).get(name, []))) for fold, rs in fold_rows]
            per_fold = [(fold, st) for fold, st in per_fold if st["images"]]
            per_dataset[name] = {"folds": dict(per_fold), "pooled": fold_stats(rows)}
            print(f"\n{name or 'no dataset column'}:\n" + markdown_table(per_fold, per_dataset[name]["pooled"]))
    if scaled is not None:
        print("\n" + expert_scale_table(scaled))
    if args.json:
        result: dict[str, Any] = {"folds": dict(folds), "pooled": pooled, "per_dataset": per_dataset}
        if scaled is not None:
            result["expert_scale"] = dict(scaled)
        atomic_write_json(Path(args.json), result)
    if args.overlays:
        for path in write_cases(pooled_rows, Path(args.overlays)):
            print(f"wrote {path}")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
