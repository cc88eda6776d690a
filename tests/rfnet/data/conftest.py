"""Tiny generated fundus samples for the data tests (no real data needed)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.common.metrics import to_refuge_seg
from rfnet.data.synthetic import generate_sample

SampleFactory = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]
Writer = Callable[[Path, Path, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


@pytest.fixture
def make_sample() -> SampleFactory:
    """seed -> (image uint8 [48,48,3], disc, cup) at 48 px."""

    def make(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return generate_sample(np.random.default_rng(seed), 48)

    return make


@pytest.fixture
def write_refuge_pair(make_sample: SampleFactory) -> Writer:
    """(image path, REFUGE mask path, seed) -> writes both, returns (image, disc, cup)."""

    def write(image_path: Path, mask_path: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, disc, cup = make_sample(seed)
        write_image(image_path, image)
        write_image(mask_path, to_refuge_seg(disc, cup))
        return image, disc, cup

    return write
