"""Evaluate a trained RF-Net checkpoint on a dataset split.

``python -m rfnet.evaluate --checkpoint runs/X/checkpoint_best.pt --dataset refuge
--data-root REFUGE --split validation --out eval/X``

Writes to ``--out`` (atomically, file by file):

* ``per_image.csv``: name, Dice / IoU of disc and cup, mIoU, vCDR predicted / ground truth
  (REFUGE column-count definition and the extent definition) and absolute error, hCDR, area
  CDR, detection score, the gradability verdict (``gradable``, ``reason``), glaucoma label and
  expert CDR when the dataset has them. The predicted CDRs and their errors are empty for an
  image that is not gradable (``rfnet.common.gradability``);
* ``summary.json``: mean and std per metric (``metrics``: Dice and IoU over every image, CDR
  errors over gradable images; ``metrics_gradable``: everything over gradable images), the
  gradable rate and the count of each reason, AUC and sensitivity at 85 % specificity of the
  predicted vCDR (gradable images) when glaucoma labels exist, skipped items and data problems;
* ``segmentation/<name>.bmp``: REFUGE submission format, 8-bit grey at the original image
  size, 0 = cup, 128 = disc rim, 255 = background (the official evaluator's input). Written for
  every image, gradable or not, so the evaluator scores the whole set; the ones that are not
  gradable are listed in per_image.csv and summary.json (``ungradable``);
* ``overlays/<name>.jpg``: disc (green) and cup (blue) contours on the image, the
  prediction beside the ground truth; "not gradable: <reason>" written on it when so.

Prints a table of mean +- std per metric, over all images and over gradable ones, and the
gradable rate. Unreadable items are skipped and counted (``--strict`` fails instead). Exit
status (``rfnet.common.cli.ExitCode``): 0 ok, 1 a bad item in --strict mode, 2 bad arguments or
inputs (data root, checkpoint, output folder). ``--min-score`` overrides the checkpoint's minimum
disc score (``grading.min_disc_score``).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.common.cli import ExitCode, add_test_settings_arguments, setup_logging
from rfnet.crossval import WRONG_DICE, WRONG_VCDR, by_dataset, fold_stats, is_wrong, markdown_table
from rfnet.common.fileio import OutputExistsError, atomic_write_json, atomic_write_text
from rfnet.common.gradability import apply_grading_file
from rfnet.common.report import ensure_thumbnails, write_report
from rfnet.common.imageio import write_image
from rfnet.common.metrics import cdr_agreement, glaucoma_classification, to_refuge_seg
from rfnet.common.postprocess import Segmentation
from rfnet.common.viz import overlay
from rfnet.data import Sample, SampleError
from rfnet.data.mixture import load_mixture
from rfnet.data.splits import held_out_fold
from rfnet.training.datasets import DataSelection, add_data_arguments, data_specs
from rfnet.errors import RFNetError, UsageError

log = logging.getLogger(__name__)

#: Rows of the printed table: (label, per-image key).
TABLE = (
    ("Dice disc", "dice_disc"),
    ("Dice cup", "dice_cup"),
    ("IoU disc", "iou_disc"),
    ("IoU cup", "iou_cup"),
    ("mIoU", "miou"),
    ("vCDR abs. error (REFUGE)", "vcdr_ae"),
    ("vCDR abs. error (extent)", "vcdr_extent_ae"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rfnet.evaluate",
        description=__doc__.split("\n\n")[0],
        epilog="outputs: per_image.csv, summary.json, segmentation/<name>.bmp (REFUGE 0/128/255), overlays/<name>.jpg",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint written by rfnet.train (checkpoint_best.pt)")
    add_data_arguments(p, required_unless="--data")
    p.add_argument("--split", help="split to evaluate (REFUGE: train|validation|test; folder: ROOT/<split>/ or ROOT)")
    p.add_argument("--fold", type=int, help="evaluate only the validation fold K of a k-fold split (as in rfnet.train)")
    p.add_argument("--folds", type=int, default=5, help="number of folds for --fold (default 5)")
    p.add_argument("--seed", type=int, default=0, help="split seed for --fold; use the training run's --seed (default 0)")
    p.add_argument("--out", required=True, help="output folder (new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out, replacing its files")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=2, help="images per forward pass (default 2)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold (default 0.5)")
    p.add_argument("--min-score", type=float, default=None,
                   help="minimum disc score of a gradable image (default: the checkpoint's grading.min_disc_score)")
    p.add_argument("--grading", metavar="FILE",
                   help="score with this verdict instead of the checkpoint's (a JSON of min_disc_score, limits, "
                        "referral_vcdr, as python -m rfnet.screening_calibration writes; e.g. the limits off to "
                        "calibrate them: {\"min_disc_score\": 0, \"limits\": {\"max_disc_fraction\": 1}})")
    p.add_argument("--ellipse", action="store_true", help="fit ellipses to disc and cup (post-processing option)")
    add_test_settings_arguments(p)
    p.add_argument("--tta", action="store_true",
                   help="test-time flip: also run each image mirrored left-right and merge (twice the model time)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay images")
    p.add_argument("--no-segmentations", action="store_true", help="do not write REFUGE BMPs")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html (the screening report with predicted against true vCDR and ROC)")
    p.add_argument("--strict", action="store_true", help="fail on the first bad item instead of skipping it")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: CPUs available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def format_table(summary: dict[str, tuple[float, float]], n: int,
                 gradable: dict[str, tuple[float, float]] | None = None, n_gradable: int = 0) -> str:
    """Mean +- std per metric as an aligned text table; with ``gradable``, a second pair of
    columns over the gradable images (CDR errors exist for those only)."""
    head = f"{'metric':<26} {'mean':>8} {'std':>8}"
    if gradable is not None:
        head += f"   {'gradable':>8} {'std':>8}"
    lines = [head + f"   (n = {n}" + (f", gradable {n_gradable})" if gradable is not None else ")")]
    for label, key in TABLE:
        mean, std = summary.get(key, (math.nan, math.nan))
        line = f"{label:<26} {mean:>8.4f} {std:>8.4f}"
        if gradable is not None:
            g_mean, g_std = gradable.get(key, (math.nan, math.nan))
            line += f"   {g_mean:>8.4f} {g_std:>8.4f}"
        lines.append(line)
    return "\n".join(lines)


def _csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", restval="", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _classification(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    labelled = [r for r in rows if r.get("label") in (0, 1) and r.get("vcdr_pred") is not None]
    if not labelled or len({r["label"] for r in labelled}) < 2:
        return None
    scores = np.array([r["vcdr_pred"] for r in labelled], dtype=np.float64)
    labels = np.array([r["label"] for r in labelled], dtype=np.int64)
    out = glaucoma_classification(scores, labels)
    out["n"] = float(len(labelled))
    return out


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    out = Path(args.out)
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
            raise OutputExistsError(f"{out}: not empty; pass --overwrite to replace its files")
        model, cfg, device, ds = _load(args)
    except (RFNetError, OSError) as exc:
        log.error("%s", exc)
        return ExitCode.USAGE
    try:
        result = _evaluate(args, model, cfg, device, ds, out)
    except SampleError as exc:
        log.error("%s (--strict)", exc)
        return ExitCode.FAILED
    _write_summary(args, out, cfg, ds, result)
    if not args.no_report:
        try:
            ensure_thumbnails(out)
            log.info("report: %s", write_report(out, f"Evaluation: {out.name}"))
        except (OSError, ValueError) as exc:  # the evaluation stands; only the page is missing
            log.warning("%s: report.html not written: %s", out, exc)
    if result.skipped:
        log.warning("%d item(s) skipped as unreadable or invalid: %s", len(result.skipped), ", ".join(result.skipped))
    if ds.problems:
        log.warning("%s", ds.report())
    log.info("wrote %s", out)
    return ExitCode.OK


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(model, config, device, dataset) from the arguments; RFNetError naming what is wrong."""
    import torch

    from rfnet.checkpoint import CheckpointError, load_model
    from rfnet.training.run import resolve_device

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    elif hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:  # torch's own message for a malformed device string, or no GPU
        raise UsageError(str(exc)) from None
    ds = load_mixture(DataSelection(args.dataset, args.data_root, args.split,
                                    data=data_specs(args.data, args.data_config)).sources(),
                      strict=args.strict)
    if args.min_score is not None and not 0.0 <= args.min_score < 1.0:
        raise UsageError(f"--min-score must be in [0, 1), got {args.min_score}")
    if args.fold is not None:  # the same held-out names as ``rfnet.train --fold K --folds N --seed S``
        ds = held_out_fold(ds, args.fold, args.folds, args.seed)
    ckpt_path = Path(args.checkpoint)
    if not ckpt_path.is_file():
        raise UsageError(f"{ckpt_path}: no such checkpoint file")
    try:
        model, cfg = load_model(ckpt_path, device, proposals=args.proposals, crop_margin=args.crop_margin)
    except UsageError:
        raise
    except Exception as exc:  # corrupt / foreign file: say which one
        raise CheckpointError(f"{ckpt_path}: cannot load checkpoint ({exc})") from exc
    if args.grading is not None:
        apply_grading_file(cfg.grading, Path(args.grading))
    log.info("%s (%s preset, input %d) on %s: %d items", ckpt_path, cfg.name, cfg.input.size, ds, len(ds))
    return model, cfg, device, ds


def _evaluate(args: argparse.Namespace, model: Any, cfg: Any, device: Any, ds: Any, out: Path) -> Any:
    """Predict and score every item, writing the REFUGE BMPs and overlays as it goes; the EvalResult."""
    from rfnet.predict import CASE_COLUMNS, evaluate_dataset

    seg_dir, ov_dir = out / "segmentation", out / "overlays"

    def write_case(sample: Sample, seg: Segmentation, row: dict[str, Any]) -> None:
        stem = _safe_name(sample.name)
        if not args.no_segmentations:
            write_image(seg_dir / f"{stem}.bmp", to_refuge_seg(seg.disc, seg.cup, seg.bounds()))
        if not args.no_overlays:
            # One label per panel: a second one drawn over "prediction" would be unreadable.
            note = "" if row["gradable"] else f"not gradable: {row['reason']}"
            image = overlay(sample.image, seg.disc, seg.cup, sample.disc, sample.cup, note=note)
            write_image(ov_dir / f"{stem}.jpg", image)

    result = evaluate_dataset(
        model, ds, cfg, device, batch_size=args.batch_size, threshold=args.threshold, ellipse=args.ellipse, tta=args.tta,
        progress=not args.no_progress, desc="evaluate", on_case=write_case, min_score=args.min_score,
    )
    atomic_write_text(out / "per_image.csv", _csv_text(result.rows, CASE_COLUMNS))
    return result


def _write_summary(args: argparse.Namespace, out: Path, cfg: Any, ds: Any, result: Any) -> None:
    """summary.json, then the table (and the glaucoma screening figures) on stdout."""
    classification = _classification(result.rows)
    per_dataset = {name: fold_stats(rows) | {"glaucoma_classification": _classification(rows)}
                   for name, rows in by_dataset(result.rows).items()}
    summary = {
        "checkpoint": str(args.checkpoint),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": args.dataset,
        "data_root": None if args.data_root is None else str(args.data_root),
        "data": args.data,
        "split": ds.split,
        "preset": cfg.name,
        "threshold": args.threshold,
        "min_disc_score": cfg.grading.min_disc_score if args.min_score is None else args.min_score,
        "ellipse": bool(args.ellipse),
        "tta": bool(args.tta),
        "proposals": cfg.rpn.post_nms_top_n_test,
        "crop_margin": cfg.input.crop_margin,
        "n_items": len(ds),
        "n_evaluated": len(result.rows),
        "n_gradable": result.n_gradable,
        "gradable_rate": result.gradable_rate,
        "ungradable_reasons": dict(sorted(result.reasons.items())),
        "ungradable": [{"name": r["name"], "reason": r["reason"]} for r in result.rows if not r["gradable"]],
        "metrics": _stats(result.summary),
        "metrics_gradable": _stats(result.gradable_summary),
        "vcdr_agreement": vcdr_agreement(result.rows),
        "glaucoma_classification": classification,
        "per_dataset": per_dataset,
        "skipped": result.skipped,
        "no_disc_detected": result.no_disc,
        "problems": [str(p) for p in ds.problems],
    }
    atomic_write_json(out / "summary.json", _json_safe(summary))
    print(format_table(result.summary, len(result.rows), result.gradable_summary, result.n_gradable))
    print(f"gradable: {result.n_gradable} of {len(result.rows)} images ({result.gradable_rate:.1%})"
          + (" - not gradable: " + ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items()))
             if result.reasons else ""))
    for ref, pred, _, what in AGREEMENTS:
        agree = summary["vcdr_agreement"][ref]  # type: ignore[index]
        if agree["n"]:
            print(f"{pred} vs {what} (gradable, n = {agree['n']}): MAE {agree['mae']:.4f}, "
                  f"Pearson r {agree['pearson']:.4f}")
    wrong = sum(1 for r in result.rows if r["gradable"] and is_wrong(r))
    print(f"wrong but graded (disc Dice < {WRONG_DICE} or vCDR error > {WRONG_VCDR}): {wrong} of {len(result.rows)}")
    if len(per_dataset) > 1:
        print("\nper dataset:\n" + markdown_table([(k, v) for k, v in per_dataset.items()], fold_stats(result.rows)))
    if classification is not None:
        print(
            f"glaucoma (predicted vCDR as risk, n = {int(classification['n'])}): AUC {classification['auc']:.4f}, "
            f"sensitivity at 85% specificity {classification['sensitivity_at_85_specificity']:.4f}"
        )


#: vcdr_agreement's comparisons: (name, predicted column, reference column, what it is).
AGREEMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("masks", "vcdr_pred", "vcdr_gt", "the masks"),
    ("experts", "vcdr_pred", "expert_cdr", "the experts' mean"),
    ("experts_scaled", "vcdr_expert_pred", "expert_cdr", "the experts' mean, on the experts' scale"),
)


def vcdr_agreement(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """REFUGE vCDR of the gradable images against the ground-truth masks' and, where the dataset
    has them (Drishti-GS), the experts' mean CDR: MAE and Pearson correlation; ``experts_scaled``:
    the vCDR on the experts' scale (models with ``rfnet.vcdr_expert_scale``) against the same."""
    out = {}
    for ref, pred, key, _ in AGREEMENTS:
        pairs = [(float(r[pred]), float(r[key])) for r in rows
                 if r.get("gradable", True) and r.get(pred, None) not in ("", None) and r.get(key, "") not in ("", None)]
        out[ref] = cdr_agreement([p for p, _ in pairs], [g for _, g in pairs])
    return out


def _stats(summary: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    return {k: {"mean": m, "std": s} for k, (m, s) in sorted(summary.items())}


def _json_safe(obj: Any) -> Any:
    """NaN -> None so summary.json is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


if __name__ == "__main__":
    raise SystemExit(main())
