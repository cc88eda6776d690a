"""Overlays of disc / cup contours and training-curve plots (torch-free).

matplotlib is imported lazily (Agg backend) so the deployment runtime, which only draws
overlays with OpenCV, does not need it.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import cv2
import numpy as np

from rfnet.common.fileio import atomic_write_bytes

#: RGB contour colours: disc green, cup blue (both stand out on an orange-red fundus).
DISC_COLOUR: tuple[int, int, int] = (0, 255, 0)
CUP_COLOUR: tuple[int, int, int] = (0, 128, 255)


def _thickness(h: int, w: int) -> int:
    return max(1, int(round(min(h, w) / 250)))


def draw_contours(image: np.ndarray, disc: np.ndarray, cup: np.ndarray, label: str | None = None, *,
                  max_side: int = 0, bounds: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Copy of ``image`` (uint8 [h,w,3] RGB) with the disc and cup outlines (bool masks [H,W])
    drawn, and an optional text label in the top-left corner.

    The masks are at the picture's size; ``image`` is the picture or a smaller copy of it (the
    same view, e.g. a JPEG decoded at 1/2: :class:`rfnet.common.imageio.Photo`). With
    ``max_side`` > 0 the copy is shrunk to that long side first (:func:`shrink`). The outlines are
    traced on the full-size masks and scaled, so they stay as precise as the picture drawn allows.
    ``bounds`` ``(row0, row1, col0, col1)``: the masks are empty outside it, so only that window
    is traced. Returns uint8 [h',w',3].
    """
    img = np.asarray(image, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"overlay expects an RGB image [H,W,3], got shape {img.shape}")
    mh, mw = np.shape(disc)[:2]
    if np.shape(disc) != np.shape(cup) or mh < img.shape[0] or mw < img.shape[1] or \
            abs(mh * img.shape[1] - mw * img.shape[0]) > max(mh, mw):  # same view: aspect within a pixel
        raise ValueError(f"masks {np.shape(disc)} and {np.shape(cup)} do not match the image {img.shape[0]}x{img.shape[1]} "
                         "(two masks of one shape, the image's or that of the picture it was reduced from)")
    out = shrink(img, max_side)[0].copy()  # C-contiguous
    sx, sy = out.shape[1] / mw, out.shape[0] / mh
    t = _thickness(*out.shape[:2])
    # one empty pixel around the window, so no outline touches the edge of what is traced
    r0, r1, c0, c1 = (0, mh, 0, mw) if bounds is None else \
        (max(0, bounds[0] - 1), min(mh, bounds[1] + 1), max(0, bounds[2] - 1), min(mw, bounds[3] + 1))
    for mask, colour in ((disc, DISC_COLOUR), (cup, CUP_COLOUR)):
        # findContours reads, never writes (OpenCV >= 3.2)
        m = np.ascontiguousarray(np.asarray(mask, dtype=bool)[r0:r1, c0:c1]).view(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(c0, r0))
        if (sx, sy) != (1.0, 1.0):  # pixel centres: (x + 0.5) * scale - 0.5
            s = np.array([sx, sy], np.float32)
            contours = [np.round((c.astype(np.float32) + 0.5) * s - 0.5).astype(np.int32) for c in contours]
        cv2.drawContours(out, contours, -1, colour, t, lineType=cv2.LINE_8)
    return _label(out, label, t) if label else out


def _label(img: np.ndarray, label: str, t: int) -> np.ndarray:
    """``label`` in white on black in the top-left corner of ``img`` (drawn in place)."""
    h, w = img.shape[:2]
    scale = max(0.4, min(h, w) / 600)
    org = (int(8 * scale), int(28 * scale))
    cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), t + 2, cv2.LINE_AA)
    cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), t, cv2.LINE_AA)
    return img


def shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` (uint8 [H,W] or [H,W,3]) with its long side at most ``max_side`` (0: as it is), and
    the scale applied (<= 1). Halved with ``cv2.pyrDown`` while more than twice too large, then
    ``cv2.INTER_LINEAR``: smooth, and a few times faster than ``cv2.INTER_AREA`` at a non-integer scale."""
    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image, 1.0
    small = image
    while max(small.shape[:2]) > 2 * max_side:
        small = cv2.pyrDown(small)
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(small, size, interpolation=cv2.INTER_LINEAR), scale


def overlay(
    image: np.ndarray,
    disc: np.ndarray,
    cup: np.ndarray,
    gt_disc: np.ndarray | None = None,
    gt_cup: np.ndarray | None = None,
    note: str = "",
) -> np.ndarray:
    """Prediction contours (disc green, cup blue) on the image.

    Args:
        image: uint8 [H, W, 3] RGB.
        disc, cup: bool [H, W] predicted masks.
        gt_disc, gt_cup: optional bool [H, W] ground truth; when given, the result is the
            prediction panel beside a ground-truth panel, labelled.
        note: appended to the prediction panel's label, "prediction, NOTE" (with the ground truth only).
    Returns:
        uint8 [H, W, 3], or [H, 2W, 3] with the ground truth.
    """
    if (gt_disc is None) != (gt_cup is None):
        raise ValueError("give both gt_disc and gt_cup, or neither")
    if gt_disc is None or gt_cup is None:
        return draw_contours(image, disc, cup)
    left = draw_contours(image, disc, cup, f"prediction, {note}" if note else "prediction")
    right = draw_contours(image, gt_disc, gt_cup, "ground truth")
    return np.concatenate([left, right], axis=1)


def _read_metrics_csv(path: Path) -> tuple[list[float], dict[str, list[float]]]:
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read metrics CSV ({exc.strerror or exc})") from exc
    if "epoch" not in fields:
        raise ValueError(f"{path}: metrics CSV has no 'epoch' column (columns: {fields})")
    if not rows:
        raise ValueError(f"{path}: metrics CSV has no rows")

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan

    epochs = [num(r.get("epoch")) for r in rows]
    series = {c: [num(r.get(c)) for r in rows] for c in fields if c != "epoch"}
    # keep columns with at least one number (drop text columns such as timestamps)
    series = {c: v for c, v in series.items() if any(not math.isnan(x) for x in v)}
    return epochs, series


def plot_training_curves(csv_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> None:
    """Plot every numeric column of a metrics CSV against its ``epoch`` column.

    Columns whose name contains "loss" go in the first panel, the learning rate (``lr``, log
    scale) in its own panel, and the remaining metrics (Dice, IoU, MAE: all on a 0..1 scale)
    in another; counts such as ``val_images`` are left out, since they would squash the
    metric axis. The figure is written atomically to ``png_path`` (format from its suffix). Raises ``ValueError`` naming the file for a missing ``epoch``
    column or an empty CSV.
    """
    try:
        import matplotlib
    except ImportError as exc:  # the runtime-only install has no matplotlib
        raise ImportError(f"plotting {png_path} needs matplotlib ({exc}); pip install '.[train]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    csv_p, out_p = Path(csv_path), Path(png_path)
    epochs, series = _read_metrics_csv(csv_p)
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    lr = {k: v for k, v in series.items() if k.lower() == "lr"}
    others = {k: v for k, v in series.items()
              if k not in losses and k not in lr and not k.lower().endswith(("_images", "_count"))}
    panels = [(title, d) for title, d in (("losses", losses), ("validation", others), ("learning rate", lr)) if d]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4), squeeze=False)
    try:
        for ax, (title, data) in zip(axes[0], panels):
            for name, vals in data.items():
                ax.plot(epochs, vals, marker="o" if len(epochs) < 30 else None, markersize=3, label=name)
            ax.set_title(title)
            if title == "learning rate" and all(v > 0 for vals in data.values() for v in vals if v == v):
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        if not panels:
            axes[0][0].set_title("no numeric columns")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=(out_p.suffix.lstrip(".").lower() or "png"), dpi=100)
    finally:
        plt.close(fig)
    atomic_write_bytes(out_p, buf.getvalue())
