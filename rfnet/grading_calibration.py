"""Derive a model's minimum disc score (``rfnet.min_disc_score``) from cross-validation.

    python -m rfnet.grading_calibration --per-image eval_f0/per_image.csv eval_f1/per_image.csv ... \\
        --checkpoint runs/f0/checkpoint_last.pt [--margin 0.5] [--images /path/to/real/images] [--json out.json]

Inputs: the ``per_image.csv`` that ``rfnet.evaluate --fold K`` writes for each held-out fold (the
detection score of every held-out image, and its disc Dice), and optionally checkpoints whose
scores on generated non-fundus inputs (``rfnet.data.junk``: black, white, grey, noise, a
landscape, a tiny image, a strip, a fundus whose disc the edge cuts) are measured.

Rule: the proposed threshold is ``margin x`` the lowest score of a held-out image whose
detection found the true disc (disc Dice >= ``--min-dice``); detections that missed the disc
are listed apart (their CDR is wrong anyway, and being ungradable is the right outcome for
them). The two distributions are printed, with what the threshold rejects among the junk
images by score alone and which verdict the full gradability check gives each of them (image
checks first: rfnet.common.gradability). ``--images`` adds the image measures of a folder of
real photographs against the image-level thresholds.

Set the result with ``python export/export_onnx.py ... --min-disc-score X`` (or
``--set grading.min_disc_score=X`` when training). Exit status: 0 done, 2 bad input.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rfnet.common import gradability as G
from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.fileio import atomic_write_json
from rfnet.errors import RFNetError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """One held-out image of a per_image.csv."""

    name: str
    score: float
    dice_disc: float
    source: str


def read_per_image(paths: Sequence[Path]) -> list[HeldOut]:
    """The (name, score, disc Dice) rows of ``rfnet.evaluate``'s per_image.csv files."""
    rows: list[HeldOut] = []
    for path in paths:
        try:
            with open(path, newline="") as fh:
                for i, r in enumerate(csv.DictReader(fh), start=2):
                    try:
                        rows.append(HeldOut(r["name"], float(r["score"]), float(r["dice_disc"]), str(path)))
                    except (KeyError, TypeError, ValueError) as exc:
                        raise UsageError(f"{path}: line {i} lacks a name, score or dice_disc ({exc}); "
                                         f"pass the per_image.csv that rfnet.evaluate writes") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not rows:
        raise UsageError("no held-out images in the per_image.csv files given")
    return rows


def propose(true_scores: Sequence[float], margin: float) -> float:
    """``margin x min(true_scores)``, rounded down to 3 decimals (never above the rule)."""
    if not true_scores:
        raise UsageError("no held-out detection found its disc: nothing to calibrate on")
    return math.floor(margin * min(true_scores) * 1000) / 1000


def describe(values: Sequence[float]) -> str:
    a = np.asarray(values, np.float64)
    return (f"min {a.min():.4f}  5% {np.percentile(a, 5):.4f}  median {np.median(a):.4f}  max {a.max():.4f}"
            if a.size else "none")


def junk_scores(checkpoint: Path, threads: int) -> list[dict[str, Any]]:
    """Score and full verdict (at threshold 0, i.e. everything but the score) of each junk image."""
    import torch

    from rfnet.checkpoint import load_model
    from rfnet.common.segment import Segmenter
    from rfnet.data.junk import cut_disc_fundus, junk_images
    from rfnet.torch_backend import TorchBackend

    if not checkpoint.is_file():
        raise UsageError(f"{checkpoint}: no such checkpoint file")
    torch.set_num_threads(max(1, threads))
    model, cfg = load_model(checkpoint, "cpu")
    images = {**junk_images(seed=0), "cut_disc": cut_disc_fundus(seed=0)[0]}
    out = []
    with TorchBackend.from_model(model, cfg, "cpu") as backend:
        core = Segmenter(backend, min_score=0.0)
        for name, image in images.items():
            (r,) = core.process_batch([image])
            out.append({"checkpoint": str(checkpoint), "image": name, "score": r.segmentation.score,
                        "verdict_without_score": r.grade.reason or "gradable"})
    return out


def image_measures(folder: Path) -> list[dict[str, Any]]:
    """Image measures and image-level verdict of every image in ``folder``."""
    from rfnet.common.imageio import list_images, read_image

    rows = []
    for p in list_images(folder, recursive=True):
        q = G.measure_image(read_image(p))
        rows.append({"image": p.name, "short_side": min(q.height, q.width), "brightness": q.brightness,
                     "contrast": q.contrast, "red_fraction": q.red_fraction,
                     "verdict": G.grade_image(q).reason or "gradable"})
    if not rows:
        raise UsageError(f"{folder}: no images")
    return rows


def _print_held_out(held: list[HeldOut], true: list[HeldOut], missed: list[HeldOut], min_dice: float) -> None:
    print(f"held-out images: {len(held)} from {len({h.source for h in held})} per_image.csv file(s)")
    print(f"  detections that found the disc (disc Dice >= {min_dice}): {len(true)}; "
          f"scores {describe([h.score for h in true])}")
    for h in sorted(true, key=lambda h: h.score)[:5]:
        print(f"    lowest: {h.name:<24} score {h.score:.4f}  disc Dice {h.dice_disc:.4f}")
    if missed:
        print(f"  detections that missed the disc (Dice < {min_dice}; not used): "
              + ", ".join(f"{h.name} {h.score:.4f} (Dice {h.dice_disc:.2f})" for h in missed))


def _print_junk(junk: list[dict[str, Any]], threshold: float) -> None:
    print(f"generated non-fundus inputs: scores {describe([j['score'] for j in junk])}")
    for j in junk:
        by_score = "rejected by the score" if j["score"] < threshold else "ABOVE the threshold"
        print(f"  {j['image']:<10} score {j['score']:.4f}  {by_score:<22} verdict without the score: "
              f"{j['verdict_without_score']}")
    leak = [j["image"] for j in junk if j["score"] >= threshold and j["verdict_without_score"] == "gradable"]
    print("  every junk input is rejected (by its score or by an image or detection check)" if not leak else
          f"  NOT rejected: {', '.join(leak)} -- the gradability checks need work before this model is deployed")


def _print_images(rows: list[dict[str, Any]]) -> None:
    print(f"image measures of {len(rows)} images (thresholds: short side >= {G.MIN_SIDE_PX}, brightness >= "
          f"{G.MIN_BRIGHTNESS:g}, contrast >= {G.MIN_CONTRAST:g}, red fraction >= {G.MIN_RED_FRACTION:g}):")
    for key in ("short_side", "brightness", "contrast", "red_fraction"):
        print(f"  {key:<13} {describe([r[key] for r in rows])}")
    flagged = [f"{r['image']} ({r['verdict']})" for r in rows if r["verdict"] != "gradable"]
    print(f"  flagged by the image checks: {', '.join(flagged) if flagged else 'none'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rfnet.grading_calibration", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-image", nargs="+", type=Path, required=True,
                   help="per_image.csv of rfnet.evaluate on each held-out fold")
    p.add_argument("--checkpoint", nargs="*", type=Path, default=[],
                   help="checkpoint(s) whose scores on generated non-fundus inputs are measured")
    p.add_argument("--margin", type=float, default=0.5,
                   help="proposed threshold = margin x the lowest held-out true-disc score (default 0.5)")
    p.add_argument("--min-dice", type=float, default=0.5,
                   help="a held-out detection found its disc when its disc Dice is at least this (default 0.5)")
    p.add_argument("--images", type=Path, default=None,
                   help="also measure the images of this folder (real photographs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for --checkpoint (default 1)")
    p.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if not 0.0 < args.margin <= 1.0:
            raise UsageError(f"--margin must be in (0, 1], got {args.margin}")
        held = read_per_image(args.per_image)
        true = [h for h in held if h.dice_disc >= args.min_dice]
        missed = [h for h in held if h.dice_disc < args.min_dice]
        threshold = propose([h.score for h in true], args.margin)
        junk = [j for c in args.checkpoint for j in junk_scores(c, args.threads)]
        images = image_measures(args.images) if args.images is not None else []
    except (RFNetError, OSError) as exc:
        log.error("%s", exc)
        return ExitCode.USAGE
    _print_held_out(held, true, missed, args.min_dice)
    if junk:
        _print_junk(junk, threshold)
    if images:
        _print_images(images)
    lowest = min(true, key=lambda h: h.score)
    print(f"proposed rfnet.min_disc_score = {args.margin:g} x {lowest.score:.4f} ({lowest.name}) = {threshold:.3f}")
    print(f"  set it: python export/export_onnx.py ... --min-disc-score {threshold:.3f}")
    if args.json is not None:
        atomic_write_json(args.json, {
            "proposed_min_disc_score": threshold, "margin": args.margin, "min_dice": args.min_dice,
            "lowest_true_disc": {"name": lowest.name, "score": lowest.score, "source": lowest.source},
            "held_out": [h.__dict__ for h in held], "junk": junk, "images": images})
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
