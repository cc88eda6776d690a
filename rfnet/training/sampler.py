"""Weighted drawing of a mixture's items for training (``rfnet.train --data ... --data ...``).

Each epoch draws ``len(dataset)`` items with replacement, item ``i`` with probability
proportional to ``weights[i]`` (:meth:`rfnet.data.mixture.MixedDataset.item_weights`: each
dataset in proportion to its weight, whatever its size). The draw depends only on
``(seed, epoch)``, so a resumed run repeats it; under torchrun every rank makes the same draw
and takes every ``world_size``-th item from position ``rank``, as ``DistributedSampler`` does.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class WeightedMixtureSampler(Sampler[int]):
    """``len(weights)`` draws per epoch (split across ``world_size`` ranks), by weight, with replacement."""

    def __init__(self, weights: Sequence[float] | np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.ndim != 1 or w.numel() == 0 or not bool(torch.all(w >= 0)) or not float(w.sum()) > 0:
            raise ValueError(f"weights must be a non-empty vector of non-negative numbers with a positive sum, got {w.shape}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.weights, self.seed, self.rank, self.world_size = w, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.weights.numel() - self.rank + self.world_size - 1) // self.world_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        drawn = torch.multinomial(self.weights, self.weights.numel(), replacement=True, generator=g)
        return iter(drawn[self.rank::self.world_size].tolist())
