"""Lazy dataset base class shared by every loader (torch-free).

A loader lists its :class:`Entry` records (file paths, label) when it is built and reads
files only when an item is accessed, so a bad file costs one item, not the whole run:

* ``ds[i]`` returns a :class:`~rfnet.data.sample.Sample` or raises
  :class:`~rfnet.data.sample.SampleError` naming the file and the problem;
* ``ds.get(i)`` returns ``None`` for a bad item (unless the loader is ``strict``), after
  logging a warning once and recording it in ``ds.problems``;
* ``ds.problems`` / ``ds.error_count`` / ``ds.report()`` summarise what went wrong, for
  the trainer's end-of-run report; ``strict=True`` makes every problem (warnings such as a
  cup outside the disc included) raise instead.

Note for multi-process data loading: problems recorded in worker processes stay there;
count skipped items from the batches (see :mod:`rfnet.data.torch_dataset`).
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.common.imageio import ImageReadError, read_image, read_mask
from rfnet.data.sample import Problem, Sample, SampleError, make_sample
from rfnet.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One listed item: its name, image file, mask files by role, label and extras."""

    name: str
    image: Path
    masks: dict[str, Path]
    label: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FundusDataset(Sequence[Sample]):
    """Base class: subclasses set ``dataset_name`` and implement :meth:`read_masks`."""

    dataset_name = "base"

    def __init__(self, entries: Sequence[Entry], *, root: Path, split: str, strict: bool = False) -> None:
        self.entries: list[Entry] = list(entries)
        self.root = Path(root)
        self.split = split
        self.strict = strict
        self._problems: dict[tuple[str, str], Problem] = {}

    # -- subclass hook -------------------------------------------------------------------
    def read_masks(self, entry: Entry, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Path | None]:
        """Return (disc bool [H,W], cup bool [H,W], mask path to blame in messages)."""
        raise NotImplementedError

    def extra_meta(self, entry: Entry) -> dict[str, Any]:
        """Additional meta fields for an entry (e.g. expert CDRs); default none."""
        return {}

    # -- access --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}; use subset() for several")
        entry = self.entries[index]
        try:
            image = read_image(entry.image)
        except ImageReadError as exc:
            raise self._fail(SampleError(entry.name, entry.image, _problem_text(exc, entry.image))) from exc
        try:
            disc, cup, mask_path = self.read_masks(entry, image.shape[:2])
        except ImageReadError as exc:
            raise self._fail(SampleError(entry.name, None, str(exc))) from exc
        except SampleError as exc:
            raise self._fail(exc) from None
        meta: dict[str, Any] = {
            "name": entry.name,
            "path": str(entry.image),
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
            "label": entry.label,
            "dataset": self.dataset_name,
            "split": self.split,
        }
        meta.update(self.extra_meta(entry))
        try:
            sample, problems = make_sample(image, disc, cup, meta, mask_path=mask_path, strict=self.strict)
        except SampleError as exc:
            raise self._fail(exc) from None
        for p in problems:
            self._record(p)
        return sample

    def get(self, index: int) -> Sample | None:
        """The sample, or ``None`` if it is bad (recorded in :attr:`problems`); raises when strict."""
        try:
            return self[index]
        except SampleError:
            if self.strict:
                raise
            return None

    def iter_samples(self) -> Iterator[Sample]:
        """Good samples in order, skipping (and recording) bad ones unless strict."""
        for i in range(len(self)):
            s = self.get(i)
            if s is not None:
                yield s

    def check_all(self) -> list[Problem]:
        """Load every item once (slow: reads all files) and return the problems found."""
        for i in range(len(self)):
            self.get(i)
        return self.problems

    # -- bookkeeping ---------------------------------------------------------------------
    def _record(self, problem: Problem) -> None:
        key = (problem.name, problem.message)
        if key not in self._problems:
            self._problems[key] = problem
            log.warning("%s", problem)

    def _fail(self, exc: SampleError) -> SampleError:
        self._record(Problem(exc.name, None if exc.path is None else str(exc.path), exc.problem, "error"))
        return exc

    @property
    def problems(self) -> list[Problem]:
        """Distinct problems seen so far (each reported once)."""
        return list(self._problems.values())

    @property
    def bad_names(self) -> list[str]:
        """Names of items that could not be loaded."""
        return sorted({p.name for p in self._problems.values() if p.severity == "error"})

    @property
    def error_count(self) -> int:
        return len(self.bad_names)

    def report(self) -> str:
        """One-paragraph summary for the end of a run."""
        if not self._problems:
            return f"{self.dataset_name}/{self.split}: {len(self)} items, no problems"
        warn = sum(1 for p in self._problems.values() if p.severity == "warning")
        lines = [f"{self.dataset_name}/{self.split}: {len(self)} items, {self.error_count} skipped as bad, {warn} warnings"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    # -- views ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def labels(self) -> list[int | None]:
        return [e.label for e in self.entries]

    @property
    def groups(self) -> dict[str, str] | None:
        """Item name -> the dataset it comes from, for a mixture of datasets (k-fold splits are
        then made per dataset); None for a single dataset."""
        return None

    def subset(self, names_or_indices: Iterable[str | int]) -> "FundusDataset":
        """A loader of the same kind over some of the entries (by name or index), in the given
        order; problems are tracked separately."""
        by_name = {e.name: e for e in self.entries}
        chosen: list[Entry] = []
        for key in names_or_indices:
            if isinstance(key, str):
                if key not in by_name:
                    raise KeyError(f"{key!r} is not an item of {self.dataset_name}/{self.split}")
                chosen.append(by_name[key])
            else:
                chosen.append(self.entries[int(key)])
        new = copy.copy(self)
        new.entries = chosen
        new._problems = {}
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, items={len(self)})"


def _problem_text(exc: ImageReadError, path: Path) -> str:
    """ImageReadError messages start with the path; drop it (SampleError adds it back)."""
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def read_mask_checked(name: str, path: Path) -> np.ndarray:
    """:func:`read_mask` raising :class:`SampleError` (item name + file + problem)."""
    try:
        return read_mask(path)
    except ImageReadError as exc:
        raise SampleError(name, path, _problem_text(exc, path)) from exc


def require_dirs(root: Path, layout: str, dirs: Sequence[Path]) -> None:
    """Raise :class:`DatasetLayoutError` naming the expected layout when a folder is missing."""
    from rfnet.data.sample import DatasetLayoutError

    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: data root does not exist or is not a folder; expected {layout}")
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        rel = ", ".join(str(d.relative_to(root)) if d.is_relative_to(root) else str(d) for d in missing)
        raise DatasetLayoutError(f"{root}: missing {rel}; expected {layout}")


def index_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` keyed by file stem (first in sorted order wins)."""
    from rfnet.common.imageio import list_images

    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in list_images(folder):
            out.setdefault(p.stem, p)
    return out


def normalize_split(split: str | None, aliases: Mapping[str, tuple[str, ...]], dataset: str) -> str:
    """Map a user's split name onto a canonical one (``ValueError`` lists the choices)."""
    s = (split or "train").strip().lower()
    for canonical, names in aliases.items():
        if s == canonical or s in names:
            return canonical
    raise UsageError(f"{dataset}: unknown split {split!r}; choose one of {sorted(aliases)}")
