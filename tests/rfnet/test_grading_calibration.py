"""python -m rfnet.grading_calibration: the threshold rule, both distributions, the junk verdicts."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.data.junk import junk_images
from rfnet.data.synthetic import generate_sample
from rfnet.grading_calibration import main, propose, read_per_image

torch = pytest.importorskip("torch")

from tests.support.small_model import save_small_checkpoint  # noqa: E402


def _per_image(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    with open(path, "w", newline="") as fh:  # the columns rfnet.evaluate writes that the tool reads
        w = csv.writer(fh)
        w.writerow(["name", "dice_disc", "dice_cup", "score", "disc_found", "gradable", "reason"])
        for name, score, dice in rows:
            w.writerow([name, f"{dice:.6f}", "0.7", f"{score:.6f}", 1, 1, ""])
    return path


def test_propose_is_the_margin_times_the_lowest_true_disc_score() -> None:
    assert propose([0.9, 0.862, 0.95], 0.5) == 0.431
    assert propose([0.0333], 0.5) == 0.016  # rounded down, never above the rule
    with pytest.raises(ValueError, match="nothing to calibrate"):
        propose([], 0.5)


def test_cli_prints_both_distributions_and_the_proposal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f0 = _per_image(tmp_path / "f0.csv", [("a", 0.93, 0.95), ("b", 0.86, 0.93)])
    f1 = _per_image(tmp_path / "f1.csv", [("c", 0.88, 0.91), ("d", 0.03, 0.40)])  # d: missed its disc
    ckpt = tmp_path / "small.pt"
    save_small_checkpoint(ckpt)
    photos = tmp_path / "photos"
    for i in range(2):
        write_image(photos / f"fundus_{i}.png", generate_sample(np.random.default_rng(i), 300)[0])
    write_image(photos / "black.png", junk_images()["black"])
    out = tmp_path / "calib.json"
    rc = main(["--per-image", str(f0), str(f1), "--checkpoint", str(ckpt), "--images", str(photos),
               "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "proposed rfnet.min_disc_score = 0.5 x 0.8600 (b) = 0.430" in printed
    assert "detections that missed the disc (Dice < 0.5; not used): d 0.0300" in printed
    data = json.loads(out.read_text())
    assert data["proposed_min_disc_score"] == 0.43 and data["lowest_true_disc"]["name"] == "b"
    verdicts = {j["image"]: j["verdict_without_score"] for j in data["junk"]}
    assert set(verdicts) == {"black", "white", "grey", "noise", "scene", "tiny", "strip", "cut_disc"}
    assert verdicts["black"] == "image_too_dark" and verdicts["scene"] == "not_fundus_colour"
    assert verdicts["tiny"] == verdicts["strip"] == "image_too_small"
    assert all(0.0 <= j["score"] <= 1.0 for j in data["junk"])
    flagged = {r["image"]: r["verdict"] for r in data["images"]}
    assert flagged == {"black.png": "image_too_dark", "fundus_0.png": "gradable", "fundus_1.png": "gradable"}
    assert "flagged by the image checks: black.png (image_too_dark)" in printed


def test_cli_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\na,0.5\n")
    assert main(["--per-image", str(bad)]) == 2
    assert main(["--per-image", str(tmp_path / "missing.csv")]) == 2
    assert main(["--per-image", str(_per_image(tmp_path / "ok.csv", [("a", 0.9, 0.9)])), "--margin", "2"]) == 2
    rows = read_per_image([tmp_path / "ok.csv"])
    assert rows[0].name == "a" and rows[0].score == 0.9
