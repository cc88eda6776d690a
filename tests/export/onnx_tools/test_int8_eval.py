"""export/onnx_tools/int8_eval.py: the evaluation images of the INT8 check and its Dice bookkeeping."""
from __future__ import annotations

from pathlib import Path

import pytest

from rfnet.export.onnx_tools.int8_eval import EvalReport, dataset_fold_images
from rfnet.data import load_dataset
from rfnet.data.splits import kfold_split


def test_fold_images_are_the_held_out_part_with_ground_truth(calib_dir: Path) -> None:
    names = load_dataset("folder", calib_dir).names
    held_out = kfold_split(names, 4, 0)[1][1]
    items = dataset_fold_images("folder", calib_dir, None, 1, 4, 0, None)
    assert sorted(it.name for it in items) == sorted(held_out)
    assert all(it.disc is not None and it.cup is not None and it.image.ndim == 3 for it in items)
    assert len(dataset_fold_images("folder", calib_dir, None, None, 4, 0, 3)) == 3  # no fold: first N
    with pytest.raises(ValueError, match="--eval-fold must be in 0..3"):
        dataset_fold_images("folder", calib_dir, None, 4, 4, 0, None)


def test_dice_drop_is_the_worst_class_against_ground_truth() -> None:
    gt = {"fp32": {"disc": 0.95, "cup": 0.80}, "int8": {"disc": 0.96, "cup": 0.785}}
    rep = EvalReport(num_images=2, agree_disc=0.99, agree_cup=0.97, gt=gt, fps_fp32=1.0, fps_int8=2.0)
    assert rep.dice_drop() == pytest.approx(0.015)
    no_gt = EvalReport(num_images=2, agree_disc=0.99, agree_cup=0.97, gt=None, fps_fp32=1.0, fps_int8=2.0)
    assert no_gt.dice_drop() == pytest.approx(0.03)  # without ground truth: 1 - agreement
