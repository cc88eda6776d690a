"""Letterbox geometry, normalisation and exact box round trips."""
from __future__ import annotations

import numpy as np
import pytest

from rfnet.common.preprocess import Letterbox, letterbox, letterbox_mask, normalize, preprocess, preprocess_batch
from rfnet.config import InputConfig


@pytest.mark.parametrize("h,w", [(300, 400), (400, 300), (512, 512), (1634, 2124), (7, 3)])
def test_letterbox_centred_and_aspect(h: int, w: int) -> None:
    img = np.full((h, w, 3), 200, np.uint8)
    out, lb = letterbox(img, 512)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    assert lb.scale == pytest.approx(512 / max(h, w), rel=1e-12)
    nh, nw = lb.resized_shape
    assert max(nh, nw) == 512
    assert abs(nh / nw - h / w) < 2.0 / min(nh, nw) + 1e-9
    # centred: the two pads differ by at most one pixel
    assert lb.pad_x == (512 - nw) // 2 and lb.pad_y == (512 - nh) // 2
    content = out[lb.pad_y : lb.pad_y + nh, lb.pad_x : lb.pad_x + nw]
    assert (content == 200).all()
    assert out.sum() == 200 * 3 * nh * nw  # everything else is zero padding


def test_known_geometry() -> None:
    lb = Letterbox.compute(300, 400, 512)
    assert lb == Letterbox(scale=1.28, pad_x=0, pad_y=64, orig_h=300, orig_w=400, size=512)
    b = np.array([[0.0, 0.0, 400.0, 300.0]])
    np.testing.assert_allclose(lb.boxes_to_input(b), [[0, 64, 512, 448]], atol=1e-9)


@pytest.mark.parametrize("h,w", [(300, 401), (1634, 2124), (2124, 1634), (55, 900)])
def test_box_round_trip(h: int, w: int) -> None:
    lb = Letterbox.compute(h, w, 512)
    rng = np.random.default_rng(1)
    xy0 = rng.uniform(0, 0.5, (20, 2)) * (w, h)
    boxes = np.concatenate([xy0, xy0 + rng.uniform(1, 50, (20, 2))], axis=1)
    back = lb.boxes_to_original(lb.boxes_to_input(boxes))
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-9)
    b32 = boxes.astype(np.float32)
    back32 = lb.boxes_to_original(lb.boxes_to_input(b32))
    assert back32.dtype == np.float32
    np.testing.assert_allclose(back32, b32, rtol=0, atol=1e-3)


def test_boxes_to_original_clip_and_shape_check() -> None:
    lb = Letterbox.compute(100, 200, 512)
    out = lb.boxes_to_original(np.array([[-50.0, -50.0, 600.0, 600.0]]), clip=True)
    np.testing.assert_allclose(out, [[0, 0, 200, 100]])
    with pytest.raises(ValueError, match=r"\[N,4\]"):
        lb.boxes_to_original(np.zeros(4))


def test_mask_letterbox_matches_image_and_back() -> None:
    h, w = 120, 200
    mask = np.zeros((h, w), bool)
    mask[30:90, 50:150] = True
    img = np.zeros((h, w, 3), np.uint8)
    img[mask] = 255
    limg, lb = letterbox(img, 256)
    lmask = letterbox_mask(mask, lb)
    assert lmask.dtype == bool and lmask.shape == (256, 256)
    # the mask box mapped to input pixels agrees with the letterboxed mask's box (within a pixel)
    ys, xs = np.nonzero(lmask)
    exp = lb.boxes_to_input(np.array([[50.0, 30.0, 150.0, 90.0]]))[0]
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], exp, atol=1.0)
    assert ((limg[..., 0] > 127) == lmask).mean() > 0.995
    back = lb.mask_to_original(lmask)
    assert back.shape == (h, w) and back.dtype == bool
    assert (back == mask).mean() > 0.99
    labels = np.array([[0, 128], [255, 128]], np.uint8)
    lab_lb = Letterbox.compute(2, 2, 8)
    assert set(np.unique(letterbox_mask(labels, lab_lb))) == {0, 128, 255}
    with pytest.raises(ValueError, match="does not match"):
        letterbox_mask(np.zeros((5, 5), bool), lb)


def test_normalize_and_preprocess() -> None:
    cfg = InputConfig(size=64)
    img = np.full((32, 16, 3), (123, 116, 103), np.uint8)
    x, lb = preprocess(img, cfg)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    # padding (black) normalises to -mean/std; content to (v-mean)/std
    np.testing.assert_allclose(x[:, 0, 0], -np.array(cfg.mean) / np.array(cfg.std), rtol=1e-6)
    # computed as x / std - mean / std: values of magnitude up to ~2.2, so float32 rounding is absolute (~2e-7)
    np.testing.assert_allclose(x[:, 32, 32], (np.array([123, 116, 103]) - cfg.mean) / np.array(cfg.std), rtol=0, atol=1e-6)
    assert lb.pad_x == 16 and lb.pad_y == 0
    n = normalize(np.zeros((2, 3, 3), np.uint8), (0, 0, 0), (1, 1, 1))
    assert n.shape == (3, 2, 3)
    with pytest.raises(ValueError, match="RGB uint8"):
        normalize(np.zeros((2, 3), np.uint8), (0, 0, 0), (1, 1, 1))


def test_preprocess_batch() -> None:
    cfg = InputConfig(size=32)
    imgs = [np.zeros((10, 20, 3), np.uint8), np.zeros((40, 8, 3), np.uint8)]
    x, lbs = preprocess_batch(imgs, cfg)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert [(lb.orig_h, lb.orig_w) for lb in lbs] == [(10, 20), (40, 8)]
    with pytest.raises(ValueError):
        preprocess_batch([], cfg)


def test_preprocess_of_a_reduced_copy_maps_to_the_original() -> None:
    """``original``: the letterbox of the whole picture, the content from the reduced copy."""
    import cv2

    cfg = InputConfig(size=64)
    yy, xx = np.mgrid[0:300, 0:400]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    half = cv2.resize(img, (200, 150), interpolation=cv2.INTER_AREA)
    full_t, full_lb = preprocess(img, cfg)
    t, lb = preprocess(half, cfg, (300, 400))
    assert lb == full_lb and (lb.orig_h, lb.orig_w) == (300, 400) and t.shape == full_t.shape
    assert np.abs(t - full_t).mean() < 0.05  # normalised units: a few grey levels where the picture is sharp


def test_margin_centres_the_image_in_a_black_border_and_maps_back() -> None:
    """margin 1.5: a 300 x 400 crop's long side fills 512 / 1.5 px, centred; boxes and masks map back."""
    img = np.full((300, 400, 3), 200, np.uint8)
    cfg = InputConfig(size=512, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x, lb = preprocess(img, cfg, margin=1.5)
    assert lb.scale == pytest.approx(512 / 600, rel=1e-12)
    assert lb.resized_shape == (256, 341) and (lb.pad_x, lb.pad_y) == ((512 - 341) // 2, 128)
    inside = x[:, lb.pad_y : lb.pad_y + 256, lb.pad_x : lb.pad_x + 341]
    assert (inside == 200).all() and x.sum() == 200 * 3 * 256 * 341  # black all around
    boxes = np.array([[10.0, 20.0, 390.0, 280.0]])
    np.testing.assert_allclose(lb.boxes_to_original(lb.boxes_to_input(boxes)), boxes, atol=1e-9)
    full = np.zeros((512, 512), bool)
    full[lb.pad_y : lb.pad_y + 256, lb.pad_x : lb.pad_x + 341] = True
    assert lb.mask_to_original(full).shape == (300, 400) and lb.mask_to_original(full).all()
    assert Letterbox.compute(300, 400, 512, 1.0) == Letterbox.compute(300, 400, 512)


@pytest.mark.parametrize("margin", [0.5, 0.999, float("nan"), float("inf"), True])
def test_margin_below_one_or_not_a_number_is_refused(margin: float) -> None:
    with pytest.raises(ValueError, match="letterbox margin must be a finite number >= 1"):
        Letterbox.compute(300, 400, 512, margin)
