"""The deployed path gives the masks of the PyTorch evaluation path on the same images.

PyTorch: ``rfnet.predict.predict_images`` (what ``rfnet.evaluate`` and training's validation
use). Deployment: ``export/export_onnx.py`` then ``runtime/infer.py`` on ONNX Runtime, whose
mask PNGs are read back. Per image and class the two masks must agree with Dice >= 0.999.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rfnet.export import export_onnx  # noqa: E402
from rfnet.common.imageio import read_image, read_mask, write_image  # noqa: E402
from rfnet.common.metrics import agreement  # noqa: E402
from rfnet.predict import predict_images  # noqa: E402
from rfnet.runtime.infer import main as infer_main  # noqa: E402
from tests.support.small_model import blob_image, save_small_checkpoint  # noqa: E402


def test_runtime_masks_equal_pytorch_evaluation(tmp_path: Path) -> None:
    ckpt = tmp_path / "small.pt"
    model, cfg = save_small_checkpoint(ckpt)

    images = tmp_path / "images"
    rng = np.random.default_rng(11)
    # Non-square sizes exercise the letterbox and the paste back into original pixels.
    for i, (h, w) in enumerate([(160, 200), (190, 150), (140, 140)]):
        write_image(images / f"blob_{i}.png", blob_image(rng, size=max(h, w))[:h, :w])

    onnx_path = tmp_path / "small.onnx"
    assert export_onnx.main(["--checkpoint", str(ckpt), "--output", str(onnx_path), "--images", str(images),
                             "--num-images", "3"]) == 0
    out = tmp_path / "out"
    assert infer_main(["--model", str(onnx_path), "--input", str(images), "--output", str(out),
                       "--save", "masks,ungradable", "--no-progress"]) == 0  # blobs are no fundus photographs

    paths = sorted(images.glob("*.png"))
    with torch.no_grad():
        segs = predict_images(model, [read_image(p) for p in paths], cfg, torch.device("cpu"))
    found = 0
    for path, seg in zip(paths, segs):
        disc_rt = read_mask(out / "masks" / f"{path.stem}_disc.png") > 0
        cup_rt = read_mask(out / "masks" / f"{path.stem}_cup.png") > 0
        assert disc_rt.shape == seg.disc.shape == read_image(path).shape[:2]
        assert agreement(disc_rt, seg.disc) >= 0.999, path.name
        assert agreement(cup_rt, seg.cup) >= 0.999, path.name
        found += int(seg.disc.any())
    assert found >= 2, "the test model should segment something on most images, or the comparison is empty"
