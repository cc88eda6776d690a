"""Generated images that are not gradable fundus photographs (numpy + OpenCV, torch-free).

What a screening tool meets besides fundus photographs, for the gradability tests and for
``python -m rfnet.grading_calibration`` (the disc scores a model gives inputs that hold no disc):

* ``black``, ``white``, ``grey``: uniform images (a lens cap, an overexposed or blank frame);
* ``noise``: uniform RGB pixel noise (a broken sensor or transfer);
* ``scene``: an ordinary photograph that is not a fundus (sky, sun, hills, houses, trees, road);
* ``tiny``: 8 x 8 pixels; ``strip``: 200 x 3000 pixels;
* :func:`cut_disc_fundus`: a generated fundus cropped so the optic disc is cut by the image edge.
"""
from __future__ import annotations

import cv2
import numpy as np

from rfnet.data.synthetic import generate_sample_with_info

#: Names of :func:`junk_images`, in order.
JUNK_NAMES: tuple[str, ...] = ("black", "white", "grey", "noise", "scene", "tiny", "strip")


def scene_image(rng: np.random.Generator, height: int = 384, width: int = 512) -> np.ndarray:
    """uint8 [H,W,3] RGB: a landscape (sky gradient, sun, hills, houses, trees, a road)."""
    h, w = height, width
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    sky = (1 - yy) * np.array([70, 130, 220], np.float32) + yy * np.array([190, 215, 240], np.float32)
    img = np.ascontiguousarray(np.broadcast_to(sky, (h, w, 3)).copy())
    horizon = int(h * rng.uniform(0.5, 0.65))
    sun = (int(w * rng.uniform(0.6, 0.9)), int(h * rng.uniform(0.1, 0.25)))
    cv2.circle(img, sun, int(min(h, w) * 0.06), (255, 240, 170), -1, cv2.LINE_AA)
    xs = np.arange(w)
    hill = horizon - (h * 0.08 * np.sin(xs / w * rng.uniform(3, 6) + rng.uniform(0, 6))).astype(np.int32)
    ground = np.arange(h)[:, None] >= hill[None, :]
    grass = np.array([70, 140, 60], np.float32) + rng.normal(0, 12, (h, w, 1)).astype(np.float32)
    img[ground] = np.clip(grass[ground], 0, 255)
    pts = np.array([[w * 0.42, h], [w * 0.58, h], [w * 0.51, horizon], [w * 0.49, horizon]], np.int32)
    cv2.fillPoly(img, [pts], (110, 110, 115), cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 5))):
        x0 = int(rng.uniform(0.02, 0.8) * w)
        bw, bh = int(w * rng.uniform(0.08, 0.15)), int(h * rng.uniform(0.08, 0.14))
        y1 = horizon + int(h * rng.uniform(0.0, 0.1))
        wall = tuple(float(c) for c in rng.uniform(150, 240, 3))
        cv2.rectangle(img, (x0, y1 - bh), (x0 + bw, y1), wall, -1)
        roof = np.array([[x0 - 4, y1 - bh], [x0 + bw + 4, y1 - bh], [x0 + bw // 2, y1 - bh - bh // 2]], np.int32)
        cv2.fillPoly(img, [roof], (150, 50, 40), cv2.LINE_AA)
        cv2.rectangle(img, (x0 + bw // 4, y1 - bh * 2 // 3), (x0 + bw // 2, y1 - bh // 3), (60, 80, 120), -1)
    for _ in range(int(rng.integers(3, 7))):
        c = (int(rng.uniform(0, 1) * w), horizon + int(rng.uniform(-0.05, 0.2) * h))
        cv2.circle(img, c, int(h * rng.uniform(0.03, 0.07)), (30, 90, 35), -1, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def junk_images(seed: int = 0, size: int = 512) -> dict[str, np.ndarray]:
    """The images of :data:`JUNK_NAMES` (uint8 RGB), ``size`` pixels square where the size is free."""
    rng = np.random.default_rng(seed)
    return {
        "black": np.zeros((size, size, 3), np.uint8),
        "white": np.full((size, size, 3), 255, np.uint8),
        "grey": np.full((size, size, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "scene": scene_image(rng, size * 3 // 4, size),
        "tiny": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "strip": np.ascontiguousarray(
            np.broadcast_to(np.linspace(0, 255, 3000, dtype=np.float32)[None, :, None], (200, 3000, 3))
        ).astype(np.uint8),
    }


def cut_disc_fundus(seed: int = 0, size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A generated fundus cropped through its optic disc: (image, disc, cup), the disc cut at
    about its centre by the right image edge (a left eye is mirrored first, so the crop keeps
    the wide side of the field: 0.6-0.75 of ``size``)."""
    image, disc, cup, info = generate_sample_with_info(np.random.default_rng(seed), size)
    cx = info["disc_center"][0]
    if info["eye"] != "right":  # disc left of the centre: mirror it to the right
        image, disc, cup = image[:, ::-1], disc[:, ::-1], cup[:, ::-1]
        cx = size - 1 - cx
    keep = slice(0, int(round(cx)))
    return (np.ascontiguousarray(image[:, keep]), np.ascontiguousarray(disc[:, keep]),
            np.ascontiguousarray(cup[:, keep]))
