"""Deterministic splits by name; flips/rotations keep boxes consistent with masks."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.common.metrics import to_refuge_seg
from rfnet.data import kfold_split, load_dataset, split_dataset, train_val_split
from rfnet.data.augment import ColorJitter, FlipRotate, augment_arrays, augment_sample
from rfnet.data.sample import Sample, box_from_mask
from rfnet.data.splits import kfold_datasets

NAMES = [f"drishtiGS_{i:03d}" for i in range(50)]


def test_train_val_split_deterministic() -> None:
    tr, va = train_val_split(NAMES, 0.2, seed=3)
    assert len(va) == 10 and len(tr) == 40 and not set(tr) & set(va) and sorted(tr + va) == NAMES
    assert train_val_split(list(reversed(NAMES)), 0.2, seed=3) == (tr, va)  # order-independent
    assert train_val_split(NAMES, 0.2, seed=4)[1] != va
    assert train_val_split(NAMES[:3], 0.01)[1] != []  # at least one validation item
    assert train_val_split(NAMES, 0.0) == (NAMES, [])
    with pytest.raises(ValueError):
        train_val_split(NAMES, 1.0)
    with pytest.raises(ValueError, match="unique"):
        train_val_split(["a", "a"], 0.5)


def test_kfold_split_partitions() -> None:
    folds = kfold_split(NAMES, 5, seed=0)
    assert len(folds) == 5
    vals = [set(v) for _, v in folds]
    assert all(len(v) == 10 for v in vals)
    assert set().union(*vals) == set(NAMES)
    assert all(not a & b for a, b in itertools.combinations(vals, 2))
    for tr, va in folds:
        assert set(tr) == set(NAMES) - set(va)
    assert kfold_split(NAMES, 5, seed=0) == folds and kfold_split(NAMES, 5, seed=1) != folds
    with pytest.raises(ValueError):
        kfold_split(NAMES[:3], 5)


def test_split_loaders(tmp_path: Path, make_sample) -> None:
    for i in range(6):
        image, disc, cup = make_sample(i)
        write_image(tmp_path / "images" / f"s{i}.png", image)
        write_image(tmp_path / "masks" / f"s{i}.png", to_refuge_seg(disc, cup))
    ds = load_dataset("folder", tmp_path)
    tr, va = split_dataset(ds, 0.34, seed=0)
    assert len(tr) == 4 and len(va) == 2 and va[0].name in va.names
    assert type(tr) is type(ds)
    folds = kfold_datasets(ds, 3)
    assert [len(v) for _, v in folds] == [2, 2, 2]
    with pytest.raises(KeyError, match="nope"):
        ds.subset(["nope"])


ALL_OPS = [FlipRotate(h, v, k) for h in (False, True) for v in (False, True) for k in range(4)]


@pytest.mark.parametrize("op", ALL_OPS, ids=str)
def test_boxes_follow_masks(op: FlipRotate) -> None:
    h, w = 30, 50  # non-square, so rotations change the shape
    disc = np.zeros((h, w), bool)
    disc[3:12, 31:45] = True
    cup = np.zeros_like(disc)
    cup[5:9, 35:40] = True
    image = np.zeros((h, w, 3), np.uint8)
    image[disc] = (255, 0, 0)
    box = box_from_mask(disc)[None]
    img2, (d2, c2), b2 = augment_arrays(op, image, [disc, cup], box)
    assert d2.shape == op.output_shape(h, w) and img2.shape[:2] == d2.shape
    np.testing.assert_array_equal(b2[0], box_from_mask(d2))  # exact
    np.testing.assert_array_equal(img2[..., 0] == 255, d2)
    assert not (c2 & ~d2).any() and c2.sum() == cup.sum()


def test_rot90_direction_matches_numpy() -> None:
    m = np.zeros((4, 6), bool)
    m[0, 5] = True  # top-right pixel -> top-left after a counter-clockwise quarter turn
    op = FlipRotate(k=1)
    out = op.apply_array(m)
    assert out.shape == (6, 4) and out[0, 0]
    np.testing.assert_array_equal(op.apply_boxes(np.array([[5.0, 0.0, 6.0, 1.0]]), 4, 6), [[0, 0, 1, 1]])


def test_augment_sample_and_randomness() -> None:
    rng = np.random.default_rng(0)
    ops = {FlipRotate.random(rng) for _ in range(400)}
    assert len(ops) == 16  # every flip/rotation combination occurs
    disc = np.zeros((20, 30), bool)
    disc[2:8, 20:28] = True
    s = Sample(np.zeros((20, 30, 3), np.uint8), disc, disc.copy(), box_from_mask(disc), {"name": "x"})
    for seed in range(8):
        a = augment_sample(s, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.box, box_from_mask(a.disc))
        assert a.meta["name"] == "x" and isinstance(a.meta["augment"], FlipRotate)


def test_color_jitter_formula_and_region() -> None:
    img = np.full((4, 6, 3), 100, np.uint8)
    img[:, 3:] = 200
    np.testing.assert_array_equal(ColorJitter().apply(img), img)  # identity
    out = ColorJitter(brightness=1.1, contrast=2.0, gain=(1.0, 0.5, 1.0)).apply(img, (0, 0, 6, 2))
    # mean 150: 100 -> (100-150)*2+150 = 50 -> *1.1 = 55; 200 -> 250 -> 275 -> clipped 255
    assert out[0, 0, 0] == 55 and out[0, 5, 0] == 255 and out[0, 0, 1] == 28  # 27.5 rounds to even 28
    np.testing.assert_array_equal(out[2:], img[2:])  # outside the region: untouched
    g = ColorJitter(gamma=2.0).apply(np.full((1, 1, 3), 128, np.uint8))
    assert int(g[0, 0, 0]) == round((128 / 255) ** 2 * 255)
    rng = np.random.default_rng(0)
    jit = [ColorJitter.random(rng, 0.2) for _ in range(50)]
    assert all(0.8 <= j.brightness <= 1.2 and 0.9 <= min(j.gain) and max(j.gain) <= 1.1 for j in jit)
    with pytest.raises(ValueError, match="strength"):
        ColorJitter.random(rng, 1.5)


def test_held_out_fold_is_kfold_validation_part(tmp_path: Path, make_sample) -> None:
    from rfnet.data import held_out_fold

    for i in range(6):
        image, disc, cup = make_sample(i)
        write_image(tmp_path / "images" / f"s{i}.png", image)
        write_image(tmp_path / "masks" / f"s{i}.png", to_refuge_seg(disc, cup))
    ds = load_dataset("folder", tmp_path)
    assert held_out_fold(ds, 2, 3, seed=1).names == kfold_split(ds.names, 3, 1)[2][1]
    with pytest.raises(ValueError, match="--eval-fold must be in 0..2 for --folds 3, got 3"):
        held_out_fold(ds, 3, 3, option="--eval-fold")
