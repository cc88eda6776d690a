"""Overlays draw the right colours where the contours are; training curves plot from a CSV."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import read_image
from rfnet.common.viz import CUP_COLOUR, DISC_COLOUR, overlay, plot_training_curves


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
    with pytest.raises(ValueError, match="does not match"):
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
