"""Generated fundus images: exact, nested masks; the CLI writes a folder the loader reads back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfnet.common.metrics import vcdr
from rfnet.data import load_dataset
from rfnet.data.synthetic import generate_sample, generate_sample_with_info, main


def test_generate_sample_properties() -> None:
    rng = np.random.default_rng(0)
    cdrs = []
    for _ in range(12):
        image, disc, cup, info = generate_sample_with_info(rng, 96)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert disc.dtype == bool and cup.dtype == bool and cup.any() and not (cup & ~disc).any()
        assert 0.01 < disc.mean() < 0.12  # a disc of plausible size
        # the disc is bright: mean disc pixel brighter than the surrounding retina
        assert image[disc].mean() > image[~disc & (image.sum(axis=2) > 30)].mean() + 20
        assert (image[0, 0] == 0).all() and (image[-1, -1] == 0).all()  # black corners outside the FOV
        assert info["vcdr"] == pytest.approx(vcdr(disc, cup))
        cdrs.append(info["vcdr"])
    assert min(cdrs) < 0.45 and max(cdrs) > 0.6 and all(0.1 < c < 0.95 for c in cdrs)
    a = generate_sample(np.random.default_rng(7), 64)
    b = generate_sample(np.random.default_rng(7), 64)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="size"):
        generate_sample(rng, 8)


def test_cli_writes_folder_layout_and_loader_reads_it(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert main(["--out", str(out), "--n", "3", "--size", "64", "--seed", "2"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["synth_0000.png", "synth_0001.png", "synth_0002.png"]
    assert (out / "labels.csv").read_text().startswith("name,label,vcdr\n")
    ds = load_dataset("folder", out)
    assert len(ds) == 3 and all(lbl in (0, 1) for lbl in ds.labels)
    for i in range(3):
        image, disc, cup = generate_sample(np.random.default_rng([2, i]), 64)
        s = ds[i]
        np.testing.assert_array_equal(s.image, image)  # PNG is lossless
        np.testing.assert_array_equal(s.disc, disc)
        np.testing.assert_array_equal(s.cup, cup)
    assert ds.problems == []
    # a non-empty --out is refused without --overwrite; with it, stale images are removed
    assert main(["--out", str(out), "--n", "1", "--size", "64"]) == 2  # ExitCode.USAGE: nothing overwritten
    assert main(["--out", str(out), "--n", "1", "--size", "64", "--overwrite"]) == 0
    assert len(load_dataset("folder", out)) == 1
