"""The geometric augmentation: one affine warp that agrees with the letterbox and the flips,
keeps the disc inside the canvas, and carries masks and boxes along with the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rfnet.common.preprocess import Letterbox, letterbox, letterbox_mask
from rfnet.config import paper_config
from rfnet.data.augment import FlipRotate
from rfnet.data.geometry import (DISC_MARGIN, GeometryJitter, flip_rotate_matrix, letterbox_matrix, random_view,
                                 warp_image, warp_mask)
from rfnet.data.sample import Sample, box_from_mask
from rfnet.data.torch_dataset import FundusTorchDataset


def _disc_image(h: int = 90, w: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth image (so bilinear resampling is well defined) with an off-centre disc."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 2, yy * 2, (xx + yy)], -1).clip(0, 255).astype(np.uint8)
    disc = (xx - 80) ** 2 + (yy - 35) ** 2 <= 15**2
    cup = (xx - 80) ** 2 + (yy - 35) ** 2 <= 7**2
    return image, disc, cup


def test_letterbox_matrix_reproduces_cv2_resize() -> None:
    image, disc, _ = _disc_image()
    lb = Letterbox.compute(*image.shape[:2], 64)
    ref, _ = letterbox(image, 64)
    got = warp_image(image, letterbox_matrix(lb)[:2], 64)
    # same sampling positions as cv2.resize(INTER_LINEAR); rounding may differ by one level
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    ref_disc = letterbox_mask(disc, lb)
    assert (warp_mask(disc, letterbox_matrix(lb)[:2], 64) != ref_disc).mean() < 0.01


@pytest.mark.parametrize("op", [FlipRotate(True, False, 0), FlipRotate(False, True, 1), FlipRotate(True, True, 3)])
def test_flip_rotate_matrix_matches_apply_array(op: FlipRotate) -> None:
    a = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    got = warp_image(a, flip_rotate_matrix(op, 6)[:2], 6)
    np.testing.assert_array_equal(got, op.apply_array(a))


def test_random_view_keeps_disc_inside_and_box_matches_mask() -> None:
    image, disc, cup = _disc_image()
    lb = Letterbox.compute(*image.shape[:2], 128)
    jitter = GeometryJitter(scale=0.3, rotate_deg=20, translate=0.2)
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(20):
        m, _, side = random_view(lb, box_from_mask(disc), jitter, rng)
        assert side == 128
        d = warp_mask(disc, m, side)
        b = box_from_mask(d)
        assert b[0] >= DISC_MARGIN - 2 and b[1] >= DISC_MARGIN - 2
        assert b[2] <= side - DISC_MARGIN + 2 and b[3] <= side - DISC_MARGIN + 2
        area = d.sum() / (letterbox_mask(disc, lb).sum())
        assert 1 / 1.3**2 - 0.15 < area < 1.3**2 + 0.15  # zoom within the range
        boxes.append(b)
    assert len({tuple(b) for b in boxes}) > 10  # views differ


def test_crop_view_places_disc_anywhere_in_the_crop() -> None:
    image, disc, _ = _disc_image()
    lb = Letterbox.compute(*image.shape[:2], 256)
    rng = np.random.default_rng(1)
    centres = []
    for _ in range(30):
        m, _, side = random_view(lb, box_from_mask(disc), GeometryJitter(crop=160), rng)
        assert side == 160
        b = box_from_mask(warp_mask(disc, m, side))
        assert b.min() >= DISC_MARGIN - 2 and b.max() <= 160 - DISC_MARGIN + 2
        centres.append((b[0] + b[2]) / 2)
    assert max(centres) - min(centres) > 40  # 80 px of admissible positions


def test_dataset_geometric_path_targets_follow_the_image() -> None:
    image, disc, cup = _disc_image()
    sample = Sample(image, disc, cup & disc, box_from_mask(disc), {"name": "g"})

    class One:
        strict = False

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> Sample:
            return sample

    cfg = paper_config()
    cfg.input.size = 128
    cfg.train.scale_jitter, cfg.train.rotate_deg, cfg.train.color_jitter = 0.2, 10.0, 0.2
    td = FundusTorchDataset(One(), cfg, train=True)  # type: ignore[arg-type]
    torch.manual_seed(0)
    x, target, meta = td[0]  # type: ignore[misc]
    assert x.shape == (3, 128, 128) and "affine" in meta
    d, c = target["masks"][0].numpy().astype(bool)
    np.testing.assert_allclose(target["boxes"][0].numpy(), box_from_mask(d))
    assert c.any() and not (c & ~d).any()
    assert td._cache is not None and 0 in td._cache  # decoded once, then reused
