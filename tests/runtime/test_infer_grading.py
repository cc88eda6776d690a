"""runtime/infer.py on an awkward folder: junk is not graded (empty CDR cells, reasons counted),
bad files are listed, statistics use gradable images only; --min-score overrides the model."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rfnet.data.junk import junk_images
from rfnet.runtime.infer import main

#: Junk image -> the verdict it must get (it depends on the image only: the contract model
#: reports a confident disc in every image).
JUNK = {"black": "image_too_dark", "white": "image_too_flat", "grey": "image_too_flat", "noise": "image_too_flat",
        "scene": "not_fundus_colour", "tiny": "image_too_small", "strip": "image_too_small"}
CDR = ("vcdr", "vcdr_extent", "hcdr", "area_cdr")


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


@pytest.fixture()
def awkward(tmp_path: Path, contract) -> Path:
    folder = tmp_path / "awkward"
    contract.write_images(folder, specs=(("good_a.png", 300, 400, 180), ("good_b.jpg", 360, 360, 120)))
    for name, image in junk_images(seed=2).items():
        assert cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "broken.png").write_text("not a PNG")
    (folder / "empty.jpg").write_bytes(b"")
    good = (folder / "good_a.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    return folder


def test_awkward_folder(contract_onnx: Path, awkward: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["--model", str(contract_onnx), "--input", str(awkward), "--output", str(out), "--batch", "2",
               "--no-progress"])
    assert rc == 1  # the three bad files; junk is a verdict, not a failure
    err = capsys.readouterr().err
    assert "3 of 12 images failed" in err and all(b in err for b in ("broken.png", "empty.jpg", "truncated.png"))
    rows = read_csv(out / "results.csv")
    assert sorted(rows) == sorted(["good_a", "good_b", *JUNK])
    for name, reason in JUNK.items():
        row = rows[name]
        assert (row["gradable"], row["reason"]) == ("0", reason), row
        assert all(row[k] == "" for k in CDR) and row["message"], row  # empty, not 0
        assert row["disc_found"] == "1" and float(row["score"]) == pytest.approx(0.9)  # the model did answer
        assert not (out / "masks" / f"{name}_disc.png").exists() and not (out / "refuge" / f"{name}.bmp").exists()
        assert (out / "overlay" / f"{name}.jpg").is_file()  # says "not gradable: <reason>"
    for name in ("good_a", "good_b"):
        row = rows[name]
        assert (row["gradable"], row["reason"], row["message"]) == ("1", "", "")
        assert abs(float(row["vcdr"]) - 0.48) < 0.05
        assert (out / "refuge" / f"{name}.bmp").is_file()  # the default outputs: each mask once, in the REFUGE map
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processed"] == 9 and summary["num_failed"] == 3
    grading = summary["gradability"]
    assert (grading["num_gradable"], grading["num_not_gradable"]) == (2, 7)
    assert grading["reasons"] == {"image_too_dark": 1, "image_too_flat": 3, "image_too_small": 2,
                                  "not_fundus_colour": 1}
    assert grading["min_disc_score"] == summary["settings"]["min_disc_score"] == summary["model_info"]["min_disc_score"]
    good = [float(rows[n]["vcdr"]) for n in ("good_a", "good_b")]
    assert summary["cdr"]["vcdr"]["mean"] == pytest.approx(np.mean(good), abs=1e-6)  # gradable images only
    assert summary["cdr"]["vcdr"]["std"] == pytest.approx(np.std(good), abs=1e-6)


def test_min_score_overrides_the_model(contract_onnx: Path, tmp_path: Path, contract) -> None:
    folder = tmp_path / "images"
    contract.write_images(folder, specs=(("a.png", 300, 300, 150),))
    out = tmp_path / "strict"
    assert main(["--model", str(contract_onnx), "--input", str(folder), "--output", str(out), "--min-score", "0.95",
                 "--no-progress"]) == 0
    row = read_csv(out / "results.csv")["a"]
    assert (row["gradable"], row["reason"], row["vcdr"]) == ("0", "low_disc_score", "")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gradability"]["reasons"] == {"low_disc_score": 1} and summary["cdr"]["vcdr"]["mean"] is None
    assert main(["--model", str(contract_onnx), "--input", str(folder), "--output", str(tmp_path / "x"),
                 "--min-score", "1.5"]) == 2


def test_vcdr_on_the_experts_scale_follows_the_models_line(contract_onnx: Path, tmp_path: Path, contract) -> None:
    import onnx

    model = onnx.load(str(contract_onnx))
    onnx.helper.set_model_props(model, {**contract.metadata(), "rfnet.vcdr_expert_scale": "[0.5, 0.3]"})
    scaled = tmp_path / "scaled.onnx"
    onnx.save(model, str(scaled))
    folder = tmp_path / "images"
    contract.write_images(folder)
    for onnx_path, out in ((contract_onnx, tmp_path / "plain"), (scaled, tmp_path / "scaled")):
        assert main(["--model", str(onnx_path), "--input", str(folder), "--output", str(out), "--no-progress"]) == 0
    plain, rows = read_csv(tmp_path / "plain" / "results.csv"), read_csv(tmp_path / "scaled" / "results.csv")
    assert all(r["gradable"] == "1" for r in rows.values()) and len(rows) == len(contract.GOOD_IMAGES)
    for name, row in rows.items():
        assert row["vcdr"] == plain[name]["vcdr"] and plain[name]["vcdr_expert"] == ""  # no line: no value
        assert float(row["vcdr_expert"]) == pytest.approx(0.5 * float(row["vcdr"]) + 0.3, abs=2e-6)
    summary = json.loads((tmp_path / "scaled" / "summary.json").read_text())
    assert summary["cdr"]["vcdr_expert"]["mean"] == pytest.approx(
        np.mean([float(r["vcdr_expert"]) for r in rows.values()]), abs=1e-6)
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["cdr"]["vcdr_expert"]["mean"] is None
