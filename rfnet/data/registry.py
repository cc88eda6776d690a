"""``load_dataset(name, root, split=..., **options)``: one entry point for every loader."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rfnet.data.base import FundusDataset
from rfnet.errors import UsageError

#: Dataset names accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = ("refuge", "drishti-gs", "rim-one-dl", "folder")


def load_dataset(name: str, root: str | Path, split: str | None = None, **options: Any) -> FundusDataset:
    """Build a lazy loader.

    Args:
        name: "refuge" | "drishti-gs" | "rim-one-dl" | "folder".
        root: dataset root (see each loader's module docstring for the layout).
        split: "train" (default) | "validation" (REFUGE) | "test"; for "folder" ``None`` /
            "all" uses ``root`` itself and other names use ``root/<split>/`` when it exists.
        options: ``strict`` (all); ``soft_threshold`` (drishti-gs, default 255);
            ``partition`` (rim-one-dl); ``encoding``, ``images_dir``, ``masks_dir`` (folder).
    Raises:
        ValueError: unknown name, split or option; DatasetLayoutError (a ValueError) for a
        root without the expected layout.
    """
    key = name.strip().lower().replace("_", "-")
    if key in ("drishti", "drishti-gs1"):
        key = "drishti-gs"
    if key in ("rim-one", "rimone", "rimone-dl"):
        key = "rim-one-dl"
    try:
        if key == "refuge":
            from rfnet.data.refuge import RefugeDataset

            return RefugeDataset(root, split or "train", **options)
        if key == "drishti-gs":
            from rfnet.data.drishti import DrishtiDataset

            return DrishtiDataset(root, split or "train", **options)
        if key == "rim-one-dl":
            from rfnet.data.rimone import RimOneDLDataset

            return RimOneDLDataset(root, split or "train", **options)
        if key == "folder":
            from rfnet.data.folder import FolderDataset

            return FolderDataset(root, split, **options)
    except TypeError as exc:  # unknown keyword option
        raise UsageError(f"{name}: bad option ({exc})") from None
    raise UsageError(f"unknown dataset {name!r}; choose one of {list(DATASET_NAMES)}")
