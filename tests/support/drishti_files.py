"""A tiny Drishti-GS1 layout (soft maps, CDR file) written into a test's folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rfnet.common.imageio import write_image


def drishti_soft_maps(h: int = 40, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Nested squares: disc soft map 255 core (20x20), 191 ring to 24x24, 128 to 28x28, 64 to 32x32."""
    disc = np.zeros((h, w), np.uint8)
    cup = np.zeros((h, w), np.uint8)
    for half, v in ((16, 64), (14, 128), (12, 191), (10, 255)):
        disc[20 - half : 20 + half, 20 - half : 20 + half] = v
    for half, v in ((8, 64), (6, 128), (5, 255)):
        cup[20 - half : 20 + half, 20 - half : 20 + half] = v
    return disc, cup


def write_drishti(split_dir: Path, gt_name: str, stem: str, ext: str, cdr: str | None) -> None:
    """A Drishti-GS1 item: a 40x40 noise image, the soft maps of :func:`drishti_soft_maps`, the CDR file."""
    rng = np.random.default_rng(0)
    write_image(split_dir / "Images" / f"{stem}{ext}", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    disc, cup = drishti_soft_maps()
    soft = split_dir / gt_name / stem / "SoftMap"
    write_image(soft / f"{stem}_ODsegSoftmap.png", disc)
    write_image(soft / f"{stem}_cupsegSoftmap.png", cup)
    if cdr is not None:
        (split_dir / gt_name / stem / f"{stem}_cdrValues.txt").write_text(cdr)
