"""Several datasets as one: ``--data kind=refuge,root=PATH,split=validation,weight=1`` (torch-free).

One training run over Drishti-GS, REFUGE and RIM-ONE DL (each camera teaches the detector
another disc size and the mask branch another colour). Each source keeps its own loader, so
its ground-truth convention stays its own (Drishti-GS's all-agree soft-map threshold and the
experts' CDRs, REFUGE's 0/128/255 maps, RIM-ONE's binary masks); the mixture only lists their
items together and remembers which source each came from:

* :class:`DataSource`: kind, root, split, sampling weight, loader options (RIM-ONE DL's
  ``partition``, Drishti-GS's ``soft_threshold``, ...), parsed from a ``--data`` string by
  :func:`parse_data_spec` or read from a JSON list by :func:`read_data_config`;
* :class:`MixedDataset`: a :class:`~rfnet.data.base.FundusDataset` over the sources' items
  (names must be unique across sources). ``ds.groups`` maps each name to its source's dataset
  name, so k-fold splits are made per dataset (:func:`rfnet.data.splits.kfold_split`) and
  evaluations report per dataset; :meth:`MixedDataset.item_weights` gives the sampler
  ``weight / len(source)`` per item, so each source is drawn in proportion to its weight
  whatever its size.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.data.base import Entry, FundusDataset
from rfnet.data.registry import load_dataset
from rfnet.errors import UsageError

#: Keys of a data source besides the loader options.
_SOURCE_KEYS = ("kind", "root", "split", "weight")


@dataclass(frozen=True)
class DataSource:
    """One dataset of a mixture: ``kind`` (a :data:`rfnet.data.DATASET_NAMES` entry), ``root``,
    ``split`` (None: the loader's training split), sampling ``weight`` (> 0) and loader ``options``."""

    kind: str
    root: str
    split: str | None = None
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def to_spec(self) -> str:
        """The ``--data`` string that parses back to this source."""
        parts = [f"kind={self.kind}", f"root={self.root}"]
        if self.split is not None:
            parts.append(f"split={self.split}")
        if self.weight != 1.0:
            parts.append(f"weight={self.weight:g}")
        parts += [f"{k}={v}" for k, v in sorted(self.options.items())]
        return ",".join(parts)

    def load(self, strict: bool = False) -> FundusDataset:
        return load_dataset(self.kind, self.root, self.split, strict=strict, **self.options)


def _option_value(value: str) -> Any:
    """Loader options arrive as text: whole numbers become ints (``soft_threshold=191``)."""
    try:
        return int(value)
    except ValueError:
        return value


def source_from_mapping(data: Mapping[str, Any], where: str) -> DataSource:
    """A :class:`DataSource` from ``{"kind", "root", "split"?, "weight"?, <loader options>}``."""
    missing = [k for k in ("kind", "root") if not data.get(k)]
    if missing:
        raise UsageError(f"{where}: missing {' and '.join(missing)} (e.g. kind=refuge,root=REFUGE,split=validation)")
    try:
        weight = float(data.get("weight", 1.0))
    except (TypeError, ValueError):
        raise UsageError(f"{where}: weight must be a number, got {data.get('weight')!r}") from None
    if not weight > 0:
        raise UsageError(f"{where}: weight must be > 0, got {weight}")
    split = data.get("split")
    options = {k: (_option_value(v) if isinstance(v, str) else v) for k, v in data.items() if k not in _SOURCE_KEYS}
    return DataSource(str(data["kind"]), str(data["root"]), None if split in (None, "") else str(split), weight, options)


def parse_data_spec(spec: str) -> DataSource:
    """``kind=K,root=PATH[,split=S][,weight=W][,OPTION=VALUE ...]`` or the short ``K:PATH``.

    Raises:
        UsageError: a malformed string, a missing kind or root, a weight that is not > 0.
    """
    text = spec.strip()
    if "=" not in text and ":" in text:
        kind, _, root = text.partition(":")
        return source_from_mapping({"kind": kind, "root": root}, f"--data {spec!r}")
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--data {spec!r}: expected KEY=VALUE pairs separated by commas, got {part!r}")
        if key.strip() in fields:
            raise UsageError(f"--data {spec!r}: {key.strip()!r} given twice")
        fields[key.strip()] = value.strip()
    return source_from_mapping(fields, f"--data {spec!r}")


def read_data_config(path: str | Path) -> list[DataSource]:
    """Sources from a JSON file: a list of ``{"kind", "root", "split"?, "weight"?, ...}`` objects."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read the data config ({exc})") from None
    if not isinstance(data, list) or not data:
        raise UsageError(f"{p}: a data config is a non-empty JSON list of sources")
    return [source_from_mapping(d if isinstance(d, dict) else {}, f"{p} item {i}") for i, d in enumerate(data)]


class MixedDataset(FundusDataset):
    """The items of several :class:`FundusDataset` s, each read by its own loader.

    ``meta["dataset"]`` of a sample is its source's dataset name; :attr:`groups` maps every
    item name to it.
    """

    dataset_name = "mixture"

    def __init__(self, sources: Sequence[FundusDataset], weights: Sequence[float] | None = None, *,
                 strict: bool = False) -> None:
        if not sources:
            raise UsageError("a mixture needs at least one dataset")
        weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
        if len(weights) != len(sources) or min(weights) <= 0:
            raise UsageError(f"one weight > 0 per dataset, got {weights} for {len(sources)}")
        self.sources = list(sources)
        self.weights = weights
        self._owner: dict[str, int] = {}
        entries: list[Entry] = []
        for i, src in enumerate(self.sources):
            for e in src.entries:
                if e.name in self._owner:
                    other = self.sources[self._owner[e.name]]
                    raise UsageError(f"item {e.name!r} is in both {other} and {src}: names must be unique in a mixture")
                self._owner[e.name] = i
                entries.append(e)
        split = "+".join(sorted({s.split for s in self.sources}))
        super().__init__(entries, root=self.sources[0].root, split=split, strict=strict)

    def _source(self, entry: Entry) -> FundusDataset:
        return self.sources[self._owner[entry.name]]

    def read_masks(self, entry: Entry, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Path | None]:
        return self._source(entry).read_masks(entry, shape)

    def extra_meta(self, entry: Entry) -> dict[str, Any]:
        src = self._source(entry)
        return {**src.extra_meta(entry), "dataset": src.dataset_name, "split": src.split}

    @property
    def groups(self) -> dict[str, str] | None:
        return {e.name: self._source(e).dataset_name for e in self.entries}

    def item_weights(self) -> np.ndarray:
        """float64 [N]: each item's sampling weight, ``weight / items of its source`` (in this subset)."""
        counts = np.zeros(len(self.sources))
        for e in self.entries:
            counts[self._owner[e.name]] += 1
        return np.array([self.weights[self._owner[e.name]] / counts[self._owner[e.name]] for e in self.entries])

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.dataset_name}/{s.split} x{w:g}" for s, w in zip(self.sources, self.weights))
        return f"MixedDataset({parts}; items={len(self)})"


def load_mixture(sources: Sequence[DataSource], strict: bool = False) -> FundusDataset:
    """One source: its plain loader (the same dataset and splits as ``--dataset``); several: a
    :class:`MixedDataset` (``UsageError`` / ``DatasetLayoutError`` naming the bad source)."""
    loaders = [s.load(strict=strict) for s in sources]
    if len(loaders) == 1 and sources[0].weight == 1.0:
        return loaders[0]
    return MixedDataset(loaders, [s.weight for s in sources], strict=strict)
