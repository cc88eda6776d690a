"""Dataset selection for the command lines: which items train, which validate.

Validation comes from exactly one of (checked by :func:`select_datasets`):

* ``--val-split NAME``: another split of the same dataset (REFUGE ``validation``; for the
  ``folder`` dataset ``<root>/<NAME>/images`` + ``masks``);
* ``--val-data-root PATH``: another root of the same dataset kind (e.g. a second generated
  folder), with ``--val-split`` as its split when given;
* ``--fold K --folds N``: k-fold cross-validation by item name (K = 0..N-1), deterministic
  for a given ``--seed`` (:func:`rfnet.data.splits.kfold_split`);
* ``--val-fraction F``: a random fraction of the training items, by name and seed
  (default 0.1 when nothing else is given; 0 disables validation).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rfnet.data import FundusDataset, load_dataset
from rfnet.data.splits import kfold_split, train_val_split

log = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.1


@dataclass
class DataSelection:
    """Arguments that pick the data (a plain record so it can be stored in a checkpoint)."""

    dataset: str
    data_root: str
    split: str | None = None
    val_split: str | None = None
    val_data_root: str | None = None
    val_fraction: float | None = None
    fold: int | None = None
    folds: int = 5
    seed: int = 0
    strict: bool = False


def select_datasets(sel: DataSelection) -> tuple[FundusDataset, FundusDataset | None, str]:
    """Build (train, val or None, description of the validation source).

    Raises:
        ValueError: conflicting options, a bad fold, an empty split; the loaders' own
            :class:`rfnet.data.DatasetLayoutError` (a ValueError) for a wrong data root.
    """
    modes = [
        name
        for name, on in (
            ("--val-split/--val-data-root", sel.val_split is not None or sel.val_data_root is not None),
            ("--fold", sel.fold is not None),
            ("--val-fraction", sel.val_fraction is not None),
        )
        if on
    ]
    if len(modes) > 1:
        raise ValueError(f"choose one validation source, got {' and '.join(modes)}")
    opts: dict[str, Any] = {"strict": sel.strict}
    full = load_dataset(sel.dataset, sel.data_root, sel.split, **opts)
    if len(full) == 0:
        raise ValueError(f"{sel.data_root}: the {sel.dataset} {sel.split or 'train'} split has no items")

    if sel.val_split is not None or sel.val_data_root is not None:
        root = sel.val_data_root or sel.data_root
        val = load_dataset(sel.dataset, root, sel.val_split, **opts)
        overlap = sorted(set(full.names) & set(val.names)) if root == sel.data_root else []
        if overlap and sel.val_split == sel.split:
            raise ValueError(f"validation split {sel.val_split!r} is the training split")
        return full, val, f"{sel.dataset} {root} split {sel.val_split or 'all'} ({len(val)} items)"

    if sel.fold is not None:
        if not 0 <= sel.fold < sel.folds:
            raise ValueError(f"--fold must be in 0..{sel.folds - 1} for --folds {sel.folds}, got {sel.fold}")
        train_names, val_names = kfold_split(full.names, sel.folds, sel.seed)[sel.fold]
        return (
            full.subset(train_names),
            full.subset(val_names),
            f"fold {sel.fold} of {sel.folds} (seed {sel.seed}, {len(val_names)} items)",
        )

    frac = DEFAULT_VAL_FRACTION if sel.val_fraction is None else sel.val_fraction
    if frac <= 0:
        return full, None, "none"
    if len(full) < 2:
        raise ValueError(f"{sel.data_root}: {len(full)} item(s) cannot be split for validation")
    train_names, val_names = train_val_split(full.names, frac, sel.seed)
    return (
        full.subset(train_names),
        full.subset(val_names),
        f"{frac:.0%} of the training items (seed {sel.seed}, {len(val_names)} items)",
    )
