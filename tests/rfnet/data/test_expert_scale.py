"""rfnet.data.expert_scale: the line from the masks' vCDR to the experts' CDR of a dataset."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rfnet.common.metrics import vcdr
from rfnet.data.expert_scale import dataset_expert_scale
from rfnet.errors import UsageError


class _Items:
    """A dataset stand-in: ``get(i)`` gives a sample or None (a bad item), as FundusDataset does."""

    def __init__(self, items: list[SimpleNamespace | None]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def get(self, i: int) -> SimpleNamespace | None:
        return self.items[i]


def _sample(cup_rows: int, expert: float | None) -> SimpleNamespace:
    disc = np.zeros((100, 100), bool)
    disc[20:80, 20:80] = True  # 60 rows
    cup = np.zeros_like(disc)
    cup[50 - cup_rows // 2:50 - cup_rows // 2 + cup_rows, 35:65] = True
    return SimpleNamespace(disc=disc, cup=cup, meta={"expert_cdr_mean": expert})


def test_fits_the_masks_vcdr_against_the_experts_and_skips_what_it_cannot_use() -> None:
    rows = (18, 30, 42, 24)
    samples = [_sample(r, None if r == 24 else 0.8 * (r / 60) + 0.1) for r in rows]
    assert vcdr(samples[0].disc, samples[0].cup) == pytest.approx(18 / 60)
    (a, b), n = dataset_expert_scale(_Items([*samples, None]))
    assert n == 3 and a == pytest.approx(0.8, abs=1e-6) and b == pytest.approx(0.1, abs=1e-6)  # vcdr has a 1e-7 eps


def test_a_dataset_without_the_experts_cdrs_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="experts' CDRs of 1 images, 3 or more are needed"):
        dataset_expert_scale(_Items([_sample(20, 0.5), _sample(30, None)]))
