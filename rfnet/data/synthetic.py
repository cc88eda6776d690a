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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.fileio import OutputExistsError, atomic_write_json, atomic_write_text
from rfnet.common.imageio import IMAGE_EXTENSIONS, write_image
from rfnet.common.metrics import to_refuge_seg, vcdr
from rfnet.common.progress import track
from rfnet.errors import RFNetError, UsageError

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


@dataclass(frozen=True)
class _Eye:
    """Geometry of one generated eye: field of view and optic disc (pixels)."""

    fcx: float  # field-of-view centre and radius
    fcy: float
    fr: float
    side: float  # +1 right eye (disc right of centre), -1 left
    r_d: float  # disc radius
    rx: float
    ry: float
    d_angle: float
    dcx: float  # disc centre
    dcy: float


def _fundus_background(rng: np.random.Generator, s: int, xx: np.ndarray, yy: np.ndarray
                       ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Orange-red retina with shading and vignetting: (float32 image [S,S,3], (fcx, fcy, fr))."""
    fcx, fcy = s / 2 + rng.normal(0, 0.01 * s), s / 2 + rng.normal(0, 0.01 * s)
    fr = s * rng.uniform(0.44, 0.495)
    rad = np.hypot(xx - fcx, yy - fcy) / fr
    base = np.array([rng.uniform(175, 235), rng.uniform(60, 115), rng.uniform(20, 55)], np.float32)
    shade = 1.0 + 0.07 * _smooth_noise(rng, s, 5) + 0.025 * _smooth_noise(rng, s, 40)
    vignette = np.clip(1.0 - rng.uniform(0.4, 0.65) * rad ** 2.5, 0.15, 1.0)
    return base[None, None, :] * (shade * vignette)[:, :, None], (float(fcx), float(fcy), float(fr))


def _place_disc(rng: np.random.Generator, s: int, fov: tuple[float, float, float]) -> _Eye:
    """Optic disc on the nasal side, off-centre (left or right eye), slightly elliptical."""
    fcx, fcy, fr = fov
    side = 1.0 if rng.random() < 0.5 else -1.0
    r_d = s * rng.uniform(0.055, 0.10)
    ry, rx = r_d * rng.uniform(1.0, 1.15), r_d
    d_angle = rng.uniform(-15, 15)
    dcx = fcx + side * s * rng.uniform(0.10, 0.24)
    dcy = fcy + float(np.clip(rng.normal(0, 0.04), -0.08, 0.08)) * s
    return _Eye(fcx, fcy, fr, side, r_d, rx, ry, d_angle, dcx, dcy)


def _vessel_layer(rng: np.random.Generator, s: int, eye: _Eye) -> tuple[np.ndarray, np.ndarray]:
    """Superior / inferior arcades plus a few nasal vessels, drawn at 4x subpixel precision:
    (alpha [S,S,1], colour [3])."""
    vessels = np.zeros((s, s), np.float32)
    n_v = int(rng.integers(8, 14))
    for i in range(n_v):
        up = i % 2 == 0
        if i < 4:  # arcades leave vertically and bend temporally
            angle = (-math.pi / 2 if up else math.pi / 2) + (-eye.side) * rng.uniform(0.1, 0.5) * (1 if up else -1)
        else:
            angle = rng.uniform(0, 2 * math.pi)
        start = (eye.dcx + rng.normal(0, 0.2 * eye.r_d), eye.dcy + rng.normal(0, 0.2 * eye.r_d))
        width = s * rng.uniform(0.006, 0.014) * (1.0 if i < 4 else 0.7)
        _draw_vessel(vessels, rng, start, angle, width, s * rng.uniform(0.25, 0.7), (eye.fcx, eye.fcy, eye.fr))
    vessels_soft = cv2.GaussianBlur(vessels, (0, 0), 0.6 * s / 512 + 0.3)
    v_col = np.array([rng.uniform(100, 150), rng.uniform(15, 35), rng.uniform(10, 30)], np.float32)
    return np.clip(vessels_soft, 0, 1)[:, :, None] * rng.uniform(0.55, 0.8), v_col


def _disc_and_cup(rng: np.random.Generator, s: int, eye: _Eye) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Exact masks (cup inside disc, slightly temporal): (disc, cup, target CDR, cup x radius)."""
    disc = _ellipse_mask((s, s), eye.dcx, eye.dcy, eye.rx, eye.ry, eye.d_angle)
    target_cdr = rng.uniform(0.2, 0.9)
    c_ry = target_cdr * eye.ry
    c_rx = min(0.95 * eye.rx, c_ry * (eye.rx / eye.ry) * rng.uniform(0.85, 1.05))
    slack = (1.0 - target_cdr) * eye.r_d * 0.4
    ccx = eye.dcx - eye.side * rng.uniform(0.0, 1.0) * slack  # cups sit slightly temporal
    ccy = eye.dcy + rng.uniform(-0.5, 0.5) * slack
    cup = _ellipse_mask((s, s), ccx, ccy, c_rx, c_ry, eye.d_angle + rng.normal(0, 5)) & disc
    return disc, cup, float(target_cdr), float(c_rx)


def _render_disc(img: np.ndarray, rng: np.random.Generator, eye: _Eye, disc: np.ndarray, cup: np.ndarray,
                 c_rx: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A bright yellowish rim and a paler cup with soft edges, on a slight halo."""
    halo = np.exp(-((xx - eye.dcx) ** 2 + (yy - eye.dcy) ** 2) / (2 * (1.4 * eye.r_d) ** 2))
    img = img * (1.0 + 0.12 * halo)[:, :, None]
    d_alpha = cv2.GaussianBlur(disc.astype(np.float32), (0, 0), max(0.5, 0.06 * eye.r_d))
    rim_col = np.array([rng.uniform(230, 252), rng.uniform(145, 180), rng.uniform(75, 115)], np.float32)
    rim_shade = 1.0 - 0.12 * np.clip(np.hypot((xx - eye.dcx) / eye.rx, (yy - eye.dcy) / eye.ry), 0, 1)
    img = img * (1 - d_alpha[:, :, None] * 0.9) + (rim_col[None, None] * rim_shade[:, :, None]) * d_alpha[:, :, None] * 0.9
    c_alpha = cv2.GaussianBlur(cup.astype(np.float32), (0, 0), max(0.5, 0.1 * c_rx))
    cup_col = np.array([255, rng.uniform(230, 250), rng.uniform(185, 225)], np.float32)
    return img * (1 - c_alpha[:, :, None]) + cup_col[None, None] * c_alpha[:, :, None]


def _acquire(img: np.ndarray, rng: np.random.Generator, s: int, eye: _Eye, xx: np.ndarray, yy: np.ndarray
             ) -> np.ndarray:
    """Camera: blur, noise, black outside the (slightly soft) field of view -> uint8 RGB."""
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.3) * s / 512 + 0.1)
    img += rng.normal(0, rng.uniform(2.0, 5.0), img.shape).astype(np.float32)
    rad = np.hypot(xx - eye.fcx, yy - eye.fcy) / eye.fr
    fov_alpha = np.clip((1.0 - rad) * eye.fr / 1.5, 0, 1)
    img = np.multiply(img, fov_alpha[:, :, None], out=img)  # in place, stays float32
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def generate_sample_with_info(rng: np.random.Generator, size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Like :func:`generate_sample`, plus a dict of the drawn parameters (``vcdr`` measured
    on the mask by the REFUGE definition, ``target_cdr``, ``eye``, disc centre/radii)."""
    if size < 32:
        raise UsageError(f"size must be at least 32 pixels, got {size}")
    s = int(size)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    img, fov = _fundus_background(rng, s, xx, yy)
    eye = _place_disc(rng, s, fov)
    # macula: darker blob ~2.5 disc diameters temporal to the disc
    mx, my = eye.dcx - eye.side * 5.0 * eye.r_d, eye.dcy + 0.3 * eye.r_d
    mac = np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * (1.6 * eye.r_d) ** 2))
    img *= (1.0 - rng.uniform(0.25, 0.45) * mac)[:, :, None]
    va, v_col = _vessel_layer(rng, s, eye)
    disc, cup, target_cdr, c_rx = _disc_and_cup(rng, s, eye)
    img = _render_disc(img, rng, eye, disc, cup, c_rx, xx, yy)
    img = img * (1 - va) + v_col[None, None] * va
    image = _acquire(img, rng, s, eye, xx, yy)
    info = {
        "vcdr": vcdr(disc, cup),
        "target_cdr": target_cdr,
        "eye": "right" if eye.side > 0 else "left",
        "disc_center": (float(eye.dcx), float(eye.dcy)),
        "disc_radii": (float(eye.rx), float(eye.ry)),
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
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    out_p = Path(out)
    _prepare_out(out_p, overwrite)
    rows: list[dict[str, Any]] = []
    for i in track(range(n), desc=f"synthetic fundus -> {out_p}", unit="img"):
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
    except RFNetError as exc:  # a non-empty --out, a bad --n or --size
        log.error("%s", exc)
        return ExitCode.USAGE
    except OSError as exc:
        log.error("%s: cannot write: %s", args.out, exc)
        return ExitCode.FAILED
    n_g = sum(r["label"] for r in rows)
    log.info("wrote %d images (%d with vCDR >= %.1f) to %s", len(rows), n_g, GLAUCOMA_VCDR, args.out)
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
