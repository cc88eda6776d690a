"""End to end: runtime/infer.py main() with ONNX Runtime on generated images, good and bad."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rfnet.common.imageio import read_image, read_mask
from rfnet.common.metrics import cdr_report
from rfnet.common.postprocess import postprocess
from rfnet.common.preprocess import preprocess
from rfnet.config import InputConfig
from rfnet.runtime import manifest as mf
from rfnet.runtime.backends.trt_loader import INSTALL_HINT
from rfnet.runtime.infer import main

CFG = InputConfig(size=128, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def reference(model: Path, image_path: Path):
    """The same image through ONNX Runtime directly, one at a time, with the shared post-processing."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x, lb = preprocess(read_image(image_path), CFG)
    boxes, scores, masks = sess.run(["boxes", "scores", "masks"], {"image": x[None]})
    seg = postprocess(boxes[0], scores[0], masks[0], lb, 0.5)
    return seg, cdr_report(seg.disc, seg.cup)


def test_folder_end_to_end(contract_onnx: Path, image_dir: Path, tmp_path: Path, contract) -> None:
    out = tmp_path / "out"
    # batch 3 over 4 images: one full and one partial batch; no progress bar in tests
    rc = main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--batch", "3",
               "--save", "all", "--overlay-format", "png", "--no-progress"])
    assert rc == 0
    rows = read_csv(out / "results.csv")
    assert sorted(rows) == ["a_wide", "b_tall", "c_square", "d_big"]
    for name, h, w, value in contract.GOOD_IMAGES:
        stem = Path(name).stem
        row = rows[stem]
        seg, cdr = reference(contract_onnx, image_dir / name)
        # identical to the one-image reference (batching and the decode thread change nothing)
        for key in ("vcdr", "vcdr_extent", "hcdr", "area_cdr"):
            assert float(row[key]) == pytest.approx(cdr[key], abs=1e-6), (stem, key)
        # known geometry: the slot-0 box of this grey value, the 0.45/0.225 M circles (vCDR ~ 12/25 px)
        box = [float(row[k]) for k in ("disc_x0", "disc_y0", "disc_x1", "disc_y1")]
        np.testing.assert_allclose(box, contract.expected_box(value, h, w), atol=0.01)
        assert abs(float(row["vcdr"]) - 0.48) < 0.05, row
        assert float(row["score"]) == pytest.approx(0.9, abs=1e-6)
        assert row["disc_found"] == "1" and float(row["latency_ms"]) > 0
        # masks at the original size, 0/255, equal to the reference
        disc = read_mask(out / "masks" / f"{stem}_disc.png")
        cup = read_mask(out / "masks" / f"{stem}_cup.png")
        assert disc.shape == (h, w) and set(np.unique(disc)) <= {0, 255}
        np.testing.assert_array_equal(disc == 255, seg.disc)
        np.testing.assert_array_equal(cup == 255, seg.cup)
        # disc lies inside the box (the decoy box in the corner was not chosen)
        ys, xs = np.nonzero(disc)
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1
        # REFUGE map: 0 cup, 128 rim, 255 background, consistent with the masks
        refuge = read_mask(out / "refuge" / f"{stem}.bmp")
        assert refuge.shape == (h, w) and set(np.unique(refuge)) == {0, 128, 255}
        np.testing.assert_array_equal(refuge == 0, seg.cup)
        np.testing.assert_array_equal(refuge < 255, seg.disc)
        assert read_image(out / "overlay" / f"{stem}.png").shape == (h, w, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "onnxruntime" and summary["device"] == "CPU"
    assert summary["num_images"] == 4 and summary["num_processed"] == 4 and summary["num_failed"] == 0
    assert summary["settings"]["batch_size"] == 3
    assert summary["model_info"]["input_size"] == 128
    load = summary["machine_load"]  # shares of the machine's CPU time during the run (Linux: measured)
    assert load is None if sys.platform != "linux" else (set(load) == {"steal", "others", "own"}
                                                          and all(0 <= v <= 1 for v in load.values()))
    assert summary["cdr"]["vcdr"]["mean"] == pytest.approx(np.mean([float(r["vcdr"]) for r in rows.values()]), abs=1e-6)
    assert not list(out.rglob("*.tmp")), "atomic writes leave no temporaries"


def test_default_outputs_write_each_mask_once_and_a_jpeg_overlay(contract_onnx: Path, image_dir: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "default"
    assert main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["overlay", "progress.jsonl", "refuge", "report.html", "results.csv",
                                                     "summary.json", "thumb"]
    assert sorted(p.name for p in (out / "overlay").iterdir()) == ["a_wide.jpg", "b_tall.jpg", "c_square.jpg", "d_big.jpg"]
    assert sorted(p.name for p in (out / "thumb").iterdir()) == ["a_wide.jpg", "b_tall.jpg", "c_square.jpg", "d_big.jpg"]
    assert max(read_image(out / "thumb" / "d_big.jpg").shape[:2]) <= 160
    assert read_image(out / "overlay" / "d_big.jpg").shape == read_image(image_dir / "d_big.png").shape
    assert json.loads((out / "summary.json").read_text())["settings"]["overlay_format"] == "jpg"


def test_an_image_whose_outputs_cannot_be_written_fails_alone(contract_onnx: Path, image_dir: Path,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Writing happens in a background thread; a write error still fails that image (and only it)."""
    out = tmp_path / "blocked"
    (out / "refuge" / "b_tall.bmp").mkdir(parents=True)  # a folder where the file should go
    rc = main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--overwrite",
               "--no-progress"])
    assert rc == 1
    assert "b_tall" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processed"] == 3 and summary["num_failed"] == 1
    assert "cannot write outputs" in summary["failed"][0]["error"]
    assert sorted(read_csv(out / "results.csv")) == ["a_wide", "c_square", "d_big"]


def test_single_file_and_save_subset(contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "one"
    rc = main(["--model", str(contract_onnx), "--input", str(image_dir / "c_square.bmp"), "--output", str(out),
               "--save", "refuge", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["progress.jsonl", "refuge", "summary.json"]
    assert [p.name for p in (out / "refuge").iterdir()] == ["c_square.bmp"]


def test_glob_input(contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    assert main(["--model", str(contract_onnx), "--input", str(image_dir / "*.png"), "--output", str(out), "--no-progress"]) == 0
    assert sorted(read_csv(out / "results.csv")) == ["a_wide", "b_tall", "d_big"]


def test_bad_files_in_folder_are_listed_and_the_rest_processed(
    contract_onnx: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (image_dir / "broken.png").write_text("this is not a PNG")
    (image_dir / "empty.jpg").write_bytes(b"")
    good = (image_dir / "a_wide.png").read_bytes()
    (image_dir / "truncated.png").write_bytes(good[: len(good) // 2])
    (image_dir / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    rc = main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--batch", "2", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "3 of 7 images failed" in err
    for bad in ("broken.png", "empty.jpg", "truncated.png"):
        assert bad in err
    assert "notes.txt" not in err
    assert sorted(read_csv(out / "results.csv")) == ["a_wide", "b_tall", "c_square", "d_big"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processed"] == 4 and summary["num_failed"] == 3
    assert sorted(Path(f["file"]).name for f in summary["failed"]) == ["broken.png", "empty.jpg", "truncated.png"]
    assert all(f["error"] for f in summary["failed"])


def test_empty_input_folder(contract_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert main(["--model", str(contract_onnx), "--input", str(empty), "--output", str(out)]) == 2
    assert "no images found" in capsys.readouterr().err
    assert not out.exists()


def test_missing_input(contract_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(contract_onnx), "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["garbage", "no_metadata", "suffix", "missing", "backend_mismatch"])
def test_wrong_model_file(
    kind: str, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], contract
) -> None:
    extra: list[str] = []
    if kind == "garbage":
        model = tmp_path / "model.onnx"
        model.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
        expect = "cannot load this file as an ONNX model"
    elif kind == "no_metadata":
        model = contract.make_onnx(tmp_path / "plain.onnx", with_metadata=False)
        expect = "missing RF-Net metadata ['rfnet.preset', 'rfnet.input_size'"
    elif kind == "suffix":
        model = tmp_path / "model.pt"
        model.write_bytes(b"x")
        expect = "cannot tell the model type"
    elif kind == "missing":
        model = tmp_path / "absent.onnx"
        expect = "model file not found"
    else:
        model = contract.make_onnx(tmp_path / "m.onnx")
        extra = ["--backend", "tensorrt"]
        expect = "cannot run it"
    out = tmp_path / "out"
    rc = main(["--model", str(model), "--input", str(image_dir), "--output", str(out), *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert expect in err and model.name in err
    assert not out.exists(), "nothing is written when the model is wrong"


def test_refuses_output_with_results_unless_overwrite(
    contract_onnx: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("precious earlier results\n")
    before = snapshot(out)
    rc = main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--no-progress"])
    assert rc == 2
    assert "--overwrite" in capsys.readouterr().err
    assert snapshot(out) == before, "nothing changed"
    rc = main(["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out), "--overwrite", "--no-progress"])
    assert rc == 0
    assert sorted(read_csv(out / "results.csv")) == ["a_wide", "b_tall", "c_square", "d_big"]


def test_usage_errors(contract_onnx: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--model", str(contract_onnx), "--input", str(image_dir), "--output", str(tmp_path / "o")]
    assert main(base + ["--save", "masks,pdf"]) == 2
    assert "pdf" in capsys.readouterr().err
    assert main(base + ["--batch", "0"]) == 2
    assert main(base + ["--threshold", "1.5"]) == 2
    assert main(["--model", str(contract_onnx)]) == 2  # argparse: missing required arguments
    assert not (tmp_path / "o").exists()


def _fake_engine(folder: Path, **overrides: object) -> Path:
    engine = folder / "rfnet.engine"
    engine.write_bytes(os.urandom(256))
    manifest = {
        "engine_sha256": mf.sha256_file(engine),
        "tensorrt_version": "10.3.0.30",
        "gpu_name": "Orin (nvgpu)",
        "compute_capability": "8.7",
        "precision": "fp16",
        "strongly_typed": False,
        "inputs": [{"name": "image", "shape": [-1, 3, 128, 128], "dtype": "float32"}],
        "outputs": [{"name": "boxes", "shape": [-1, 3, 4], "dtype": "float32"}],
        "profiles": {"image": {"min": [1, 3, 128, 128], "opt": [1, 3, 128, 128], "max": [4, 3, 128, 128]}},
        "onnx_file": "rfnet.onnx",
        "onnx_sha256": "0" * 64,
        "calibration": None,
        "build_flags": [],
        "dla_core": None,
        "layer_placement": None,
        "build_time_s": 1.0,
        "created_utc": "2025-01-01T00:00:00+00:00",
        "preset": "test",
        "input_size": 128,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "mask_size": 28,
        "top_k": 3,
        "class_names": ["disc", "cup"],
    }
    manifest.update(overrides)
    mf.write_manifest(engine, manifest)
    return engine


def test_engine_without_manifest(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "lonely.engine"
    engine.write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    assert main(["--model", str(engine), "--input", str(image_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lonely.engine.json" in err and "manifest not found" in err
    assert not out.exists()


def test_engine_bytes_do_not_match_manifest(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = _fake_engine(tmp_path)
    engine.write_bytes(b"a different engine")  # e.g. rebuilt without updating the manifest
    assert main(["--model", str(engine), "--input", str(image_dir), "--output", str(tmp_path / "out")]) == 2
    assert "does not match its manifest" in capsys.readouterr().err


def test_engine_for_another_machine_is_refused(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Here (no TensorRT runtime) the actionable install hint; on a GPU machine with TensorRT,
    the manifest check refuses the engine (it claims an Orin GPU) before deserialising."""
    engine = _fake_engine(tmp_path, gpu_name="Imaginary GPU 9000", compute_capability="42.0")
    out = tmp_path / "out"
    assert main(["--model", str(engine), "--input", str(image_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert INSTALL_HINT in err or ("does not match this machine" in err and "export/build.py" in err)
    assert not out.exists()


def _contract_model(contract, path: Path, key: str, value: float | None) -> Path:
    """The contract's ONNX model at ``path``, with metadata ``key`` set to ``value`` (None: left as made)."""
    import onnx

    from rfnet.export.onnx_tools.onnx_meta import set_metadata

    model_path = contract.make_onnx(path)
    if value is not None:
        model = onnx.load(str(model_path))
        set_metadata(model, {key: str(value)})
        onnx.save(model, str(model_path))
    return model_path


def test_mask_box_scale_from_the_model_metadata(tmp_path: Path, image_dir: Path, contract) -> None:
    """rfnet.mask_box_scale (absent = 1.0 in older exports) widens the pasted masks about the box centre."""
    areas = {}
    for scale in (None, 1.5):
        model_path = _contract_model(contract, tmp_path / f"m{scale}.onnx", "rfnet.mask_box_scale", scale)
        out = tmp_path / f"out{scale}"
        assert main(["--model", str(model_path), "--input", str(image_dir / "c_square.bmp"), "--output", str(out),
                     "--save", "masks", "--no-progress"]) == 0
        areas[scale] = int((read_mask(out / "masks" / "c_square_disc.png") > 0).sum())
        assert json.loads((out / "summary.json").read_text())["model_info"]["mask_box_scale"] == (scale or 1.0)
    assert areas[1.5] / areas[None] == pytest.approx(2.25, rel=0.1)


def test_crop_margin_from_the_model_metadata_applies_to_crops_only(tmp_path: Path, contract) -> None:
    """rfnet.crop_margin (absent = 1 in older exports): an image without a fundus field's edge (no dark
    corners: a disc-centred crop) is letterboxed smaller, so the model's fixed box in input pixels covers
    margin^2 the area in the photograph; a round field on black (c_square) is letterboxed as before."""
    import cv2

    images = tmp_path / "images"
    contract.write_images(images, specs=(contract.GOOD_IMAGES[2],))  # c_square.bmp: a field, four dark corners
    crop = contract.fundus_like(288, 288, 140)
    crop[crop.max(axis=2) == 0] = (70, 32, 14)  # the same disc area, but no dark corner
    assert cv2.imwrite(str(images / "crop.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    areas: dict[float | None, dict[str, int]] = {}
    for margin in (None, 1.5):
        model_path = _contract_model(contract, tmp_path / f"m{margin}.onnx", "rfnet.crop_margin", margin)
        out = tmp_path / f"out{margin}"
        assert main(["--model", str(model_path), "--input", str(images), "--output", str(out),
                     "--save", "masks", "--no-progress"]) == 0
        areas[margin] = {n: int((read_mask(out / "masks" / f"{n}_disc.png") > 0).sum()) for n in ("c_square", "crop")}
        assert json.loads((out / "summary.json").read_text())["model_info"]["crop_margin"] == (margin or 1.0)
    assert areas[1.5]["c_square"] == areas[None]["c_square"]
    assert areas[1.5]["crop"] / areas[None]["crop"] == pytest.approx(2.25, rel=0.1)
