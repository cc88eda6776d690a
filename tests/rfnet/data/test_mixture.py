"""Several datasets as one (rfnet.data.mixture): parsing, per-source conventions, per-dataset folds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.data import kfold_split
from rfnet.data.mixture import DataSource, MixedDataset, load_mixture, parse_data_spec, read_data_config
from rfnet.data.splits import held_out_fold
from rfnet.errors import UsageError


def _refuge(root: Path, write_refuge_pair, n: int, seed0: int = 0) -> None:
    for i in range(n):
        name = f"V{i + 1:04d}"
        write_refuge_pair(root / "REFUGE-Validation400" / f"{name}.jpg",
                          root / "REFUGE-Validation400-GT" / "Disc_Cup_Masks" / f"{name}.bmp", seed0 + i)


def _rimone(root: Path, make_sample, n: int) -> None:
    imgs = root / "RIM-ONE_DL_images" / "partitioned_randomly" / "training_set"
    segs = root / "RIM-ONE_DL_reference_segmentations"
    for i in range(n):
        cls = "glaucoma" if i % 2 else "normal"
        image, disc, cup = make_sample(100 + i)
        write_image(imgs / cls / f"r1_Im{i:03d}.png", image)
        write_image(segs / cls / f"r1_Im{i:03d}-1-Disc-T.png", disc)
        write_image(segs / cls / f"r1_Im{i:03d}-1-Cup-T.png", cup)


def test_parse_data_spec_forms_and_errors(tmp_path: Path) -> None:
    src = parse_data_spec("kind=rim-one-dl,root=/d/R,split=train,weight=2,partition=randomly")
    assert src == DataSource("rim-one-dl", "/d/R", "train", 2.0, {"partition": "randomly"})
    assert parse_data_spec(src.to_spec()) == src
    assert parse_data_spec("refuge:/d/REFUGE") == DataSource("refuge", "/d/REFUGE")
    assert parse_data_spec("kind=drishti-gs,root=D,soft_threshold=191").options == {"soft_threshold": 191}
    for bad, match in (("kind=refuge", "missing root"), ("kind=refuge,root=R,weight=0", "weight must be > 0"),
                       ("kind=refuge,root=R,weight=x", "weight must be a number"), ("refuge,root=R", "KEY=VALUE"),
                       ("kind=a,root=R,kind=b", "given twice")):
        with pytest.raises(UsageError, match=match):
            parse_data_spec(bad)
    cfg = tmp_path / "data.json"
    cfg.write_text(json.dumps([{"kind": "refuge", "root": "R", "split": "validation", "weight": 0.5}]))
    assert read_data_config(cfg) == [DataSource("refuge", "R", "validation", 0.5)]
    cfg.write_text("{}")
    with pytest.raises(UsageError, match="non-empty JSON list"):
        read_data_config(cfg)


def test_mixture_keeps_each_source_and_folds_each_dataset(tmp_path: Path, write_refuge_pair, make_sample) -> None:
    _refuge(tmp_path / "REFUGE", write_refuge_pair, 6)
    _rimone(tmp_path / "RIM", make_sample, 10)
    sources = [DataSource("refuge", str(tmp_path / "REFUGE"), "validation"),
               DataSource("rim-one-dl", str(tmp_path / "RIM"), weight=3.0, options={"partition": "randomly"})]
    ds = load_mixture(sources)
    assert isinstance(ds, MixedDataset) and len(ds) == 16
    assert ds[0].meta["dataset"] == "refuge" and ds[6].meta["dataset"] == "rim-one-dl"
    assert ds[7].meta["label"] in (0, 1) and ds[0].meta["label"] is None  # each source's own labels
    assert set(ds.groups.values()) == {"refuge", "rim-one-dl"}
    # each source drawn in proportion to its weight, whatever its size: 1 : 3
    w = ds.item_weights()
    assert w[:6].sum() == pytest.approx(1.0) and w[6:].sum() == pytest.approx(3.0)
    # folds are made per dataset: each dataset's held-out images are its own 5-fold split's
    refuge_alone = sources[0].load()
    for k in range(5):
        held = held_out_fold(ds, k, 5)
        alone = kfold_split(refuge_alone.names, 5)[k][1]
        assert [n for n in held.names if n.startswith("V")] == alone
        assert held.item_weights().shape == (len(held),)
    folds = kfold_split(ds.names, 5, 0, ds.groups)
    assert sorted(n for _, val in folds for n in val) == sorted(ds.names)


def test_mixture_refuses_duplicate_names_and_one_source_is_the_plain_loader(tmp_path: Path, write_refuge_pair) -> None:
    _refuge(tmp_path / "A", write_refuge_pair, 2)
    _refuge(tmp_path / "B", write_refuge_pair, 2, seed0=5)
    a = DataSource("refuge", str(tmp_path / "A"), "validation")
    assert type(load_mixture([a])).__name__ == "RefugeDataset"
    with pytest.raises(UsageError, match="names must be unique"):
        load_mixture([a, DataSource("refuge", str(tmp_path / "B"), "validation")])


def test_weighted_sampler_draws_by_weight_and_repeats_per_epoch() -> None:
    torch = pytest.importorskip("torch")  # noqa: F841
    from rfnet.training.sampler import WeightedMixtureSampler

    weights = np.array([1.0] * 10 + [9.0] * 10)
    s = WeightedMixtureSampler(weights / weights.sum(), seed=3)
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    s.set_epoch(0)
    assert list(s) == first != second and len(first) == 20
    draws = []
    for e in range(200):
        s.set_epoch(e)
        draws += list(s)
    share = np.mean(np.array(draws) >= 10)
    assert 0.85 < share < 0.95  # 90 % of the weight
    ranks = [WeightedMixtureSampler(weights, seed=3, rank=r, world_size=2) for r in (0, 1)]
    parts = [list(r) for r in ranks]
    assert sorted(parts[0] + parts[1]) == sorted(first) and len(parts[0]) == len(ranks[0]) == 10
    with pytest.raises(ValueError):
        WeightedMixtureSampler([0.0, 0.0])
