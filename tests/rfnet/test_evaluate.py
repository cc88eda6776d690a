"""rfnet.evaluate with a tiny trained checkpoint on a few generated images (one non-square, one broken)."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import read_image, read_mask, write_image
from rfnet.common.metrics import dice, from_refuge_seg, to_refuge_seg
from rfnet.data.synthetic import generate_folder, generate_sample
from rfnet.evaluate import main as evaluate_main
from rfnet.train import main as train_main

TINY = [
    "--preset", "light",
    "--set", "input.size=64", "--set", "anchors.sizes=[8,16,32,64]", "--set", "fpn.out_channels=16",
    "--set", "rpn.pre_nms_top_n_train=100", "--set", "rpn.post_nms_top_n_train=50",
    "--set", "rpn.pre_nms_top_n_test=50", "--set", "rpn.post_nms_top_n_test=50",
    "--set", "roi_heads.batch_size_per_image=32", "--set", "roi_heads.representation_size=32",
    "--set", "mask_head.mask_size=28", "--set", "mask_head.channels=16",
    "--batch-size", "2", "--warmup-iters", "1", "--lr", "0.005",
    "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "5",
]
EVAL = ["--device", "cpu", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaltrain")
    generate_folder(root / "train", n=4, size=64, seed=21)
    out = root / "run"
    assert train_main(["--dataset", "folder", "--data-root", str(root / "train"), "--val-fraction", "0",
                       "--out", str(out), "--epochs", "1", *TINY]) == 0
    return out / "checkpoint_best.pt"


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 good images (one 72 x 64, i.e. not square) and one truncated image."""
    root = tmp_path_factory.mktemp("evaldata")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(3):
        image, disc, cup = generate_sample(np.random.default_rng(100 + i), 72)
        if i == 0:  # crop 8 columns: 72 rows x 64 columns, the disc stays inside
            image, disc, cup = image[:, 4:68], disc[:, 4:68], cup[:, 4:68]
        write_image(root / "images" / f"e{i}.png", image)
        write_image(root / "masks" / f"e{i}.png", to_refuge_seg(disc, cup))
    image, disc, cup = generate_sample(np.random.default_rng(200), 72)
    write_image(root / "images" / "broken.png", image)
    write_image(root / "masks" / "broken.png", to_refuge_seg(disc, cup))
    p = root / "images" / "broken.png"
    p.write_bytes(p.read_bytes()[:150])
    return root


def test_evaluate_writes_refuge_bmps_csv_overlays_and_summary(
    checkpoint: Path, eval_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "eval"
    with caplog.at_level(logging.WARNING):
        rc = evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "folder", "--data-root", str(eval_data),
                            "--out", str(out), *EVAL])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Dice disc" in printed and "Dice cup" in printed and "(n = 3, gradable 0)" in printed
    assert "gradable: 0 of 3 images (0.0%) - not gradable: image_too_small 3" in printed
    assert str(eval_data / "images" / "broken.png") in caplog.text and "truncated" in caplog.text

    with open(out / "per_image.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["e0", "e1", "e2"]
    for col in ("dice_disc", "dice_cup", "vcdr_pred", "vcdr_gt", "vcdr_ae", "vcdr_extent_pred", "vcdr_extent_gt",
                "iou_disc", "iou_cup", "miou", "label", "expert_cdr"):
        assert col in rows["e0"], col
    for row in rows.values():  # 64-72 px images: never gradable, so no predicted CDR and no CDR error
        assert (row["gradable"], row["reason"]) == ("0", "image_too_small")
        assert row["vcdr_pred"] == row["vcdr_ae"] == row["hcdr_pred"] == row["area_cdr_pred"] == ""
        assert row["vcdr_gt"] != "" and row["dice_disc"] != ""

    for name, row in rows.items():
        seg = read_mask(out / "segmentation" / f"{name}.bmp")
        gt = read_mask(eval_data / "masks" / f"{name}.png")
        image = read_image(eval_data / "images" / f"{name}.png")
        assert seg.dtype == np.uint8 and seg.shape == image.shape[:2] == gt.shape, name  # original size
        assert set(np.unique(seg).tolist()) <= {0, 128, 255}, name
        # the BMP is what was scored: REFUGE's own reading of it reproduces the CSV's Dice
        pd, pc = from_refuge_seg(seg)
        gd, gc = from_refuge_seg(gt)
        assert dice(pd, gd) == pytest.approx(float(row["dice_disc"]), abs=1e-5), name
        assert dice(pc, gc) == pytest.approx(float(row["dice_cup"]), abs=1e-5), name
        assert float(row["vcdr_gt"]) == pytest.approx(
            float(np.max(gc.sum(axis=0))) / (float(np.max(gd.sum(axis=0))) + 1e-7), abs=1e-5)
        # the BMP is written for every image (the evaluator scores the whole set); summary.json lists these
        ov = read_image(out / "overlays" / f"{name}.jpg")
        assert ov.shape == (image.shape[0], 2 * image.shape[1], 3), name  # prediction beside ground truth
    assert not (out / "segmentation" / "broken.bmp").exists()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == 4 and summary["n_evaluated"] == 3 and summary["skipped"] == ["broken"]
    assert summary["proposals"] == 50  # the checkpoint's own rpn.post_nms_top_n_test (TINY)
    assert summary["crop_margin"] == 1.0  # the checkpoint's own input.crop_margin
    mean_disc = np.mean([float(r["dice_disc"]) for r in rows.values()])
    assert summary["metrics"]["dice_disc"]["mean"] == pytest.approx(mean_disc, abs=1e-5)
    assert summary["metrics"]["vcdr_ae"]["mean"] is None and summary["metrics_gradable"] == {}
    assert (summary["n_gradable"], summary["gradable_rate"]) == (0, 0.0)
    assert summary["ungradable_reasons"] == {"image_too_small": 3}
    assert sorted(u["name"] for u in summary["ungradable"]) == ["e0", "e1", "e2"]
    assert summary["glaucoma_classification"] is None  # no labels in this folder
    assert summary["vcdr_agreement"]["masks"]["n"] == 0  # no gradable image: no CDR to compare


def test_evaluate_strict_fails_on_the_broken_file(checkpoint: Path, eval_data: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        rc = evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "folder", "--data-root", str(eval_data),
                            "--out", str(tmp_path / "e"), "--strict", *EVAL])
    assert rc == 1 and "broken.png" in caplog.text


def test_evaluate_refuses_non_empty_out_and_names_bad_paths(checkpoint: Path, eval_data: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with caplog.at_level(logging.ERROR):
        assert evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "folder", "--data-root", str(eval_data),
                              "--out", str(out), *EVAL]) == 2
    assert "--overwrite" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert evaluate_main(["--checkpoint", str(tmp_path / "none.pt"), "--dataset", "folder",
                              "--data-root", str(eval_data), "--out", str(tmp_path / "o"), *EVAL]) == 2
    assert "none.pt" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "drishti-gs",
                              "--data-root", str(tmp_path), "--out", str(tmp_path / "o2"), *EVAL]) == 2
    assert "expected" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "folder", "--data-root", str(eval_data),
                              "--out", str(tmp_path / "o3"), "--proposals", "0", *EVAL]) == 2
    assert "--proposals must be >= 1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "folder", "--data-root", str(eval_data),
                              "--out", str(tmp_path / "o4"), "--crop-margin", "0.5", *EVAL]) == 2
    assert "--crop-margin must be a finite number >= 1" in caplog.text


def test_evaluate_fold_scores_exactly_the_held_out_names(checkpoint: Path, tmp_path: Path) -> None:
    from rfnet.data.splits import kfold_split

    root = tmp_path / "data"
    generate_folder(root, n=5, size=64, seed=31)
    names = sorted(p.stem for p in (root / "images").iterdir())
    held_out = kfold_split(names, 5, 3)[2][1]
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "folder", "--data-root", str(root),
                          "--fold", "2", "--folds", "5", "--seed", "3", "--out", str(out), *EVAL]) == 0
    with open(out / "per_image.csv", newline="") as fh:
        assert sorted(r["name"] for r in csv.DictReader(fh)) == sorted(held_out)
    assert evaluate_main(["--checkpoint", str(checkpoint), "--dataset", "folder", "--data-root", str(root),
                          "--fold", "5", "--folds", "5", "--out", str(tmp_path / "bad"), *EVAL]) == 2


def test_vcdr_agreement_uses_gradable_rows_with_values() -> None:
    from rfnet.evaluate import vcdr_agreement

    rows = [
        {"gradable": 1, "vcdr_pred": 0.5, "vcdr_gt": 0.4, "expert_cdr": 0.45},
        {"gradable": 1, "vcdr_pred": 0.7, "vcdr_gt": 0.8, "expert_cdr": ""},
        {"gradable": 1, "vcdr_pred": 0.6, "vcdr_gt": 0.6, "expert_cdr": 0.65},
        {"gradable": 0, "vcdr_pred": "", "vcdr_gt": 0.9, "expert_cdr": 0.9},
    ]
    a = vcdr_agreement(rows)
    assert a["masks"]["n"] == 3 and a["masks"]["mae"] == pytest.approx(0.2 / 3)
    assert a["experts"]["n"] == 2 and a["experts"]["mae"] == pytest.approx(0.05)
    assert a["experts_scaled"]["n"] == 0  # no vCDR on the experts' scale: the model has no line
    rows[0]["vcdr_expert_pred"], rows[2]["vcdr_expert_pred"] = 0.47, 0.6
    a = vcdr_agreement(rows)
    assert a["experts_scaled"]["n"] == 2 and a["experts_scaled"]["mae"] == pytest.approx(0.035)
