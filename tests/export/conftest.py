"""Shared fixtures of the ONNX export tests: one small RF-Net checkpoint and its exports.

The model and why it is built that way: tests/support/small_model.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.small_model import SIZE, blob_image, small_config, spread_heads  # noqa: F401


@pytest.fixture(scope="session")
def small_model() -> tuple[Any, Any]:
    """(eval RFNet, ModelConfig) of the small test model."""
    import torch

    from rfnet.model import build_model

    cfg = small_config()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    spread_heads(model)
    return model, cfg


@pytest.fixture(scope="session")
def small_checkpoint(small_model: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rfnet.checkpoint import save_checkpoint

    model, cfg = small_model
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(path, model, cfg)
    return path


@pytest.fixture(scope="session")
def parity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four blob images (PNG) for the ONNX Runtime vs PyTorch checks."""
    from rfnet.common.imageio import write_image

    out = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(5)
    for i in range(4):
        write_image(out / f"blob_{i}.png", blob_image(rng))
    return out


@pytest.fixture(scope="session")
def exported_onnx(small_checkpoint: Path, parity_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """``python export/export_onnx.py`` at batch 1 (with its parity check): (path, exit code, stdout)."""
    import contextlib
    import io

    from rfnet.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = export_onnx.main(["--checkpoint", str(small_checkpoint), "--output", str(out),
                               "--images", str(parity_dir), "--num-images", "2"])
    return out, rc, buf.getvalue()


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight synthetic fundus images (+ REFUGE-style masks) in the generator's folder layout."""
    from rfnet.data.synthetic import generate_folder

    out = tmp_path_factory.mktemp("calib") / "synthetic"
    generate_folder(out, 8, size=160, seed=3)
    return out

