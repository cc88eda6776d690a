"""Generic folder encodings and bad entries: reported, skippable, or fatal with strict."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.common.metrics import to_refuge_seg
from rfnet.data import DatasetLayoutError, SampleError, load_dataset


def _square_masks(h: int = 30, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    disc = np.zeros((h, w), bool)
    disc[5:25, 10:30] = True
    cup = np.zeros((h, w), bool)
    cup[10:20, 15:25] = True
    return disc, cup


def _img(h: int = 30, w: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_folder_encodings_auto_detected(tmp_path: Path) -> None:
    disc, cup = _square_masks()
    labels = disc.astype(np.uint8) + cup.astype(np.uint8)  # 0 bg, 1 rim, 2 cup
    write_image(tmp_path / "images" / "a.png", _img())
    write_image(tmp_path / "masks" / "a.png", to_refuge_seg(disc, cup))
    write_image(tmp_path / "images" / "b.jpg", _img())
    write_image(tmp_path / "masks" / "b.png", labels)
    write_image(tmp_path / "images" / "c.png", _img())
    write_image(tmp_path / "masks" / "c_disc.png", disc)
    write_image(tmp_path / "masks" / "c_cup.png", cup.astype(np.uint8))  # 0/1 binary also accepted
    (tmp_path / "labels.csv").write_text("name,label\na.png,1\nb,0\n")
    ds = load_dataset("folder", tmp_path)
    assert ds.names == ["a", "b", "c"] and ds.labels == [1, 0, None]
    for i in range(3):
        s = ds[i]
        np.testing.assert_array_equal(s.disc, disc)
        np.testing.assert_array_equal(s.cup, cup)
    np.testing.assert_array_equal(ds[0].box, [10, 5, 30, 25])
    # forcing the wrong encoding is honoured: REFUGE values read as labels have no cup (2)
    forced = load_dataset("folder", tmp_path, encoding="labels")
    s = forced[0]
    np.testing.assert_array_equal(s.disc, ~cup)  # 128 and 255 are both >= 1
    assert not s.cup.any() and [p.message for p in forced.problems] == ["empty cup mask"]


def test_folder_ambiguous_binary_mask_is_reported(tmp_path: Path) -> None:
    disc, _ = _square_masks()
    write_image(tmp_path / "images" / "a.png", _img())
    write_image(tmp_path / "masks" / "a.png", disc)
    ds = load_dataset("folder", tmp_path)
    with pytest.raises(SampleError, match=r"a\.png: cannot tell the mask encoding.*0, 255.*_disc\.png"):
        ds[0]
    assert ds.get(0) is None and ds.bad_names == ["a"]
    forced = load_dataset("folder", tmp_path, encoding="refuge")[0]  # read as REFUGE: 0 = cup
    np.testing.assert_array_equal(forced.disc, ~disc)
    np.testing.assert_array_equal(forced.cup, ~disc)


def test_folder_split_subfolders_and_wrong_root(tmp_path: Path) -> None:
    disc, cup = _square_masks()
    for split in ("train", "val"):
        write_image(tmp_path / split / "images" / f"{split}1.png", _img())
        write_image(tmp_path / split / "masks" / f"{split}1.png", to_refuge_seg(disc, cup))
    assert load_dataset("folder", tmp_path, split="val").names == ["val1"]
    assert load_dataset("folder", tmp_path, split="train").names == ["train1"]
    with pytest.raises(DatasetLayoutError, match=r"missing images, masks/; expected a folder with images/"):
        load_dataset("folder", tmp_path)
    with pytest.raises(DatasetLayoutError, match="no test/images folder"):
        load_dataset("folder", tmp_path, split="test")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    disc, cup = _square_masks()
    for name in ("good", "gray", "rgba", "deep"):
        write_image(tmp_path / "masks" / f"{name}.png", to_refuge_seg(disc, cup))
    write_image(tmp_path / "images" / "good.png", _img())
    cv2.imwrite(str(tmp_path / "images" / "gray.png"), _img()[..., 0])
    cv2.imwrite(str(tmp_path / "images" / "rgba.png"), np.dstack([_img(), np.full((30, 40), 255, np.uint8)]))
    cv2.imwrite(str(tmp_path / "images" / "deep.png"), _img().astype(np.uint16) * 257)
    return tmp_path


def test_grayscale_rgba_16bit_images_load(folder: Path) -> None:
    ds = load_dataset("folder", folder)
    assert ds.names == ["deep", "good", "gray", "rgba"]
    good = ds[1].image
    for i in range(4):
        s = ds[i]
        assert s.image.shape == (30, 40, 3) and s.image.dtype == np.uint8
    # cv2.imwrite took the arrays as BGR, so channel order is reversed relative to "good"
    np.testing.assert_array_equal(ds[0].image, good[..., ::-1])  # 16-bit scaled back exactly
    np.testing.assert_array_equal(ds[3].image, good[..., ::-1])  # opaque RGBA
    for c in range(3):
        np.testing.assert_array_equal(ds[2].image[..., c], good[..., 0])  # grey replicated
    assert ds.problems == []


def test_bad_entries_named_and_skipped(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    disc, cup = _square_masks()
    imgs, masks = folder / "images", folder / "masks"
    # truncated JPEG
    write_image(imgs / "trunc.jpg", _img())
    data = (imgs / "trunc.jpg").read_bytes()
    (imgs / "trunc.jpg").write_bytes(data[: len(data) // 2])
    write_image(masks / "trunc.png", to_refuge_seg(disc, cup))
    # no mask at all
    write_image(imgs / "nomask.png", _img())
    # empty disc
    write_image(imgs / "empty.png", _img())
    write_image(masks / "empty.png", np.full((30, 40), 255, np.uint8))
    # cup outside the disc (a REFUGE map cannot say this; use labels on separate masks)
    write_image(imgs / "outside.png", _img())
    bad_cup = cup.copy()
    bad_cup[0:3, 0:3] = True
    write_image(masks / "outside_disc.png", disc)
    write_image(masks / "outside_cup.png", bad_cup)
    # mask of the wrong size
    write_image(imgs / "size.png", _img())
    write_image(masks / "size.png", to_refuge_seg(disc[:20], cup[:20]))
    # image deleted after listing
    write_image(imgs / "gone.png", _img())
    write_image(masks / "gone.png", to_refuge_seg(disc, cup))

    ds = load_dataset("folder", folder)
    (imgs / "gone.png").unlink()
    idx = {n: i for i, n in enumerate(ds.names)}
    with caplog.at_level(logging.WARNING):
        with pytest.raises(SampleError, match=r"trunc\.jpg: truncated JPEG"):
            ds[idx["trunc"]]
        with pytest.raises(SampleError, match=r"masks/nomask\.png: no such file"):
            ds[idx["nomask"]]
        with pytest.raises(SampleError, match=r"empty\.png: empty disc mask"):
            ds[idx["empty"]]
        with pytest.raises(SampleError, match=r"mask size 20x40 differs from the image size 30x40"):
            ds[idx["size"]]
        with pytest.raises(SampleError, match=r"gone\.png: no such file"):
            ds[idx["gone"]]
        s = ds[idx["outside"]]  # loaded with a warning, cup clipped to the disc
    assert not (s.cup & ~s.disc).any() and s.cup.sum() == cup.sum()
    assert "cup pixels lie outside the disc" in caplog.text and "trunc.jpg" in caplog.text
    good = list(ds.iter_samples())
    assert sorted(x.name for x in good) == ["deep", "good", "gray", "outside", "rgba"]
    assert ds.bad_names == ["empty", "gone", "nomask", "size", "trunc"] and ds.error_count == 5
    assert sum(p.severity == "warning" for p in ds.problems) == 1
    assert len(ds.problems) == 6  # reported once each, although loaded twice
    assert "5 skipped as bad, 1 warnings" in ds.report()

    strict = load_dataset("folder", folder, strict=True)
    with pytest.raises(SampleError, match="outside the disc"):
        strict[strict.names.index("outside")]
    with pytest.raises(SampleError, match="truncated JPEG"):
        strict.get(strict.names.index("trunc"))
