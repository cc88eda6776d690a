"""Each public dataset's exact layout, built in tmp_path from generated files, loads correctly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.data import DatasetLayoutError, load_dataset
from rfnet.data.sample import SampleError, box_from_mask
from tests.support.drishti_files import drishti_soft_maps, write_drishti


def test_refuge_train_layout(tmp_path: Path, write_refuge_pair) -> None:
    img, ann = tmp_path / "Training400", tmp_path / "Annotation-Training400" / "Disc_Cup_Masks"
    _, d1, c1 = write_refuge_pair(img / "Glaucoma" / "g0001.jpg", ann / "Glaucoma" / "g0001.bmp", 1)
    write_refuge_pair(img / "Non-Glaucoma" / "n0001.jpg", ann / "Non-Glaucoma" / "n0001.bmp", 2)
    write_refuge_pair(img / "Non-Glaucoma" / "n0002.jpg", ann / "Non-Glaucoma" / "n0002.bmp", 3)
    # macOS archive junk must be ignored
    (tmp_path / "__MACOSX" / "Training400" / "Glaucoma").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "Training400" / "Glaucoma" / "._g0001.jpg").write_bytes(b"\0\5junk")
    (img / "Glaucoma" / "._g0002.jpg").write_bytes(b"\0\5junk")
    ds = load_dataset("refuge", tmp_path, split="train")
    assert ds.names == ["g0001", "n0001", "n0002"] and ds.labels == [1, 0, 0]
    s = ds[0]
    assert s.image.shape == (48, 48, 3) and s.image.dtype == np.uint8
    np.testing.assert_array_equal(s.disc, d1)
    np.testing.assert_array_equal(s.cup, c1)
    np.testing.assert_array_equal(s.box, box_from_mask(d1))
    assert s.meta["label"] == 1 and s.meta["orig_size"] == (48, 48) and s.meta["dataset"] == "refuge"
    assert s.meta["path"].endswith("g0001.jpg")
    assert ds.problems == []


def test_refuge_validation_and_test_layouts(tmp_path: Path, write_refuge_pair) -> None:
    write_refuge_pair(tmp_path / "REFUGE-Validation400" / "V0001.jpg", tmp_path / "REFUGE-Validation400-GT" / "Disc_Cup_Masks" / "V0001.bmp", 4)
    val = load_dataset("refuge", tmp_path, split="validation")
    assert val.names == ["V0001"] and val.labels == [None] and val[0].disc.any()
    gt = tmp_path / "REFUGE-Test-GT" / "Disc_Cup_Masks"
    write_refuge_pair(tmp_path / "Test400" / "T0001.jpg", gt / "G" / "T0001.bmp", 5)
    write_refuge_pair(tmp_path / "Test400" / "T0002.jpg", gt / "N" / "T0002.bmp", 6)
    test = load_dataset("refuge", tmp_path, split="test")
    assert test.names == ["T0001", "T0002"] and test.labels == [1, 0]
    assert test[1].cup.any()


def test_refuge_wrong_root_says_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"Training400.*expected the REFUGE 2018 train layout"):
        load_dataset("refuge", tmp_path, split="train")
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_dataset("refuge", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("refuge", tmp_path, split="dev")


def test_drishti_layout_thresholds_and_cdr(tmp_path: Path) -> None:
    base = tmp_path / "Drishti-GS1_files"
    write_drishti(base / "Training", "GT", "drishtiGS_001", ".png", "0.7 0.75 0.8 0.65\n")
    write_drishti(base / "Training", "GT", "drishtiGS_002", ".jpg", None)
    write_drishti(base / "Test", "Test_GT", "drishtiGS_003", ".png", "0.5 0.5 0.5 0.5")
    ds = load_dataset("drishti-gs", base)
    assert ds.names == ["drishtiGS_001", "drishtiGS_002"]
    s = ds[0]
    assert s.disc.sum() == 20 * 20 and s.cup.sum() == 10 * 10  # all four experts agree
    assert s.meta["expert_cdr"] == [0.7, 0.75, 0.8, 0.65]
    assert s.meta["expert_cdr_mean"] == pytest.approx(0.725)
    assert ds[1].meta["expert_cdr"] is None and ds[1].image.shape == (40, 40, 3)
    for thr, disc_side, cup_side in ((191, 24, 10), (128, 28, 12), (64, 32, 16)):
        d = load_dataset("drishti-gs", tmp_path, "train", soft_threshold=thr)[0]  # parent root accepted
        assert (d.disc.sum(), d.cup.sum()) == (disc_side**2, cup_side**2)
    test = load_dataset("drishti", base, split="test")
    assert test.names == ["drishtiGS_003"] and test[0].meta["expert_cdr_mean"] == pytest.approx(0.5)
    split_root = load_dataset("drishti-gs", base / "Training")  # a split folder as the root
    assert len(split_root) == 2
    with pytest.raises(ValueError, match="soft_threshold"):
        load_dataset("drishti-gs", base, soft_threshold=0)


def test_drishti_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"Drishti-GS1_files/\{Training,Test\}/Images"):
        load_dataset("drishti-gs", tmp_path)


def test_rim_one_dl_layout(tmp_path: Path, make_sample) -> None:
    imgs = tmp_path / "RIM-ONE_DL_images" / "partitioned_by_hospital"
    segs = tmp_path / "RIM-ONE_DL_reference_segmentations"
    expected = {}
    for split, cls, stem, seed in (("training_set", "glaucoma", "r1_Im001", 1), ("training_set", "normal", "r2_Im002", 2), ("test_set", "normal", "r3_Im003", 3)):
        image, disc, cup = make_sample(seed)
        write_image(imgs / split / cls / f"{stem}.png", image)
        write_image(segs / cls / f"{stem}-1-Disc-T.png", disc)
        write_image(segs / cls / f"{stem}-1-Cup-T.png", cup)
        expected[stem] = (disc, cup)
    ds = load_dataset("rim-one-dl", tmp_path, split="train")
    assert ds.names == ["r1_Im001", "r2_Im002"] and ds.labels == [1, 0]
    s = ds[1]
    np.testing.assert_array_equal(s.disc, expected["r2_Im002"][0])
    np.testing.assert_array_equal(s.cup, expected["r2_Im002"][1])
    assert load_dataset("rim-one-dl", tmp_path, split="test").names == ["r3_Im003"]
    with pytest.raises(DatasetLayoutError, match="partitioned_randomly"):
        load_dataset("rim-one-dl", tmp_path, partition="randomly")


def test_factory_rejects_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'kaggle'"):
        load_dataset("kaggle", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="bad option"):
        load_dataset("folder", tmp_path, soft_threshold=3)
