"""The :class:`Sample` record every loader returns, and the checks that build it (torch-free)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.errors import RFNetError

log = logging.getLogger(__name__)


class DatasetLayoutError(RFNetError, ValueError):
    """The data root does not have the expected layout; the message says which one was expected."""


class SampleError(RFNetError, ValueError):
    """One dataset item cannot be used (missing / unreadable file, empty disc, ...).

    Attributes:
        name: the item's name; path: the offending file (or None); problem: what is wrong.
    """

    def __init__(self, name: str, path: Path | str | None, problem: str) -> None:
        self.name = name
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{name}: {where}{problem}")


@dataclass(frozen=True)
class Problem:
    """A recorded data problem. ``severity`` is "error" (item unusable, skipped) or
    "warning" (item loaded after a fix, e.g. cup clipped to the disc)."""

    name: str
    path: str | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"[{self.severity}] {self.name}: {where}{self.message}"


@dataclass
class Sample:
    """One fundus image with its ground truth, at the original resolution.

    Attributes:
        image: uint8 [H, W, 3] RGB.
        disc: bool [H, W], optic disc including the cup.
        cup: bool [H, W], optic cup; always a subset of ``disc``.
        box: float32 [4] x0, y0, x1, y1 of the disc in pixel-edge coordinates
            (``x1 = last column + 1``), as used by :func:`rfnet.common.postprocess.paste_mask`.
        meta: ``name``, ``path`` (image file), ``orig_size`` (h, w), ``label``
            (1 glaucoma / 0 normal / None unknown), ``dataset``, plus loader extras
            (e.g. Drishti-GS ``expert_cdr``).
    """

    image: np.ndarray
    disc: np.ndarray
    cup: np.ndarray
    box: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight float32 [4] xyxy box of a bool [H, W] mask in pixel-edge coordinates
    (``[min col, min row, max col + 1, max row + 1]``); raises ``ValueError`` if empty."""
    m = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no box")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def binarize(mask: np.ndarray) -> np.ndarray:
    """Binary mask file -> bool: 0/1 masks use ``> 0``, 0..255 masks ``>= 128``."""
    m = np.asarray(mask)
    return m > 0 if int(m.max(initial=0)) <= 1 else m >= 128


def make_sample(
    image: np.ndarray,
    disc: np.ndarray,
    cup: np.ndarray,
    meta: dict[str, Any],
    *,
    mask_path: Path | str | None = None,
    strict: bool = False,
) -> tuple[Sample, list[Problem]]:
    """Validate and assemble a :class:`Sample`.

    Errors (raise :class:`SampleError`): mask size differs from the image, empty disc.
    Warnings (returned as problems; raised instead when ``strict``): cup pixels outside the
    disc (the cup is clipped to the disc), empty cup.
    """
    name = str(meta.get("name", "?"))
    h, w = image.shape[:2]
    for m in (disc, cup):
        if m.shape != (h, w):
            raise SampleError(name, mask_path, f"mask size {m.shape[0]}x{m.shape[1]} differs from the image size {h}x{w}")
    if not disc.any():
        raise SampleError(name, mask_path, "empty disc mask (no disc pixels)")
    problems: list[Problem] = []
    outside = int(np.count_nonzero(cup & ~disc))
    if outside:
        msg = f"{outside} cup pixels lie outside the disc ({outside / max(1, int(cup.sum())):.1%} of the cup); cup clipped to the disc"
        if strict:
            raise SampleError(name, mask_path, msg)
        problems.append(Problem(name, None if mask_path is None else str(mask_path), msg, "warning"))
        cup = cup & disc
    if not cup.any():
        msg = "empty cup mask"
        if strict:
            raise SampleError(name, mask_path, msg)
        problems.append(Problem(name, None if mask_path is None else str(mask_path), msg, "warning"))
    full_meta = dict(meta)
    full_meta.setdefault("orig_size", (int(h), int(w)))
    sample = Sample(
        image=image,
        disc=np.ascontiguousarray(disc, dtype=bool),
        cup=np.ascontiguousarray(cup, dtype=bool),
        box=box_from_mask(disc),
        meta=full_meta,
    )
    return sample, problems
