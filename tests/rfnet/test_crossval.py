"""rfnet.crossval: per-fold and pooled figures from rfnet.evaluate's per_image.csv files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.common.metrics import to_refuge_seg
from rfnet.crossval import main

FIELDS = ["name", "dice_disc", "dice_cup", "miou", "vcdr_pred", "vcdr_gt", "expert_cdr", "gradable"]


def _fold(root: Path, name: str, rows: list[list[object]], fields: list[str] = FIELDS) -> Path:
    d = root / name
    d.mkdir(parents=True)
    with open(d / "per_image.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        w.writerows(rows)
    for r in rows:
        disc = np.zeros((40, 50), bool)
        disc[10:30, 15:35] = True
        write_image(d / "segmentation" / f"{r[0]}.bmp", to_refuge_seg(disc, np.zeros_like(disc)))
        write_image(d / "overlays" / f"{r[0]}.jpg", np.full((40, 100, 3), 90, np.uint8))
    return d


def test_table_pools_folds_and_writes_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _fold(tmp_path, "f0", [["a1", 0.9, 0.8, 0.7, 0.5, 0.4, 0.45, 1], ["a2", 0.95, 0.6, 0.75, 0.7, 0.8, 0.75, 1]])
    b = _fold(tmp_path, "f1", [["b1", 0.97, 0.9, 0.9, 0.3, 0.35, 0.3, 1], ["b2", 0.0, 0.0, 0.0, "", 0.6, 0.6, 0]])
    assert main([str(a), str(b), "--json", str(tmp_path / "cv.json"), "--overlays", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    pooled = next(line for line in out.splitlines() if "pooled" in line).split("|")
    assert pooled[2].strip() == "4" and pooled[3].strip() == "3"  # images, gradable
    assert float(pooled[5]) == pytest.approx((0.8 + 0.6 + 0.9 + 0.0) / 4, abs=1e-4)  # Dice over every image
    assert float(pooled[6 + 1]) == pytest.approx((0.1 + 0.1 + 0.05) / 3, abs=1e-4)  # vCDR MAE vs masks, gradable only
    assert float(pooled[8 + 1]) == pytest.approx(np.corrcoef([0.5, 0.7, 0.3], [0.45, 0.75, 0.3])[0, 1], abs=1e-4)
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert {n.split("_cup")[0] for n in names} == {"cv_best_b1", "cv_best_a1", "cv_worst_b2", "cv_worst_a2"}
    assert (tmp_path / "cv.json").is_file()


def test_missing_or_foreign_folder_is_a_usage_error(tmp_path: Path) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "per_image.csv").write_text("a,b\n1,2\n")
    assert main([str(tmp_path / "x")]) == 2


def test_expert_scale_fits_on_the_other_folds_ground_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Ground truth on a known line: experts = 0.5 * masks + 0.3 in every fold.
    def row(name: str, pred: float, gt: float) -> list[object]:
        return [name, 0.9, 0.8, 0.7, pred, gt, 0.5 * gt + 0.3, 1]

    a = _fold(tmp_path, "f0", [row("a1", 0.4, 0.4), row("a2", 0.6, 0.7), row("a3", 0.5, 0.5)])
    b = _fold(tmp_path, "f1", [row("b1", 0.2, 0.2), row("b2", 0.8, 0.9), row("b3", 0.3, 0.35)])
    assert main([str(a), str(b), "--expert-scale", "--json", str(tmp_path / "cv.json")]) == 0
    out = capsys.readouterr().out
    f0 = next(line for line in out.splitlines() if line.startswith("| f0 | 0.500, +0.300 (3)")).split("|")
    # f0's predictions mapped by the line fitted on f1: 0.5 p + 0.3 against 0.5 gt + 0.3.
    expect_scaled = np.mean(np.abs(0.5 * np.array([0.4, 0.6, 0.5]) - 0.5 * np.array([0.4, 0.7, 0.5])))
    expect_raw = np.mean(np.abs(np.array([0.4, 0.6, 0.5]) - (0.5 * np.array([0.4, 0.7, 0.5]) + 0.3)))
    assert float(f0[3]) == pytest.approx(expect_raw, abs=1e-4)
    assert float(f0[4]) == pytest.approx(expect_scaled, abs=1e-4)
    assert "expert_scale" in json.loads((tmp_path / "cv.json").read_text())


def test_expert_scale_reports_the_models_own_line_where_the_evaluation_has_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """vcdr_expert_pred (the line the model's trainer fitted) is scored against the experts, per fold
    and pooled over gradable images; a fold without it shows '-'."""
    fields = [*FIELDS, "vcdr_expert_pred"]
    a = _fold(tmp_path, "f0", [["a1", 0.9, 0.8, 0.7, 0.4, 0.4, 0.5, 1, 0.55], ["a2", 0.9, 0.8, 0.7, 0.6, 0.7, 0.6, 1, 0.8],
                    ["a3", 0.9, 0.8, 0.7, 0.5, 0.5, 0.7, 0, ""]], fields)
    b = _fold(tmp_path, "f1", [["b1", 0.9, 0.8, 0.7, 0.2, 0.2, 0.3, 1, ""], ["b2", 0.9, 0.8, 0.7, 0.8, 0.9, 0.8, 1, ""],
                    ["b3", 0.9, 0.8, 0.7, 0.5, 0.6, 0.6, 1, ""]], fields)
    assert main([str(a), str(b), "--expert-scale"]) == 0
    lines = capsys.readouterr().out.splitlines()
    f0 = next(line for line in lines if line.startswith("| f0 | ") and line.count("|") == 9).split("|")
    f1 = next(line for line in lines if line.startswith("| f1 | ") and line.count("|") == 9).split("|")
    pooled = [line for line in lines if "pooled" in line][-1].split("|")
    assert float(f0[7]) == pytest.approx((0.05 + 0.2) / 2, abs=1e-4)  # a3 is not gradable
    assert f1[7].strip() == "-" and f1[8].strip() == "-"
    assert float(pooled[7]) == pytest.approx((0.05 + 0.2) / 2, abs=1e-4)


def test_expert_scale_needs_two_folds(tmp_path: Path) -> None:
    a = _fold(tmp_path, "f0", [["a1", 0.9, 0.8, 0.7, 0.5, 0.4, 0.45, 1]])
    assert main([str(a), "--expert-scale"]) == 2


def test_case_crop_stays_inside_each_panel(tmp_path: Path) -> None:
    """A disc near the right edge of a small image: the square around it is clipped to the
    prediction panel, so no ground-truth pixel appears on the left half of the crop (and vice versa)."""
    from rfnet.crossval import _disc_crop

    d = tmp_path / "f0"
    disc = np.zeros((40, 50), bool)
    disc[10:30, 35:48] = True
    write_image(d / "segmentation" / "a.bmp", to_refuge_seg(disc, np.zeros_like(disc)))
    panels = np.concatenate([np.zeros((40, 50, 3), np.uint8), np.full((40, 50, 3), 255, np.uint8)], axis=1)
    write_image(d / "overlays" / "a.png", panels)
    (d / "overlays" / "a.png").rename(d / "overlays" / "a.jpg")  # lossless pixels under the name it reads
    crop = _disc_crop(d, "a", half=30)
    left, right = np.hsplit(crop, 2)
    assert crop.shape[0] == 40 and left.shape == right.shape and left.max() == 0 and right.min() == 255
