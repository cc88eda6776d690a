"""rfnet.screening_calibration on generated per_image.csv rows (no model, no data)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rfnet.common import gradability as G
from rfnet.predict import CASE_COLUMNS
from rfnet.errors import UsageError
from rfnet.screening_calibration import (FIELD_RATIO_MARGIN, cross_fitted, envelope_limits, main, read_rows,
                                          refused, report, verdict_limits)


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CASE_COLUMNS), restval="")
        w.writeheader()
        w.writerows(rows)
    return path


def _rows(rng: np.random.Generator, fold: int, n: int = 60) -> list[dict]:
    """Well-segmented rows (contrast about 1.4, small uncertainty) and wrong ones: half off the disc
    (contrast below 1), half with an unsure mask; every fifth a labelled glaucoma with a large vCDR."""
    rows = []
    for i in range(n):
        wrong = i % 6 == 0
        glaucoma = i % 5 == 0
        vcdr = float(rng.uniform(0.65, 0.85) if glaucoma else rng.uniform(0.3, 0.6))
        rows.append({
            "name": f"f{fold}_{i}", "dataset": "rim-one-dl" if i % 2 else "refuge", "score": 0.99,
            "dice_disc": 0.5 if wrong else 0.95, "dice_cup": 0.8, "miou": 0.8, "vcdr_pred": vcdr, "vcdr_gt": vcdr,
            "vcdr_ae": 0.0, "vcdr_ae_all": 0.0, "gradable": 1, "reason": "", "label": int(glaucoma),
            "disc_fraction": 0.5, "disc_field_ratio": "", "disc_contrast": 0.9 if wrong and i % 12 == 0 else
            float(rng.uniform(1.2, 1.6)), "disc_uncertainty": 0.6 if wrong and i % 12 else float(rng.uniform(0.02, 0.1)),
            "cup_uncertainty": 0.1, "saturation": 150, "field_edge": 0,
        })
    return rows


def test_calibration_refuses_the_wrong_rows_keeps_the_good_ones_and_picks_a_referral(tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    files = [_write(tmp_path / f"p{k}" / "per_image.csv", _rows(rng, k)) for k in range(3)]
    out = tmp_path / "grading.json"
    assert main(["--per-image", *map(str, files), "--out", str(out)]) == 0
    cal = json.loads(out.read_text())
    assert cal["min_disc_score"] == pytest.approx(0.495)
    assert 0.9 < cal["limits"]["min_disc_contrast"] < 1.3 and cal["limits"]["max_disc_uncertainty"] < 0.6
    assert cal["report"]["all"]["wrong_graded"] == 0 and cal["report"]["all"]["well_kept"] >= 0.97
    assert cal["report_cv"]["all"]["images"] == 180 and cal["report_cv"]["all"]["wrong_graded"] <= 3
    assert 0.5 < cal["referral_vcdr"] < 0.6 and cal["referral_cv"]["sensitivity"] == 1.0
    rows = read_rows(files)
    limits = G.GradingLimits.from_mapping(cal["limits"])
    assert all(refused(r, cal["min_disc_score"], limits) for r in rows if r.dice_disc < 0.8)
    assert main(["--per-image", *map(str, files), "--apply", str(out)]) == 0
    assert "wrong but graded" in capsys.readouterr().out
    assert main(["--per-image", *map(str, files), "--out", str(out)]) == 2  # exists: not overwritten


def test_rows_without_the_measures_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "old" / "per_image.csv"
    path.parent.mkdir()
    path.write_text("name,score,dice_disc\na,0.9,0.9\n")
    assert main(["--per-image", str(path), "--out", str(tmp_path / "g.json")]) == 2


def test_one_atypical_well_row_does_not_open_the_envelope(tmp_path: Path) -> None:
    """The field-ratio bounds come from the 0.5 % / 99.5 % quantiles of the well-segmented rows: a
    single crop that shows four dark corners (ratio 0.74) must not let a disc 0.7 of its field pass."""
    rng = np.random.default_rng(3)
    rows = _rows(rng, 0, 300)
    for r in rows:
        r.update(field_edge=1, disc_field_ratio=float(rng.uniform(0.12, 0.3)))
    rows[1].update(disc_field_ratio=0.74, dice_disc=0.95)
    limits = envelope_limits(read_rows([_write(tmp_path / "p0" / "per_image.csv", rows)]), G.GradingLimits())
    assert 0.29 * FIELD_RATIO_MARGIN < limits.max_disc_field_ratio <= 0.3 * FIELD_RATIO_MARGIN < 0.7
    assert 0.12 / FIELD_RATIO_MARGIN <= limits.min_disc_field_ratio < 0.125 / FIELD_RATIO_MARGIN


def test_cross_fitted_figures_judge_each_fold_by_a_verdict_that_never_saw_it(tmp_path: Path) -> None:
    """Only fold 0 has wrong rows: calibrated on all rows the verdict refuses them (in sample), but
    fold 0's cross-fitted verdict comes from folds 1-2, which show none. There the envelope still
    refuses the discs off the nerve head (contrast 0.9), while the unsure masks, which only the
    search could have learned to refuse, are graded: the figures a new camera's failure would get."""
    rng = np.random.default_rng(5)
    files = []
    for k in range(3):
        rows = _rows(rng, k, 120)
        for i, r in enumerate(rows):
            if k > 0 and r["dice_disc"] < 0.8:
                r.update(dice_disc=0.95, disc_uncertainty=float(rng.uniform(0.02, 0.1)), disc_contrast=1.4)
        files.append(_write(tmp_path / f"p{k}" / "per_image.csv", rows))
    rows = read_rows(files)
    n_wrong = sum(r.wrong for r in rows)
    assert n_wrong == 20 and all(r.fold == "p0" for r in rows if r.wrong)
    in_sample = report(rows, *verdict_limits(rows, 0.5, 0.97))
    assert in_sample["all"]["wrong_graded"] == 0
    cv = cross_fitted(rows, 0.5, 0.97)
    unsure = sum(r.wrong and r.measures["disc_uncertainty"] == 0.6 for r in rows)
    assert unsure == 10 and cv["all"]["images"] == len(rows) and cv["all"]["wrong_graded"] == unsure
    assert cv["all"]["well_kept"] >= 0.97
    with pytest.raises(UsageError, match="two folds"):
        cross_fitted([r for r in rows if r.fold == "p1"], 0.5, 0.97)
