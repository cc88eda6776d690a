"""Generated fundus images with exact disc / cup masks (numpy + OpenCV, torch-free).

Each image: an orange-red retina inside a circular field of view on black, with
vignetting and low-frequency texture, a darker macula, vessels leaving the disc in arcades
with branches, a bright yellowish optic disc (slightly elliptical, off-centre like a real
left or right eye) and a paler cup with a random vertical cup-to-disc ratio in 0.2-0.9,
then blur and noise. The masks are the exact ellipses used for drawing (cup inside disc).

CLI (generic folder layout, readable by ``load_dataset("folder", OUT)``)::

    python -m rfnet.data.synthetic --out DIR --n 200 [--size 512] [--seed 0] [--overwrite]

writes ``DIR/images/synth_NNNN.png``, ``DIR/masks/synth_NNNN.png`` (REFUGE grey: 0 cup,
128 rim, 255 background), ``DIR/labels.csv`` (name, label = vCDR >= 0.6, vcdr) and
``DIR/synthetic.json`` (the generation settings).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rfnet.common.cli import setup_logging
from rfnet.common.fileio import OutputExistsError, atomic_write_json, atomic_write_text
from rfnet.common.imageio import IMAGE_EXTENSIONS, write_image
from rfnet.common.metrics import to_refuge_seg, vcdr

log = logging.getLogger(__name__)

#: vCDR at or above which a generated eye is labelled glaucomatous in labels.csv.
GLAUCOMA_VCDR = 0.6


def _ellipse_mask(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle_deg: float) -> np.ndarray:
    """Pixels whose centres (integer coordinates) lie inside the rotated ellipse."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = math.radians(angle_deg)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    return np.asarray((u / rx) ** 2 + (v / ry) ** 2 <= 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise varying over ``size / cells`` pixels."""
    grid = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _draw_vessel(
    layer: np.ndarray,
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    width: float,
    length: float,
    fov: tuple[float, float, float],
    depth: int = 0,
) -> None:
    """A tapering, gently curving vessel drawn into ``layer`` (float32 [S,S], 1 = vessel)."""
    s = layer.shape[0]
    step = s * 0.008
    x, y = start
    curvature = rng.normal(0.0, 0.004)
    n_steps = max(2, int(length / step))
    cx, cy, r = fov
    for i in range(n_steps):
        curvature += rng.normal(0.0, 0.002)
        curvature = float(np.clip(curvature, -0.03, 0.03))
        angle += curvature + rng.normal(0.0, 0.03)
        nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
        frac = i / n_steps
        thick = max(1, int(round(width * (1.0 - 0.7 * frac))))
        cv2.line(layer, (int(round(x * 4)), int(round(y * 4))), (int(round(nx * 4)), int(round(ny * 4))), 1.0, thick, cv2.LINE_AA, shift=2)
        x, y = nx, ny
        if math.hypot(x - cx, y - cy) > r:
            break
        if depth == 0 and i > 4 and rng.random() < 0.025:
            _draw_vessel(layer, rng, (x, y), angle + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9),
                         max(1.0, width * 0.6), length * (1 - frac) * rng.uniform(0.4, 0.8), fov, depth + 1)


def generate_sample_with_info(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Like :func:`generate_sample`, plus a dict of the drawn parameters (``vcdr`` measured
    on the mask by the REFUGE definition, ``target_cdr``, ``eye``, disc centre/radii)."""
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    s = int(size)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)

    # field of view and fundus background
    fcx, fcy = s / 2 + rng.normal(0, 0.01 * s), s / 2 + rng.normal(0, 0.01 * s)
    fr = s * rng.uniform(0.44, 0.495)
    rad = np.hypot(xx - fcx, yy - fcy) / fr
    base = np.array([rng.uniform(175, 235), rng.uniform(60, 115), rng.uniform(20, 55)], np.float32)
    shade = 1.0 + 0.07 * _smooth_noise(rng, s, 5) + 0.025 * _smooth_noise(rng, s, 40)
    vignette = np.clip(1.0 - rng.uniform(0.4, 0.65) * rad ** 2.5, 0.15, 1.0)
    img = base[None, None, :] * (shade * vignette)[:, :, None]

    # optic disc placement: nasal side, off-centre (left or right eye)
    side = 1.0 if rng.random() < 0.5 else -1.0
    r_d = s * rng.uniform(0.055, 0.10)
    ry, rx = r_d * rng.uniform(1.0, 1.15), r_d
    d_angle = rng.uniform(-15, 15)
    dcx = fcx + side * s * rng.uniform(0.10, 0.24)
    dcy = fcy + float(np.clip(rng.normal(0, 0.04), -0.08, 0.08)) * s

    # macula: darker blob ~2.5 disc diameters temporal to the disc
    mx, my = dcx - side * 5.0 * r_d, dcy + 0.3 * r_d
    mac = np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * (1.6 * r_d) ** 2))
    img *= (1.0 - rng.uniform(0.25, 0.45) * mac)[:, :, None]

    # vessels: superior / inferior arcades plus a few nasal ones, drawn at 4x subpixel precision
    vessels = np.zeros((s, s), np.float32)
    n_v = int(rng.integers(8, 14))
    for i in range(n_v):
        up = i % 2 == 0
        if i < 4:  # arcades leave vertically and bend temporally
            angle = (-math.pi / 2 if up else math.pi / 2) + (-side) * rng.uniform(0.1, 0.5) * (1 if up else -1)
        else:
            angle = rng.uniform(0, 2 * math.pi)
        start = (dcx + rng.normal(0, 0.2 * r_d), dcy + rng.normal(0, 0.2 * r_d))
        width = s * rng.uniform(0.006, 0.014) * (1.0 if i < 4 else 0.7)
        _draw_vessel(vessels, rng, start, angle, width, s * rng.uniform(0.25, 0.7), (fcx, fcy, fr))
    vessels_soft = cv2.GaussianBlur(vessels, (0, 0), 0.6 * s / 512 + 0.3)
    v_col = np.array([rng.uniform(100, 150), rng.uniform(15, 35), rng.uniform(10, 30)], np.float32)
    va = np.clip(vessels_soft, 0, 1)[:, :, None] * rng.uniform(0.55, 0.8)

    # disc and cup masks (exact) and their rendering with soft edges
    disc = _ellipse_mask((s, s), dcx, dcy, rx, ry, d_angle)
    target_cdr = rng.uniform(0.2, 0.9)
    c_ry = target_cdr * ry
    c_rx = min(0.95 * rx, c_ry * (rx / ry) * rng.uniform(0.85, 1.05))
    slack = (1.0 - target_cdr) * r_d * 0.4
    ccx = dcx - side * rng.uniform(0.0, 1.0) * slack  # cups sit slightly temporal
    ccy = dcy + rng.uniform(-0.5, 0.5) * slack
    cup = _ellipse_mask((s, s), ccx, ccy, c_rx, c_ry, d_angle + rng.normal(0, 5)) & disc

    halo = np.exp(-((xx - dcx) ** 2 + (yy - dcy) ** 2) / (2 * (1.4 * r_d) ** 2))
    img *= (1.0 + 0.12 * halo)[:, :, None]
    d_alpha = cv2.GaussianBlur(disc.astype(np.float32), (0, 0), max(0.5, 0.06 * r_d))
    rim_col = np.array([rng.uniform(230, 252), rng.uniform(145, 180), rng.uniform(75, 115)], np.float32)
    rim_shade = 1.0 - 0.12 * np.clip(np.hypot((xx - dcx) / rx, (yy - dcy) / ry), 0, 1)
    img = img * (1 - d_alpha[:, :, None] * 0.9) + (rim_col[None, None] * rim_shade[:, :, None]) * d_alpha[:, :, None] * 0.9
    c_alpha = cv2.GaussianBlur(cup.astype(np.float32), (0, 0), max(0.5, 0.1 * c_rx))
    cup_col = np.array([255, rng.uniform(230, 250), rng.uniform(185, 225)], np.float32)
    img = img * (1 - c_alpha[:, :, None]) + cup_col[None, None] * c_alpha[:, :, None]
    img = img * (1 - va) + v_col[None, None] * va

    # acquisition: blur, noise, black outside the (slightly soft) field of view
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.3) * s / 512 + 0.1)
    img += rng.normal(0, rng.uniform(2.0, 5.0), img.shape).astype(np.float32)
    fov_alpha = np.clip((1.0 - rad) * fr / 1.5, 0, 1)
    img *= fov_alpha[:, :, None]
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    info = {
        "vcdr": vcdr(disc, cup),
        "target_cdr": float(target_cdr),
        "eye": "right" if side > 0 else "left",
        "disc_center": (float(dcx), float(dcy)),
        "disc_radii": (float(rx), float(ry)),
    }
    return image, disc, cup, info


def generate_sample(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic fundus image and its exact masks.

    Returns:
        image uint8 [size, size, 3] RGB, disc bool [size, size], cup bool [size, size]
        (cup within disc, never empty).
    """
    image, disc, cup, _ = generate_sample_with_info(rng, size)
    return image, disc, cup


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out}: folder is not empty; pass --overwrite to replace its generated data")
        # remove only what this generator writes, so stale images cannot mix with new ones
        for sub in ("images", "masks"):
            d = out / sub
            if d.is_dir():
                for p in d.iterdir():
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                        p.unlink()


def generate_folder(out: str | Path, n: int, size: int = 512, seed: int = 0, overwrite: bool = False, prefix: str = "synth") -> list[dict[str, Any]]:
    """Write ``n`` samples in the generic folder layout; returns the labels rows.

    Sample ``i`` depends only on (seed, i), so a larger ``n`` extends a smaller set.
    """
    from tqdm import tqdm

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    out_p = Path(out)
    _prepare_out(out_p, overwrite)
    rows: list[dict[str, Any]] = []
    for i in tqdm(range(n), desc="synthetic fundus", unit="img"):
        rng = np.random.default_rng([seed, i])
        image, disc, cup, info = generate_sample_with_info(rng, size)
        name = f"{prefix}_{i:04d}"
        write_image(out_p / "images" / f"{name}.png", image)
        write_image(out_p / "masks" / f"{name}.png", to_refuge_seg(disc, cup))
        rows.append({"name": name, "label": int(info["vcdr"] >= GLAUCOMA_VCDR), "vcdr": f"{info['vcdr']:.4f}"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["name", "label", "vcdr"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_p / "labels.csv", buf.getvalue())
    atomic_write_json(out_p / "synthetic.json", {"n": n, "size": size, "seed": seed, "prefix": prefix, "glaucoma_vcdr": GLAUCOMA_VCDR})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rfnet.data.synthetic",
        description="Generate synthetic fundus images with exact optic disc / cup masks "
        "(images/*.png + masks/*.png in REFUGE grey 0 cup / 128 rim / 255 background, labels.csv).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty or new unless --overwrite)")
    parser.add_argument("--n", required=True, type=int, help="number of images")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--prefix", default="synth", help="file name prefix (default synth)")
    parser.add_argument("--overwrite", action="store_true", help="replace generated files in a non-empty --out")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        rows = generate_folder(args.out, args.n, args.size, args.seed, args.overwrite, args.prefix)
    except (OutputExistsError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    n_g = sum(r["label"] for r in rows)
    log.info("wrote %d images (%d with vCDR >= %.1f) to %s", len(rows), n_g, GLAUCOMA_VCDR, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
