"""Generic folder loader: ``images/`` + ``masks/`` (+ optional ``labels.csv``).

::

    <root>/images/<stem>.<png|jpg|bmp|tif>
    <root>/masks/<stem>.png                      one mask with both structures, or
    <root>/masks/<stem>_disc.png + <stem>_cup.png  separate binary masks
    <root>/labels.csv                            optional: columns name,label (1 glaucoma, 0 normal)

Mask encodings (``encoding="auto"`` detects them per file from the pixel values):

* ``refuge``: grey 0 = cup, 128 = disc rim, 255 = background (values within {0,128,255},
  128 present, or all 255);
* ``labels``: 0 = background, 1 = disc rim, 2 = cup (values within {0,1,2});
* ``separate``: ``<stem>_disc.*`` and ``<stem>_cup.*`` binary masks (0/255 or 0/1),
  chosen automatically when those files exist.

A single mask holding only 0 and 255 is ambiguous (REFUGE without a rim, or a binary disc
mask) and is reported instead of guessed; pass ``encoding="refuge"`` to force it.
When ``root/<split>/images`` exists the split's subfolder is used.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from rfnet.common.imageio import list_images
from rfnet.data.base import Entry, FundusDataset, index_by_stem, read_mask_checked
from rfnet.data.sample import DatasetLayoutError, SampleError, binarize
from rfnet.errors import UsageError

log = logging.getLogger(__name__)

ENCODINGS = ("auto", "refuge", "labels", "separate")
LAYOUT = "a folder with images/<stem>.png|jpg and masks/<stem>.png (or masks/<stem>_disc.png + masks/<stem>_cup.png)"


class FolderDataset(FundusDataset):
    """Images and masks from a plain folder pair (see the module docstring)."""

    dataset_name = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        encoding: str = "auto",
        images_dir: str = "images",
        masks_dir: str = "masks",
        strict: bool = False,
    ) -> None:
        if encoding not in ENCODINGS:
            raise UsageError(f"folder: unknown mask encoding {encoding!r}; choose one of {ENCODINGS}")
        self.encoding = encoding
        root = Path(root)
        base = root
        if split not in (None, "", "all") and (root / str(split) / images_dir).is_dir():
            base = root / str(split)
        elif split not in (None, "", "all", "train"):
            raise DatasetLayoutError(f"{root}: no {split}/{images_dir} folder for split {split!r}; expected {LAYOUT}")
        img_dir, mask_dir = base / images_dir, base / masks_dir
        if not base.is_dir():
            raise DatasetLayoutError(f"{base}: data root does not exist or is not a folder; expected {LAYOUT}")
        missing = [d.name for d in (img_dir, mask_dir) if not d.is_dir()]
        if missing:
            raise DatasetLayoutError(f"{base}: missing {', '.join(missing)}/; expected {LAYOUT}")
        labels = _read_labels(base / "labels.csv")
        masks = index_by_stem(mask_dir)
        entries = []
        for img in list_images(img_dir):
            stem = img.stem
            if encoding == "separate" or (encoding == "auto" and f"{stem}_disc" in masks):
                roles = {
                    "disc": masks.get(f"{stem}_disc", mask_dir / f"{stem}_disc.png"),
                    "cup": masks.get(f"{stem}_cup", mask_dir / f"{stem}_cup.png"),
                }
            else:
                roles = {"seg": masks.get(stem, mask_dir / f"{stem}.png")}
            entries.append(Entry(stem, img, roles, labels.get(stem)))
        if not entries:
            raise DatasetLayoutError(f"{img_dir}: no images found; expected {LAYOUT}")
        super().__init__(entries, root=base, split=str(split or "all"), strict=strict)

    def read_masks(self, entry: Entry, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Path | None]:
        if "seg" not in entry.masks:
            disc = binarize(read_mask_checked(entry.name, entry.masks["disc"]))
            cup = binarize(read_mask_checked(entry.name, entry.masks["cup"]))
            return disc, cup, entry.masks["disc"]
        path = entry.masks["seg"]
        seg = read_mask_checked(entry.name, path)
        disc, cup = decode_mask(seg, self.encoding, entry.name, path)
        return disc, cup, path


def detect_encoding(seg: np.ndarray) -> str | None:
    """"refuge", "labels" or None (unknown / ambiguous) from a single mask's values."""
    values = set(np.unique(seg).tolist())
    if values <= {0, 1, 2}:
        return "labels"
    # all-255 is an all-background REFUGE map (reported later as an empty disc)
    if values <= {0, 128, 255} and (128 in values or values == {255}):
        return "refuge"
    return None


def decode_mask(seg: np.ndarray, encoding: str, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Single mask file -> (disc, cup) bool masks by ``encoding`` ("auto" detects it)."""
    enc = detect_encoding(seg) if encoding in ("auto", "separate") else encoding
    if enc == "refuge":
        return seg < 255, seg == 0
    if enc == "labels":
        return seg >= 1, seg == 2
    values = np.unique(seg)
    shown = ", ".join(str(v) for v in values[:10]) + (", ..." if values.size > 10 else "")
    hint = (
        "only 0 and 255: a binary mask? name separate masks <stem>_disc.png and <stem>_cup.png, or pass encoding='refuge'"
        if set(values.tolist()) <= {0, 255}
        else "expected REFUGE grey 0/128/255 or labels 0/1/2"
    )
    raise SampleError(name, path, f"cannot tell the mask encoding from its values ({shown}); {hint}")


def _read_labels(path: Path) -> dict[str, int]:
    """labels.csv -> {name: 0/1}; missing file -> {}; a bad file raises naming it."""
    if not path.is_file():
        return {}
    out: dict[str, int] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "name" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise DatasetLayoutError(f"{path}: labels file needs columns 'name' and 'label', got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise DatasetLayoutError(f"{path}:{line}: label must be 0 or 1, got {row['label']!r}") from None
            if label not in (0, 1):
                raise DatasetLayoutError(f"{path}:{line}: label must be 0 or 1, got {label}")
            out[Path(row["name"]).stem] = label
    return out
