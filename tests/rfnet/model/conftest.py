"""Fixtures for the model tests: a tiny synthetic fundus (dark red background, bright disc,
brighter cup) drawn here with OpenCV so these tests depend on no other part of the project."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import pytest
import torch

from rfnet.config import ModelConfig, get_preset

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


def draw_fundus(size: int, rng: np.random.Generator, disc_frac: tuple[float, float] = (0.12, 0.18)) -> Sample:
    """One normalised image [3,S,S] and its target (boxes [1,4], labels [1], masks [1,2,S,S])."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (90, 20, 10)
    cv2.circle(img, (size // 2, size // 2), int(size * 0.48), (150, 45, 20), -1)
    r = int(rng.uniform(*disc_frac) * size)
    cx, cy = (int(v) for v in rng.uniform(0.3, 0.7, 2) * size)
    rc = max(int(r * rng.uniform(0.4, 0.6)), 2)
    disc = np.zeros((size, size), np.uint8)
    cup = np.zeros((size, size), np.uint8)
    cv2.circle(disc, (cx, cy), r, 1, -1)
    cv2.circle(cup, (cx, cy), rc, 1, -1)
    img[disc > 0] = (230, 170, 90)
    img[cup > 0] = (255, 235, 180)
    noisy = np.clip(img.astype(np.float32) + rng.normal(0, 6, img.shape), 0, 255)
    x = torch.from_numpy(((noisy - MEAN) / STD).astype(np.float32).transpose(2, 0, 1).copy())
    ys, xs = np.nonzero(disc)
    box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
    masks = torch.from_numpy(np.stack([disc, cup])[None].astype(np.float32))
    return x, {"boxes": box, "labels": torch.ones(1, dtype=torch.int64), "masks": masks}


@pytest.fixture
def fundus() -> Callable[..., Sample]:
    return draw_fundus


@pytest.fixture
def light_cfg() -> ModelConfig:
    """Light preset at a 128 px input, with test-speed training sizes."""
    cfg = get_preset("light")
    cfg.input.size = 128
    cfg.roi_heads.batch_size_per_image = 64
    cfg.mask_head.max_positive_rois = 4
    return cfg


def paste_disc(prob: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Paste a [M,M] RoI probability map into a [size,size] image (bilinear, pixel centres)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = (xs - x0) / max(x1 - x0, 1e-3) * prob.shape[1] - 0.5
    v = (ys - y0) / max(y1 - y0, 1e-3) * prob.shape[0] - 0.5
    vals = cv2.remap(prob.astype(np.float32), u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return np.where(inside, vals, 0.0)


@pytest.fixture
def paste() -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    return paste_disc


@pytest.fixture(autouse=True)
def _one_torch_thread() -> object:
    """Run these tests on one intra-op thread, restoring the setting afterwards.

    On small shared machines (2 cores, several processes) PyTorch's OpenMP pool spins and
    oversubscribes: measured here, the model tests took ~230 s with 2 threads under load and
    ~36 s with 1 thread. One thread costs little on an idle 2-core runner.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
