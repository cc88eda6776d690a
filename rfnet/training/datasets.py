"""Dataset selection for the command lines: which items train, which validate.

The training data is one dataset (``--dataset KIND --data-root PATH [--split S]``) or several
mixed by weight (``--data kind=K,root=PATH[,split=S][,weight=W][,OPTION=V]``, repeatable, or
``--data-config FILE.json``; :mod:`rfnet.data.mixture`).

Validation comes from exactly one of (checked by :func:`select_datasets`):

* ``--val-split NAME``: another split of the same dataset (REFUGE ``validation``; for the
  ``folder`` dataset ``<root>/<NAME>/images`` + ``masks``);
* ``--val-data-root PATH``: another root of the same dataset kind (e.g. a second generated
  folder), with ``--val-split`` as its split when given;
* ``--fold K --folds N``: k-fold cross-validation by item name (K = 0..N-1), deterministic
  for a given ``--seed`` (:func:`rfnet.data.splits.kfold_split`; per dataset in a mixture);
* ``--val-fraction F``: a random fraction of the training items, by name and seed
  (default 0.1 when nothing else is given; 0 disables validation).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rfnet.data import FundusDataset, load_dataset
from rfnet.data.mixture import DataSource, load_mixture, parse_data_spec, read_data_config
from rfnet.data.splits import kfold_split, train_val_split
from rfnet.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.1


@dataclass
class DataSelection:
    """Arguments that pick the data (a plain record so it can be stored in a checkpoint)."""

    dataset: str | None
    data_root: str | None
    split: str | None = None
    data: list[str] | None = None  # --data specs (a mixture); replaces dataset / data_root / split
    val_split: str | None = None
    val_data_root: str | None = None
    val_fraction: float | None = None
    fold: int | None = None
    folds: int = 5
    seed: int = 0
    strict: bool = False

    def sources(self) -> list[DataSource]:
        """The training data as sources (``UsageError`` when neither form, or both, is given)."""
        if self.data:
            if self.dataset is not None or self.data_root is not None or self.split is not None:
                raise UsageError("give the training data either as --data (repeatable) or as --dataset / --data-root "
                                 "/ --split, not both")
            return [parse_data_spec(spec) for spec in self.data]
        if self.dataset is None or self.data_root is None:
            raise UsageError("--dataset and --data-root are required (or --data, repeatable)")
        return [DataSource(self.dataset, self.data_root, self.split)]


def add_data_arguments(group: Any, *, required_unless: str) -> None:
    """The data options shared by ``rfnet.train`` and ``rfnet.evaluate``: ``--dataset`` /
    ``--data-root`` for one dataset, ``--data`` (repeatable) / ``--data-config`` for several."""
    from rfnet.data import DATASET_NAMES

    group.add_argument("--dataset", choices=DATASET_NAMES, help=f"dataset layout (required unless {required_unless})")
    group.add_argument("--data-root", help=f"dataset root folder (required unless {required_unless})")
    group.add_argument("--data", action="append", metavar="SPEC",
                       help="a dataset of several, repeatable: kind=K,root=PATH[,split=S][,weight=W][,OPTION=V] "
                            "(options: partition=randomly for RIM-ONE DL, soft_threshold=N for Drishti-GS); in training "
                            "each is drawn in proportion to its weight whatever its size; --fold splits each dataset "
                            "on its own; evaluations report each dataset apart")
    group.add_argument("--data-config", metavar="FILE",
                       help="the datasets as a JSON list of {kind, root, split, weight, ...} objects (adds to --data)")


def data_specs(data: list[str] | None, config: str | None) -> list[str] | None:
    """``--data`` strings plus the sources of ``--data-config FILE`` (as strings), or None."""
    specs = list(data or [])
    if config:
        specs += [src.to_spec() for src in read_data_config(config)]
    return specs or None


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
    full = load_mixture(sel.sources(), strict=sel.strict)
    if len(full) == 0:
        raise ValueError(f"{full}: no items to train on")

    if sel.val_split is not None or sel.val_data_root is not None:
        if sel.data:
            raise UsageError("--val-split / --val-data-root take one dataset; with --data validate by --fold or "
                             "--val-fraction, or score another dataset with rfnet.evaluate")
        assert sel.dataset is not None and sel.data_root is not None
        root = sel.val_data_root or sel.data_root
        val = load_dataset(sel.dataset, root, sel.val_split, **opts)
        overlap = sorted(set(full.names) & set(val.names)) if root == sel.data_root else []
        if overlap and sel.val_split == sel.split:
            raise ValueError(f"validation split {sel.val_split!r} is the training split")
        return full, val, f"{sel.dataset} {root} split {sel.val_split or 'all'} ({len(val)} items)"

    if sel.fold is not None:
        if not 0 <= sel.fold < sel.folds:
            raise ValueError(f"--fold must be in 0..{sel.folds - 1} for --folds {sel.folds}, got {sel.fold}")
        train_names, val_names = kfold_split(full.names, sel.folds, sel.seed, full.groups)[sel.fold]
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
