"""INT8 vs FP32 on evaluation images with ONNX Runtime (CPU): the check ``export/quantize.py``
prints and gates on. Torch-free: both models run through the runtime's ONNX Runtime backend and
the shared image -> segmentation core (``rfnet.export.onnx_tools.compare.run_onnx``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rfnet.export.calibration import CalibrationDataError
from rfnet.export.onnx_tools.compare import EvalImage, folder_images, mask_agreement, run_onnx, synthetic_images
from rfnet.common.cli import ExitCode
from rfnet.common.imageio import list_images
from rfnet.common.metrics import agreement
from rfnet.data.mixture import parse_data_spec
from rfnet.data.splits import kfold_split
from rfnet.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """INT8 vs FP32 on the evaluation images (ONNX Runtime, CPU)."""

    num_images: int
    agree_disc: float  # mean Dice of INT8 masks vs FP32 masks
    agree_cup: float
    gt: dict[str, dict[str, float]] | None  # {"fp32"|"int8": {"disc": dice, "cup": dice}} vs ground truth
    fps_fp32: float
    fps_int8: float

    def dice_drop(self) -> float:
        """Largest Dice loss of INT8 relative to FP32 (vs ground truth when known, else agreement)."""
        if self.gt is not None:
            return max(self.gt["fp32"][c] - self.gt["int8"][c] for c in ("disc", "cup"))
        return max(1.0 - self.agree_disc, 1.0 - self.agree_cup)


def _gt_dice(segs: list, items: Sequence[EvalImage]) -> dict[str, float] | None:
    pairs = [(s, it) for s, it in zip(segs, items) if it.disc is not None and it.cup is not None]
    if not pairs:
        return None
    return {
        "disc": float(np.mean([agreement(s.disc, it.disc) for s, it in pairs])),
        "cup": float(np.mean([agreement(s.cup, it.cup) for s, it in pairs])),
    }


def evaluate(fp32_path: Path, int8_path: Path, items: Sequence[EvalImage], threads: int = 0,
             fps_iters: int = 10) -> EvalReport:
    """Run both models with ONNX Runtime (CPU) on ``items``; Dice agreement, GT Dice, FPS.

    Each model's preprocessing comes from its own ``rfnet.*`` metadata.
    """
    images = [it.image for it in items]
    r32 = run_onnx(fp32_path, images, threads=threads, fps_iters=fps_iters)
    r8 = run_onnx(int8_path, images, threads=threads, fps_iters=fps_iters)
    agree = mask_agreement(r8.segmentations, r32.segmentations)
    g32, g8 = _gt_dice(r32.segmentations, items), _gt_dice(r8.segmentations, items)
    gt = {"fp32": g32, "int8": g8} if g32 is not None and g8 is not None else None
    return EvalReport(
        num_images=len(items),
        agree_disc=agree.disc_mean,
        agree_cup=agree.cup_mean,
        gt=gt,
        fps_fp32=float(r32.fps or 0.0),
        fps_int8=float(r8.fps or 0.0),
    )


def print_eval(title: str, rep: EvalReport) -> None:
    print(f"{title}: {rep.num_images} images")
    print(f"  INT8 vs FP32 mask agreement Dice: disc {rep.agree_disc:.6f}  cup {rep.agree_cup:.6f}")
    if rep.gt is not None:
        for prec in ("fp32", "int8"):
            print(f"  {prec} vs ground truth Dice: disc {rep.gt[prec]['disc']:.6f}  cup {rep.gt[prec]['cup']:.6f}")
    print(f"  ONNX Runtime CPU model FPS (batch as exported): fp32 {rep.fps_fp32:.2f}  int8 {rep.fps_int8:.2f}")


def dataset_fold_images(name: str, root: Path, split: str | None, fold: int | None, folds: int, seed: int,
                        limit: int | None, options: dict[str, Any] | None = None) -> list[EvalImage]:
    """Images + ground truth of a dataset (``options``: its loader's, e.g. RIM-ONE DL's
    ``partition``), or of its held-out ``fold`` (kfold by name)."""
    from rfnet.data import held_out_fold, load_dataset

    ds = load_dataset(name, root, split, **(options or {}))
    if fold is not None:
        ds = held_out_fold(ds, fold, folds, seed, option="--eval-fold")
    items = []
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        sample = ds.get(i)
        if sample is not None:
            items.append(EvalImage(sample.name, sample.image, sample.disc, sample.cup))
    if not items:
        raise UsageError(f"{root}: no usable {name} images for the evaluation")
    return items


@dataclass
class EvalSet:
    """Images INT8 is judged on: ``gate`` (its Dice drop decides the exit code), ``held_out`` (its
    images are left out of the calibration)."""

    title: str
    items: list[EvalImage]
    gate: bool = True
    held_out: bool = False


@dataclass(frozen=True)
class GateOptions:
    """What the INT8 check is run on and how it judges: ``quantize.py``'s options of the same names
    (their defaults are defined there, once).

    Exactly one source of evaluation images applies: ``eval_data`` (``--data`` specs, one gated
    set each, a fold of each with ``eval_fold``), else ``eval_dataset`` (with ``eval_root``, a
    fold of it with ``eval_fold``), else ``eval_dir``, else the ``holdout`` share of ``calib_dir``.
    """

    onnx: Path
    output: Path
    calib_dir: Path
    eval_data: list[str] | None
    eval_dataset: str | None
    eval_root: Path | None
    eval_split: str | None
    eval_fold: int | None
    folds: int
    fold_seed: int
    eval_dir: Path | None
    holdout: float
    num_eval: int
    num_synthetic: int
    seed: int
    threads: int
    fps_iters: int
    max_dice_drop: float

    @classmethod
    def from_args(cls, args: Any) -> "GateOptions":
        """From the parsed command line of ``export/quantize.py`` (attributes named as the fields)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def eval_sets(args: GateOptions) -> list[EvalSet]:
    """The sets INT8 is evaluated on: a dataset (fold), a folder, or the held-out part of the
    calibration folder; plus generated images for information."""
    sets: list[EvalSet] = []
    fold = "all" if args.eval_fold is None else f"fold {args.eval_fold}/{args.folds} (seed {args.fold_seed})"
    if args.eval_data:
        if args.eval_dataset is not None or args.eval_dir is not None:
            raise UsageError("give --eval-data or one of --eval-dataset / --eval-dir, not both")
        for spec in args.eval_data:  # each dataset judged on its own: INT8 may hurt one camera only
            src = parse_data_spec(spec)
            sets.append(EvalSet(f"{src.kind} {src.root} {fold}", dataset_fold_images(
                src.kind, Path(src.root), src.split, args.eval_fold, args.folds, args.fold_seed, args.num_eval,
                src.options), held_out=args.eval_fold is not None))
    elif args.eval_dataset is not None:
        if args.eval_root is None:
            raise UsageError("--eval-dataset needs --eval-root")
        sets.append(EvalSet(f"{args.eval_dataset} {args.eval_root} {fold}", dataset_fold_images(
            args.eval_dataset, args.eval_root, args.eval_split, args.eval_fold, args.folds, args.fold_seed,
            args.num_eval), held_out=args.eval_fold is not None))
    elif args.eval_dir is not None:
        sets.append(EvalSet(f"eval {args.eval_dir}", folder_images(args.eval_dir, args.num_eval)))
    else:
        sets.append(_holdout_set(args))
    if args.num_synthetic > 0:
        sets.append(EvalSet("synthetic images (information only, not gated)",
                            synthetic_images(args.num_synthetic, args.seed, 512), gate=False))
    return sets


def _holdout_set(args: GateOptions) -> EvalSet:
    """Fold 0 of a k-fold split (by name, ``--fold-seed``) of the calibration images, k = 1/--holdout,
    at most --num-eval of them: judged instead of calibrated on."""
    if not 0.0 < args.holdout <= 0.5:
        raise UsageError(f"--holdout must be in (0, 0.5], got {args.holdout}")
    src = args.calib_dir / "images" if (args.calib_dir / "images").is_dir() else args.calib_dir
    try:
        stems = sorted({p.stem for p in list_images(src)})
    except FileNotFoundError as exc:
        raise CalibrationDataError(f"{args.calib_dir}: {exc}") from None
    k = max(2, round(1.0 / args.holdout))
    if len(stems) < 2 * k:
        raise CalibrationDataError(f"{args.calib_dir}: {len(stems)} images are too few to hold out 1/{k} of them "
                                   f"for the INT8 check; pass --eval-dir or --eval-dataset, or --no-eval")
    names = kfold_split(stems, k, args.fold_seed)[0][1][: args.num_eval]
    items = folder_images(args.calib_dir, names=set(names))
    gt = "ground truth from masks/" if all(it.disc is not None for it in items) else "no ground truth: FP32 agreement"
    return EvalSet(f"{len(items)} calibration images held out of the calibration ({gt})", items, held_out=True)


#: Decimals of the Dice figures the gate compares and prints (far below any meaningful difference,
#: so the printed numbers are exactly the ones compared).
GATE_DECIMALS = 6


def evaluate_all(args: GateOptions, eval_sets: list[EvalSet]) -> int:
    """INT8 vs FP32 on every set; FAILED when INT8 loses more than ``--max-dice-drop`` on a gating set."""
    worst, judged = 0.0, []
    for es in eval_sets:
        rep = evaluate(args.onnx, args.output, es.items, args.threads, args.fps_iters)
        print_eval(es.title, rep)
        print(f"  images: {', '.join(it.name for it in es.items)}")
        drop = round(rep.dice_drop(), GATE_DECIMALS)
        print(f"  INT8 Dice drop vs FP32 ({'vs ground truth' if rep.gt is not None else '1 - agreement'}): "
              f"{drop:.{GATE_DECIMALS}f}" + ("" if es.gate else " (not gated)"))
        if es.gate:
            worst = max(worst, drop)
            judged.append(es.title)
    limit = round(args.max_dice_drop, GATE_DECIMALS)
    if worst > limit:
        log.error("INT8 loses %.*f Dice vs FP32 (> --max-dice-drop %.*f) on %s; calibrate on more representative "
                  "images or keep more layers in float (--float-mask-layers)", GATE_DECIMALS, worst, GATE_DECIMALS,
                  limit, "; ".join(judged))
        return ExitCode.FAILED
    print(f"INT8 Dice drop vs FP32: {worst:.{GATE_DECIMALS}f} <= {limit:.{GATE_DECIMALS}f} "
          f"(judged on: {'; '.join(judged)})")
    return ExitCode.OK
