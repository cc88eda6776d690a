"""INT8 vs FP32 on evaluation images with ONNX Runtime (CPU): the check ``export/quantize.py``
prints and gates on. Torch-free: both models run through the runtime's ONNX Runtime backend and
the shared image -> segmentation core (``export.compare.run_onnx``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from export.compare import EvalImage, mask_agreement, run_onnx
from rfnet.common.metrics import agreement
from rfnet.errors import UsageError


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
                        limit: int | None) -> list[EvalImage]:
    """Images + ground truth of a dataset, or of its held-out ``fold`` (kfold by name)."""
    from rfnet.data import held_out_fold, load_dataset

    ds = load_dataset(name, root, split)
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
