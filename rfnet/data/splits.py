"""Deterministic train/validation and k-fold splits by item name (torch-free).

Splits depend only on the *set* of names and the seed (names are sorted first), so the
same data gives the same split on every machine and in every process.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rfnet.data.base import FundusDataset
from rfnet.errors import UsageError


def _shuffled(names: Sequence[str], seed: int) -> list[str]:
    uniq = sorted(set(names))
    if len(uniq) != len(names):
        raise UsageError("item names must be unique to split by name")
    order = np.random.default_rng(seed).permutation(len(uniq))
    return [uniq[i] for i in order]


def train_val_split(names: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split names into (train, val); ``round(val_fraction * n)`` go to val (at least 1 when
    ``val_fraction > 0`` and n >= 2). Both lists are returned sorted."""
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    shuffled = _shuffled(names, seed)
    n = len(shuffled)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def kfold_split(names: Sequence[str], k: int, seed: int = 0,
                groups: Mapping[str, str] | None = None) -> list[tuple[list[str], list[str]]]:
    """k (train, val) pairs; every name is in exactly one val fold, fold sizes differ by <= 1.

    E.g. ``kfold_split(drishti.names, 5)`` for the 5-fold cross-validation on Drishti-GS. With
    ``groups`` (name -> dataset, a mixture's :attr:`~rfnet.data.base.FundusDataset.groups`) each
    group is split on its own, with the same seed, and fold i joins every group's fold i: each
    dataset's images are then held out exactly as a cross-validation of that dataset alone would.
    """
    if k < 2:
        raise UsageError(f"k must be at least 2, got {k}")
    if groups is not None:
        members: dict[str, list[str]] = {}
        for n in names:
            members.setdefault(groups[n], []).append(n)
        per_group = [kfold_split(m, k, seed) for _, m in sorted(members.items())]
        return [(sorted(n for g in per_group for n in g[i][0]), sorted(n for g in per_group for n in g[i][1]))
                for i in range(k)]
    shuffled = _shuffled(names, seed)
    if len(shuffled) < k:
        raise UsageError(f"cannot make {k} folds from {len(shuffled)} items")
    folds = [sorted(shuffled[i::k]) for i in range(k)]
    return [(sorted(n for j, f in enumerate(folds) if j != i for n in f), folds[i]) for i in range(k)]


def split_dataset(ds: FundusDataset, val_fraction: float, seed: int = 0) -> tuple[FundusDataset, FundusDataset]:
    """(train, val) sub-loaders of ``ds`` by :func:`train_val_split` on its names."""
    train, val = train_val_split(ds.names, val_fraction, seed)
    return ds.subset(train), ds.subset(val)


def kfold_datasets(ds: FundusDataset, k: int, seed: int = 0) -> list[tuple[FundusDataset, FundusDataset]]:
    """(train, val) sub-loaders of ``ds`` for each of the k folds of :func:`kfold_split`."""
    return [(ds.subset(tr), ds.subset(va)) for tr, va in kfold_split(ds.names, k, seed, ds.groups)]


def held_out_fold(ds: FundusDataset, fold: int, k: int, seed: int = 0, option: str = "--fold") -> FundusDataset:
    """The held-out (validation) part of fold ``fold`` of :func:`kfold_split`: the images that
    ``rfnet.train --fold K --folds k --seed S`` never trains on. ``option`` names the CLI flag
    in the error for a fold outside ``0..k-1``."""
    if not 0 <= fold < k:
        raise UsageError(f"{option} must be in 0..{k - 1} for --folds {k}, got {fold}")
    return ds.subset(kfold_split(ds.names, k, seed, ds.groups)[fold][1])
