"""rfnet.train on a handful of tiny generated images (64 px input, a few iterations per run)."""
from __future__ import annotations

import csv
import json
import logging
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rfnet.common.imageio import write_image
from rfnet.config import ModelConfig, get_preset
from rfnet.data.synthetic import generate_folder
from rfnet.training.overrides import apply_overrides
from rfnet.training.run import build_optimizer
from rfnet.training.schedule import lr_factor
from rfnet.training.state import capture_rng_state, restore_rng_state
from rfnet.train import build_parser, main, resolve_config
from tests.support.drishti_files import write_drishti

#: A very small RF-Net so that one training iteration takes well under a second on a CPU.
TINY = [
    "--preset", "light",
    "--set", "input.size=64",
    "--set", "anchors.sizes=[8,16,32,64]",
    "--set", "fpn.out_channels=16",
    "--set", "rpn.pre_nms_top_n_train=100", "--set", "rpn.post_nms_top_n_train=50",
    "--set", "rpn.pre_nms_top_n_test=50", "--set", "rpn.post_nms_top_n_test=50",
    "--set", "roi_heads.batch_size_per_image=32", "--set", "roi_heads.representation_size=32",
    "--set", "mask_head.mask_size=28", "--set", "mask_head.channels=16",
    "--batch-size", "2", "--warmup-iters", "1", "--lr", "0.005",
    "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "3",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("syn")
    generate_folder(root / "train", n=4, size=64, seed=11)
    generate_folder(root / "val", n=2, size=64, seed=12, prefix="val")
    return {"train": root / "train", "val": root / "val"}


def _train(data: dict[str, Path], out: Path, *extra: str, train_root: Path | None = None) -> int:
    return main([
        "--dataset", "folder", "--data-root", str(train_root or data["train"]),
        "--val-data-root", str(data["val"]), "--out", str(out), *TINY, *extra,
    ])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def straight_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert _train(data, out, "--epochs", "2", "--lr-step", "1") == 0
    return out


def test_train_writes_every_output(straight_run: Path) -> None:
    out = straight_run
    for name in ("metrics.csv", "curves.png", "config.json", "checkpoint_last.pt", "checkpoint_best.pt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp")), "atomic writes left temporary files"
    rows = _rows(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("loss", "lr", "val_dice_disc", "val_dice_cup", "val_vcdr_mae", "val_miou"):
        assert col in rows[0], col
    assert any(c.startswith("loss_") for c in rows[0]), "model loss components missing"
    for r in rows:
        assert math.isfinite(float(r["loss"])) and 0.0 <= float(r["val_dice_disc"]) <= 1.0
        assert r["val_images"] == "2"
    # lr x0.1 after epoch 1 (--lr-step 1); the CSV shows the last iteration's rate of each epoch
    assert float(rows[0]["lr"]) == pytest.approx(0.005, rel=1e-6)
    assert float(rows[1]["lr"]) == pytest.approx(0.0005, rel=1e-6)
    cfg = ModelConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert cfg.input.size == 64 and cfg.name == "light" and cfg.train.lr_step_epochs == 1 and cfg.train.epochs == 2
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # both checkpoints load with the safe unpickler
    last = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    best = torch.load(out / "checkpoint_best.pt", map_location="cpu", weights_only=True)
    assert isinstance(last, dict) and isinstance(best, dict)


def test_resume_equals_uninterrupted(data: dict[str, Path], straight_run: Path, tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "resumed"
    # a time budget too small for a second epoch stops the run cleanly after epoch 1 ...
    assert _train(data, out, "--epochs", "2", "--lr-step", "1", "--max-time-min", "0.0001") == 0
    assert len(_rows(out / "metrics.csv")) == 1
    # ... and --resume finishes it; the run settings come from the checkpoint
    with caplog.at_level(logging.INFO, logger="rfnet.training.run"):
        assert main(["--out", str(out), "--resume", "--device", "cpu", "--threads", "1", "--no-progress"]) == 0
    assert "at epoch 1: mean validation Dice)" in caplog.text  # the resume line names its score
    from rfnet.checkpoint import load_checkpoint

    a = load_checkpoint(straight_run / "checkpoint_last.pt")
    b = load_checkpoint(out / "checkpoint_last.pt")
    assert a.extra["epoch"] == b.extra["epoch"] == 2
    assert a.state_dict.keys() == b.state_dict.keys()
    for k, va in a.state_dict.items():
        vb = b.state_dict[k]
        if va.is_floating_point():
            torch.testing.assert_close(vb, va, rtol=1e-5, atol=1e-6, msg=f"weights differ at {k}")
        else:
            assert torch.equal(va, vb), k
    ra, rb = _rows(straight_run / "metrics.csv"), _rows(out / "metrics.csv")
    assert len(rb) == 2
    for col in ("loss", "val_dice_disc", "val_dice_cup"):
        assert float(rb[1][col]) == pytest.approx(float(ra[1][col]), rel=1e-4, abs=1e-6), col


def test_val_every_skips_validation_but_always_validates_the_last_epoch(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ve"
    assert _train(data, out, "--epochs", "3", "--val-every", "2") == 0
    rows = _rows(out / "metrics.csv")
    assert [r["val_dice_disc"] != "" for r in rows] == [False, True, True]
    from rfnet.checkpoint import load_checkpoint

    assert load_checkpoint(out / "checkpoint_best.pt").extra["epoch"] in (2, 3)


def test_refuses_non_empty_out_and_resume_without_checkpoint(data: dict[str, Path], straight_run: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    before = (straight_run / "metrics.csv").read_bytes()
    with caplog.at_level(logging.ERROR):
        assert _train(data, straight_run, "--epochs", "1") == 2
    assert "--overwrite" in caplog.text and "--resume" in caplog.text
    assert (straight_run / "metrics.csv").read_bytes() == before
    caplog.clear()
    # --overwrite with a wrong data root fails before touching the old run
    with caplog.at_level(logging.ERROR):
        assert main(["--dataset", "folder", "--data-root", str(tmp_path / "missing"), "--out", str(straight_run),
                     "--overwrite", *TINY]) == 2
    assert (straight_run / "metrics.csv").read_bytes() == before and (straight_run / "checkpoint_best.pt").is_file()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing to resume" in caplog.text


def test_bad_items_are_skipped_and_counted_or_fail_with_strict(data: dict[str, Path], tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "bad"
    shutil.copytree(data["train"], root)
    truncated = root / "images" / "synth_0001.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / "masks" / "synth_0002.png").unlink()
    with caplog.at_level(logging.WARNING):
        assert _train(data, tmp_path / "run", "--epochs", "1", train_root=root) == 0
    text = caplog.text
    assert str(truncated) in text and "truncated" in text
    assert "synth_0002.png" in text and "no such file" in text
    assert "2 training item(s)" in text
    assert len(_rows(tmp_path / "run" / "metrics.csv")) == 1
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert _train(data, tmp_path / "strict", "--epochs", "1", "--strict", train_root=root) == 1
    assert "synth_0001.png" in caplog.text or "synth_0002.png" in caplog.text


def test_wrong_data_root_says_what_layout_was_expected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.ERROR):
        rc = main(["--dataset", "folder", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *TINY])
    assert rc == 2
    assert str(tmp_path / "empty") in caplog.text and "expected" in caplog.text and "images" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        rc = main(["--dataset", "refuge", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *TINY])
    assert rc == 2 and "REFUGE" in caplog.text
    assert not (tmp_path / "o" / "checkpoint_last.pt").exists()


def test_a_config_the_model_refuses_is_a_usage_error_naming_the_key(data: dict[str, Path], tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A --set value that passes the type check but that a module refuses (here a reversed
    mask_head.gt_scale range) ends the run with exit code 2 and one line, not a traceback."""
    with caplog.at_level(logging.ERROR):
        rc = _train(data, tmp_path / "o", "--set", "mask_head.train_rois=jittered_gt",
                    "--set", "mask_head.gt_scale=[1.6,0.9]", "--epochs", "1")
    assert rc == 2
    assert "mask_head.gt_scale" in caplog.text and "[1.6, 0.9]" in caplog.text
    assert not (tmp_path / "o" / "checkpoint_last.pt").exists()


def test_fit_expert_scale_stores_the_training_images_line_and_is_refused_without_experts(
        data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "Training"
    for i, (half, cdr) in enumerate(((3, "0.4 0.5"), (5, "0.5 0.6"), (7, "0.75 0.75"))):
        write_drishti(root, "GT", f"drishtiGS_00{i}", ".png", cdr)
        cup = np.zeros((40, 40), np.uint8)  # cups of 6, 10 and 14 rows in the 20-row all-agree disc
        cup[20 - half:20 + half, 14:26] = 255
        write_image(root / "GT" / f"drishtiGS_00{i}" / "SoftMap" / f"drishtiGS_00{i}_cupsegSoftmap.png", cup)
    out = tmp_path / "scaled"
    rc = main(["--dataset", "drishti-gs", "--data-root", str(root), "--val-fraction", "0", "--out", str(out), *TINY,
               "--iterations", "1", "--set", "train.fit_expert_scale=true"])
    assert rc == 0
    a, b = np.polyfit([6 / 20, 10 / 20, 14 / 20], [0.45, 0.55, 0.75], 1)
    saved = json.loads((out / "config.json").read_text())["grading"]["vcdr_expert_scale"]
    assert saved == pytest.approx([a, b], abs=1e-5)
    with caplog.at_level(logging.ERROR):
        rc = _train(data, tmp_path / "o", "--iterations", "1", "--set", "train.fit_expert_scale=true")
    assert rc == 2 and "experts' CDRs of 0 images" in caplog.text and not (tmp_path / "o").exists()


def test_resolve_config_scales_lr_step_and_applies_overrides() -> None:
    args = build_parser().parse_args(["--out", "x", "--preset", "light", "--epochs", "10",
                                      "--set", "mask_head.pooling=pyramid", "--set", "train.momentum=0.8"])
    cfg = resolve_config(args)
    assert cfg.train.epochs == 10 and cfg.train.lr_step_epochs == 3  # round(30 * 10 / 100)
    assert cfg.mask_head.pooling == "pyramid" and cfg.train.momentum == 0.8 and cfg.backbone.width_mult == 0.25
    args = build_parser().parse_args(["--out", "x", "--epochs", "10", "--lr-step", "7", "--warmup-iters", "5"])
    cfg = resolve_config(args)
    assert (cfg.train.lr_step_epochs, cfg.train.warmup_iters, cfg.name) == (7, 5, "paper")
    assert resolve_config(build_parser().parse_args(["--out", "x"])).train.lr_step_epochs == 30


def test_overrides_reject_unknown_keys_and_wrong_types() -> None:
    cfg = get_preset("paper")
    new = apply_overrides(cfg, ["input.size=256", "anchors.sizes=[16,32,64,128]", "train.grad_clip=null"])
    assert new.input.size == 256 and new.anchors.sizes == (16, 32, 64, 128) and new.train.grad_clip is None
    assert cfg.input.size == 512, "the original config must not change"
    with pytest.raises(ValueError, match=r"mask_head has no setting 'poolng'.*pooling"):
        apply_overrides(cfg, ["mask_head.poolng=pyramid"])
    with pytest.raises(ValueError, match=r"input\.size: expected an integer"):
        apply_overrides(cfg, ["input.size=big"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides(cfg, ["input.size"])
    with pytest.raises(ValueError, match="no section 'nope'"):
        apply_overrides(cfg, ["nope.x=1"])


def test_optimizer_setting_builds_sgd_or_adamw_and_refuses_others() -> None:
    cfg = apply_overrides(get_preset("light"), ["train.optimizer=adamw", "train.lr=0.001", "train.momentum=0.8"])
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model, cfg.train)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["lr"] == 0.001 and opt.param_groups[0]["betas"] == (0.8, 0.999)
    sgd = build_optimizer(model, get_preset("light").train)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.9
    cfg.train.optimizer = "adam"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="train.optimizer must be 'sgd' or 'adamw', got 'adam'"):
        build_optimizer(model, cfg.train)


def test_lr_schedule_warmup_and_steps() -> None:
    # 10 iterations per epoch, x0.1 every 3 epochs, 5 warm-up iterations from 0.001
    assert lr_factor(0, 10, 3, 0.1, 5) == pytest.approx(0.001)
    assert lr_factor(5, 10, 3, 0.1, 5) == pytest.approx(1.0)
    assert lr_factor(29, 10, 3, 0.1, 5) == pytest.approx(1.0)
    assert lr_factor(30, 10, 3, 0.1, 5) == pytest.approx(0.1)
    assert lr_factor(60, 10, 3, 0.1, 5) == pytest.approx(0.01)
    assert lr_factor(2, 10, 3, 0.1, 4) == pytest.approx(0.001 * 0.5 + 0.5)


def test_rng_state_survives_weights_only_checkpoint(tmp_path: Path) -> None:
    state = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    torch.save({"rng": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"]
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    restore_rng_state(loaded)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_cosine_schedule_decays_to_zero_after_warmup() -> None:
    assert lr_factor(0, 10, 3, 0.1, 5, schedule="cosine", total_iters=105) == pytest.approx(0.001)
    assert lr_factor(5, 10, 3, 0.1, 5, schedule="cosine", total_iters=105) == pytest.approx(1.0)
    assert lr_factor(55, 10, 3, 0.1, 5, schedule="cosine", total_iters=105) == pytest.approx(0.5)
    assert lr_factor(105, 10, 3, 0.1, 5, schedule="cosine", total_iters=105) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="cosine"):
        lr_factor(0, 10, 3, 0.1, 5, schedule="linear")


def test_killed_mid_epoch_then_resumed_gives_the_uninterrupted_weights_exactly(data: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    """SIGKILL a real training process in the middle of epoch 2, --resume it, compare bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from rfnet.checkpoint import load_checkpoint

    args = ["--dataset", "folder", "--data-root", str(data["train"]), "--val-data-root", str(data["val"]),
            *TINY, "--batch-size", "1", "--epochs", "3", "--lr-step", "2"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    killed = tmp_path / "killed"
    log_path = tmp_path / "killed.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen([sys.executable, "-m", "rfnet.train", *args, "--out", str(killed)],
                                stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while "epoch 2: iteration 2/4" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "training did not reach epoch 2"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert load_checkpoint(killed / "checkpoint_last.pt").extra["epoch"] == 1  # epoch 2 was lost mid-way
    assert main(["--out", str(killed), "--resume", "--device", "cpu", "--threads", "1", "--no-progress"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoint_last.pt")
    b = load_checkpoint(killed / "checkpoint_last.pt")
    assert a.extra["epoch"] == b.extra["epoch"] == 3
    for k, va in a.state_dict.items():
        assert torch.equal(va, b.state_dict[k]), f"weights differ at {k}"


@pytest.mark.parametrize("native", [False, True])
def test_bf16_preset_trains_in_float32_where_the_cpu_has_no_native_bf16(
        data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        native: bool) -> None:
    import rfnet.training.loop as loop
    import rfnet.training.run as run

    monkeypatch.setattr(loop, "native_bf16", lambda device_type="cpu": native)
    seen: list[bool] = []
    real = run.train_one_epoch

    def spy(*args: object, **kwargs: object) -> dict[str, float]:
        seen.append(bool(kwargs["bf16"]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run, "train_one_epoch", spy)
    with caplog.at_level(logging.WARNING):
        assert _train(data, tmp_path / "o", "--iterations", "1", "--set", "train.bf16=true") == 0
    assert seen == [native]
    assert ("no native bfloat16" in caplog.text) is not native


def test_data_mixture_trains_fits_the_experts_line_on_drishti_only_and_resumes(
        data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--data twice: a Drishti-GS folder and a generated folder trained together by weight; the
    experts' line is fitted on the Drishti items alone, the run's data specs survive --resume, and
    giving both --data and --dataset is refused."""
    root = tmp_path / "Training"
    for i, (half, cdr) in enumerate(((3, "0.4 0.5"), (5, "0.5 0.6"), (7, "0.75 0.75"))):
        write_drishti(root, "GT", f"drishtiGS_00{i}", ".png", cdr)
        cup = np.zeros((40, 40), np.uint8)
        cup[20 - half:20 + half, 14:26] = 255
        write_image(root / "GT" / f"drishtiGS_00{i}" / "SoftMap" / f"drishtiGS_00{i}_cupsegSoftmap.png", cup)
    out = tmp_path / "mix"
    specs = ["--data", f"kind=drishti-gs,root={root},weight=2", "--data", f"kind=folder,root={data['train']}"]
    with caplog.at_level(logging.INFO):
        rc = main([*specs, "--val-fraction", "0", "--out", str(out), *TINY, "--epochs", "1",
                   "--set", "train.fit_expert_scale=true"])
    assert rc == 0
    assert "fitted on the ground truth of 3 training images" in caplog.text and "x2" in caplog.text
    assert main(["--out", str(out), "--resume", "--epochs", "2", "--device", "cpu", "--threads", "1",
                 "--no-progress"]) == 0
    assert len(_rows(out / "metrics.csv")) == 2
    with caplog.at_level(logging.ERROR):
        rc = main([*specs, "--dataset", "folder", "--data-root", str(data["train"]), "--out", str(tmp_path / "x"), *TINY])
    assert rc == 2 and "not both" in caplog.text


def test_split_seed_keeps_the_fold_while_seed_changes_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--split-seed fixes the --fold split; --seed alone still sets both (as before); --resume keeps them."""
    from rfnet.data.splits import kfold_split
    from rfnet.training.run import TrainState

    generate_folder(tmp_path / "d", n=6, size=64, seed=21)
    base = ["--dataset", "folder", "--data-root", str(tmp_path / "d"), "--fold", "0", "--folds", "3", "--epochs", "1",
            *TINY]
    names = sorted(p.stem for p in (tmp_path / "d" / "images").iterdir())
    runs = {"split0_seed5": ["--seed", "5", "--split-seed", "0"], "seed5": ["--seed", "5"]}
    for run, extra in runs.items():
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main([*base, "--out", str(tmp_path / run), *extra]) == 0
        split = 0 if "--split-seed" in extra else 5
        assert f"fold 0 of 3 (seed {split}, {len(kfold_split(names, 3, split)[0][1])} items)" in caplog.text
        saved = TrainState.load(tmp_path / run / "checkpoint_last.pt").args
        assert (saved["seed"], saved["split_seed"]) == (5, split)
    # other training images, other weights
    states = [TrainState.load(tmp_path / run / "checkpoint_last.pt").model_state for run in runs]
    assert states[0].keys() == states[1].keys()
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0] if states[0][k].is_floating_point())
