"""Training items follow docs/design.md; bad items are dropped and counted, or raise when strict."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rfnet.common.imageio import write_image
from rfnet.common.metrics import to_refuge_seg
from rfnet.common.preprocess import letterbox_mask
from rfnet.config import InputConfig, ModelConfig, paper_config
from rfnet.data import SampleError, load_dataset
from rfnet.data.torch_dataset import Batch, FundusTorchDataset, collate_fn
from rfnet.errors import UsageError
from tests.support.drishti_files import drishti_soft_maps, write_drishti


@pytest.fixture
def folder(tmp_path: Path, make_sample) -> Path:
    for i in range(5):
        image, disc, cup = make_sample(i)
        image = np.ascontiguousarray(image[:, :40])  # non-square, so padding matters
        write_image(tmp_path / "images" / f"s{i}.png", image)
        write_image(tmp_path / "masks" / f"s{i}.png", to_refuge_seg(disc[:, :40], cup[:, :40]))
    (tmp_path / "images" / "s2.png").write_bytes(b"not a png")  # one bad item
    return tmp_path


def _mask_box(m: torch.Tensor) -> np.ndarray:
    ys, xs = np.nonzero(m.numpy())
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("train", [False, True])
def test_items_match_contract(folder: Path, train: bool) -> None:
    cfg = InputConfig(size=64)
    td = FundusTorchDataset(load_dataset("folder", folder), cfg, train=train)
    torch.manual_seed(0)
    for i in (0, 1, 3, 4):
        item = td[i]
        assert item is not None
        x, target, meta = item
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert target["boxes"].shape == (1, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].tolist() == [1] and target["labels"].dtype == torch.int64
        assert target["masks"].shape == (1, 2, 64, 64) and target["masks"].dtype == torch.float32
        disc, cup = target["masks"][0]
        assert set(torch.unique(disc).tolist()) <= {0.0, 1.0} and not bool((cup > disc).any())
        # the box (mapped from original pixels) agrees with the letterboxed mask to a pixel
        np.testing.assert_allclose(target["boxes"][0].numpy(), _mask_box(disc), atol=1.5)
        lb = meta["letterbox"]
        assert (lb.orig_h, lb.orig_w, lb.size) == (48, 40, 64) and meta["name"] == f"s{i}"
        if not train:
            # padding columns are black before normalisation: (0 - mean) / std
            np.testing.assert_allclose(x[:, 0, 0].numpy(), -np.array(cfg.mean) / np.array(cfg.std), rtol=1e-6)
            assert meta["augment"].is_identity


def test_augmentation_applies_and_is_seeded(folder: Path) -> None:
    td = FundusTorchDataset(load_dataset("folder", folder), paper_config(), train=True)
    td.input_cfg = InputConfig(size=64)
    torch.manual_seed(1)
    ops = {td[0][2]["augment"] for _ in range(30)}  # type: ignore[index]
    assert len(ops) > 4
    torch.manual_seed(5)
    a = td[0]
    torch.manual_seed(5)
    b = td[0]
    assert a is not None and b is not None and torch.equal(a[0], b[0]) and a[2]["augment"] == b[2]["augment"]


def test_color_jitter_changes_pixels_not_targets_or_padding(folder: Path) -> None:
    cfg = paper_config()
    cfg.input = InputConfig(size=64)
    cfg.train.color_jitter = 0.3
    plain = FundusTorchDataset(load_dataset("folder", folder), paper_config(), train=False)
    plain.input_cfg = InputConfig(size=64)
    jit = FundusTorchDataset(load_dataset("folder", folder), cfg, train=True)
    torch.manual_seed(3)
    item, ref = jit[0], plain[0]
    assert item is not None and ref is not None
    op = item[2]["augment"]
    img = op.apply_array(ref[0].permute(1, 2, 0).numpy())  # the unjittered image, same flips
    x0, y0, x1, y1 = item[2]["letterbox"].content_region()
    assert (x1 - x0, y1 - y0) == (40 * 64 // 48, 64)  # 48x40 image: content 53x64, padded columns
    got = item[0].permute(1, 2, 0).numpy()
    assert np.abs(got - img).max() > 0.05  # pixels changed...
    pad = np.zeros(img.shape[:2], bool)
    pad[:, :x0] = True
    pad[:, x1:] = True
    pad = op.apply_array(pad)
    np.testing.assert_allclose(got[pad], img[pad])  # ...but not the letterbox padding
    assert torch.equal(item[1]["masks"], torch.from_numpy(np.stack(
        [op.apply_array(m) for m in ref[1]["masks"][0].numpy()])).unsqueeze(0))  # masks untouched


def test_bad_items_dropped_and_counted(folder: Path) -> None:
    td = FundusTorchDataset(load_dataset("folder", folder), InputConfig(size=32), train=True)
    dl = DataLoader(td, batch_size=2, shuffle=False, collate_fn=td.collate, num_workers=0)
    batches = list(dl)
    assert all(isinstance(b, Batch) for b in batches)
    assert sum(b.skipped for b in batches) == 1 and sum(b.images.shape[0] for b in batches) == 4
    assert batches[1].images.shape == (1, 3, 32, 32) and len(batches[1].targets) == 1
    assert list(td.skipped) == ["s2"] and "not a readable image" in td.skipped["s2"]
    empty = collate_fn([None, None], 32)
    assert empty.images.shape == (0, 3, 32, 32) and empty.skipped == 2
    strict = FundusTorchDataset(load_dataset("folder", folder), InputConfig(size=32), strict=True)
    with pytest.raises(SampleError, match=r"s2\.png: not a readable image"):
        strict[2]
