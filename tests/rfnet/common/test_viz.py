"""Overlays draw the right colours where the contours are; training curves plot from a CSV."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import read_image
from rfnet.common.viz import CUP_COLOUR, DISC_COLOUR, draw_contours, overlay, plot_training_curves


def test_overlay_colours_and_side_by_side() -> None:
    img = np.full((100, 120, 3), 40, np.uint8)
    disc = np.zeros((100, 120), bool)
    disc[20:80, 30:90] = True
    cup = np.zeros_like(disc)
    cup[40:60, 50:70] = True
    out = overlay(img, disc, cup)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert tuple(out[20, 60]) == DISC_COLOUR  # disc boundary
    assert tuple(out[40, 60]) == CUP_COLOUR  # cup boundary
    assert tuple(out[50, 40]) == (40, 40, 40)  # inside the rim, untouched
    assert (img == 40).all()  # input not modified
    both = overlay(img, disc, cup, gt_disc=disc, gt_cup=np.zeros_like(cup))
    assert both.shape == (100, 240, 3)
    assert tuple(both[40, 60]) == CUP_COLOUR and tuple(both[40, 180]) != CUP_COLOUR
    with pytest.raises(ValueError, match="both"):
        overlay(img, disc, cup, gt_disc=disc)
    with pytest.raises(ValueError, match="do not match the image"):
        overlay(img, disc[:50], cup)


def test_overlay_prediction_label_replaces_the_default_one() -> None:
    """rfnet.evaluate writes "not gradable" into the prediction panel's one label (two labels
    drawn at the same corner were unreadable); the ground-truth panel is untouched."""
    img = np.full((200, 300, 3), 40, np.uint8)
    empty = np.zeros((200, 300), bool)
    plain = overlay(img, empty, empty, empty, empty)
    flagged = overlay(img, empty, empty, empty, empty, note="not gradable: no_disc")
    assert (plain[:, 300:] == flagged[:, 300:]).all()
    text_row = slice(0, 40)
    assert (flagged[text_row, 150:300] != 40).any() and (plain[text_row, 150:300] == 40).all()  # longer text


def test_plot_training_curves(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with the [train] extra (not in the serving venv)")
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,train_loss,val_loss,dice_cup,lr,note\n0,1.0,1.2,0.3,0.01,x\n1,0.8,,0.5,0.01,y\n2,0.6,0.9,0.7,0.001,z\n")
    png = tmp_path / "curves.png"
    plot_training_curves(csv, png)
    img = read_image(png)
    assert img.shape[0] > 100 and img.shape[1] > 500  # two panels
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n0,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: .*'epoch'"):
        plot_training_curves(bad, tmp_path / "x.png")


@pytest.mark.parametrize(("h", "w", "max_side"), [(700, 1000, 400), (3000, 2200, 700), (300, 200, 400), (300, 200, 0)])
def test_shrunk_overlay_keeps_the_outlines_where_the_masks_are(h: int, w: int, max_side: int) -> None:
    """Outlines traced on the full-size masks and scaled: on the shrunk picture they lie on the
    scaled circles (within a pixel and the line's width), nowhere else."""
    from rfnet.common.viz import draw_contours, shrink

    img = np.full((h, w, 3), 40, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    disc, cup = r < 0.3 * min(h, w), r < 0.12 * min(h, w)
    out = draw_contours(img, disc, cup, max_side=max_side)
    small, scale = shrink(img, max_side)
    assert out.shape == small.shape
    assert max(out.shape[:2]) == (max_side if 0 < max_side < max(h, w) else max(h, w))
    assert scale == pytest.approx(out.shape[1] / w, abs=1e-3)
    oy, ox = np.mgrid[: out.shape[0], : out.shape[1]]
    rr = np.hypot((oy + 0.5) / scale - h / 2, (ox + 0.5) / scale - w / 2) * scale  # radius, output pixels
    tol = 1.5 + max(1, round(min(out.shape[:2]) / 250))
    for colour, radius in ((DISC_COLOUR, 0.3 * min(h, w) * scale), (CUP_COLOUR, 0.12 * min(h, w) * scale)):
        drawn = (out == colour).all(axis=2)
        assert drawn.sum() > 4 * radius  # a whole outline
        assert np.abs(rr[drawn] - radius).max() <= tol
    assert (img == 40).all()


def test_shrink_halves_first_when_far_too_large() -> None:
    from rfnet.common.viz import shrink

    img = np.random.default_rng(0).integers(0, 255, (4000, 3000, 3), dtype=np.uint8)
    small, scale = shrink(img, 1000)
    assert small.shape == (1000, 750, 3) and scale == 0.25
    assert shrink(img, 0)[0] is img and shrink(img, 5000)[1] == 1.0


def test_outlines_of_full_size_masks_on_a_reduced_picture_and_within_bounds() -> None:
    """Masks at the picture's size drawn on a copy at 1/2 land where they do on the picture
    shrunk to that size; tracing only the masks' window changes no pixel."""
    disc = np.zeros((200, 300), bool)
    disc[60:140, 100:200] = True
    cup = np.zeros_like(disc)
    cup[90:110, 130:170] = True
    picture = np.full((200, 300, 3), 60, np.uint8)
    on_half = draw_contours(picture[::2, ::2], disc, cup)
    on_full = draw_contours(picture, disc, cup, max_side=150)
    assert on_half.shape == on_full.shape == (100, 150, 3)
    np.testing.assert_array_equal(on_half, on_full)
    np.testing.assert_array_equal(draw_contours(picture, disc, cup, bounds=(55, 145, 95, 205)),
                                  draw_contours(picture, disc, cup))
    edge = np.zeros_like(disc)
    edge[0:50, 0:40] = True  # touching the picture's corner, its window too
    np.testing.assert_array_equal(draw_contours(picture, edge, edge, bounds=(0, 50, 0, 40)),
                                  draw_contours(picture, edge, edge))
    with pytest.raises(ValueError, match="do not match the image"):
        draw_contours(picture[:, ::2], disc, cup)  # another aspect: not a copy of this picture
