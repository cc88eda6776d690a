"""Checkpoint round trip and its error cases."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rfnet.checkpoint import (FORMAT, CheckpointError, checkpoint_sha256, load_checkpoint, load_model,
                              save_checkpoint)
from rfnet.config import get_preset
from rfnet.model import build_model


@pytest.fixture(scope="module")
def light():
    torch.manual_seed(0)
    cfg = get_preset("light")
    return build_model(cfg), cfg


def test_round_trip(tmp_path: Path, light) -> None:
    model, cfg = light
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, cfg, extra={"epoch": 3, "dice": 0.91, "hist": [1.0, 2.0],
                                                                        "opt": {"lr": torch.tensor(0.01)}})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary file left behind
    ckpt = load_checkpoint(path)
    assert ckpt.config == cfg and ckpt.extra["epoch"] == 3 and ckpt.extra["hist"] == [1.0, 2.0]
    loaded, cfg2 = load_model(path)
    assert cfg2 == cfg and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    sha = checkpoint_sha256(path)
    assert len(sha) == 64 and sha == checkpoint_sha256(path)


def test_extra_must_be_weights_only_safe(tmp_path: Path, light) -> None:
    model, cfg = light
    with pytest.raises(TypeError, match=r"extra\['bad'\].*Path"):
        save_checkpoint(tmp_path / "m.pt", model, cfg, extra={"bad": Path("x")})
    assert not (tmp_path / "m.pt").exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable RF-Net checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt: not an RF-Net checkpoint"):
        load_checkpoint(other)


def test_other_format_version(tmp_path: Path) -> None:
    path = tmp_path / "v2.pt"
    torch.save({"format": FORMAT, "format_version": 2, "config": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="v2.pt: checkpoint format_version 2 is not supported"):
        load_checkpoint(path)


def test_state_dict_not_fitting_config(tmp_path: Path, light) -> None:
    model, cfg = light
    path = tmp_path / "mismatch.pt"
    paper = get_preset("paper")
    save_checkpoint(path, model, paper)  # light weights under the paper config
    with pytest.raises(CheckpointError, match="mismatch.pt: weights do not fit.*preset 'paper'"):
        load_model(path)


def test_inference_settings_override_the_stored_ones(tmp_path: Path, light) -> None:
    """``top_k``, ``proposals`` and ``crop_margin`` change what the loaded model does at test, not its weights."""
    from rfnet.errors import UsageError

    model, cfg = light
    path = save_checkpoint(tmp_path / "m.pt", model, cfg)
    loaded, cfg2 = load_model(path, top_k=3, proposals=7, crop_margin=1.5)
    assert (cfg2.roi_heads.detections_per_img, cfg2.rpn.post_nms_top_n_test, cfg2.input.crop_margin) == (3, 7, 1.5)
    assert loaded.rpn.cfg.post_nms_top_n_test == 7 and loaded.roi_heads.cfg.detections_per_img == 3
    assert load_checkpoint(path).config.rpn.post_nms_top_n_test == cfg.rpn.post_nms_top_n_test  # the file unchanged
    assert load_checkpoint(path).config.input.crop_margin == 1.0
    for bad in ({"top_k": 0}, {"proposals": 0}):
        with pytest.raises(UsageError, match="must be >= 1"):
            load_model(path, **bad)
    for margin in (0.9, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="--crop-margin must be a finite number >= 1"):
            load_model(path, crop_margin=margin)
