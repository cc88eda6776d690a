"""REFUGE 2018 loader (layout: shared field notes section 4).

::

    Training400/{Glaucoma,Non-Glaucoma}/*.jpg
    Annotation-Training400/Disc_Cup_Masks/{Glaucoma,Non-Glaucoma}/*.bmp
    REFUGE-Validation400/V*.jpg
    REFUGE-Validation400-GT/Disc_Cup_Masks/V*.bmp
    Test400/T*.jpg
    REFUGE-Test-GT/Disc_Cup_Masks/{G,N}/T*.bmp

Masks: 0 = cup, 128 = disc rim, 255 = background; disc = ``seg < 255``, cup = ``seg == 0``.
Glaucoma labels come from the folder (Glaucoma / G = 1, Non-Glaucoma / N = 0); the
validation labels live in a spreadsheet, not read here (label ``None``). ``__MACOSX``
folders and hidden files are skipped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rfnet.common.imageio import list_images
from rfnet.common.metrics import from_refuge_seg
from rfnet.data.base import Entry, FundusDataset, index_by_stem, normalize_split, read_mask_checked, require_dirs
from rfnet.data.sample import DatasetLayoutError

LAYOUTS = {
    "train": "Training400/{Glaucoma,Non-Glaucoma}/*.jpg and Annotation-Training400/Disc_Cup_Masks/{Glaucoma,Non-Glaucoma}/*.bmp",
    "validation": "REFUGE-Validation400/V*.jpg and REFUGE-Validation400-GT/Disc_Cup_Masks/V*.bmp",
    "test": "Test400/T*.jpg and REFUGE-Test-GT/Disc_Cup_Masks/{G,N}/T*.bmp",
}
SPLITS = {"train": ("training", "training400"), "validation": ("val", "valid"), "test": ("testing", "test400")}


class RefugeDataset(FundusDataset):
    """REFUGE 2018 (train / validation / test), lazily loaded."""

    dataset_name = "refuge"

    def __init__(self, root: str | Path, split: str = "train", *, strict: bool = False) -> None:
        root = Path(root)
        canonical = normalize_split(split, SPLITS, "refuge")
        layout = f"the REFUGE 2018 {canonical} layout: {LAYOUTS[canonical]}"
        entries = _list(root, canonical, layout)
        if not entries:
            raise DatasetLayoutError(f"{root}: no images found; expected {layout}")
        super().__init__(entries, root=root, split=canonical, strict=strict)

    def read_masks(self, entry: Entry, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Path | None]:
        path = entry.masks["seg"]
        disc, cup = from_refuge_seg(read_mask_checked(entry.name, path))
        return disc, cup, path


def _list(root: Path, split: str, layout: str) -> list[Entry]:
    entries: list[Entry] = []
    if split == "train":
        img_root, mask_root = root / "Training400", root / "Annotation-Training400" / "Disc_Cup_Masks"
        require_dirs(root, layout, [img_root, mask_root])
        for cls, label in (("Glaucoma", 1), ("Non-Glaucoma", 0)):
            require_dirs(root, layout, [img_root / cls])
            masks = index_by_stem(mask_root / cls)
            for img in list_images(img_root / cls):
                mask = masks.get(img.stem, mask_root / cls / f"{img.stem}.bmp")
                entries.append(Entry(img.stem, img, {"seg": mask}, label))
    elif split == "validation":
        img_root, mask_root = root / "REFUGE-Validation400", root / "REFUGE-Validation400-GT" / "Disc_Cup_Masks"
        require_dirs(root, layout, [img_root, mask_root])
        masks = index_by_stem(mask_root)
        for img in list_images(img_root):
            entries.append(Entry(img.stem, img, {"seg": masks.get(img.stem, mask_root / f"{img.stem}.bmp")}, None))
    else:
        img_root, mask_root = root / "Test400", root / "REFUGE-Test-GT" / "Disc_Cup_Masks"
        require_dirs(root, layout, [img_root, mask_root])
        found: dict[str, tuple[Path, int]] = {}
        for cls, label in (("G", 1), ("N", 0)):
            for stem, p in index_by_stem(mask_root / cls).items():
                found.setdefault(stem, (p, label))
        for img in list_images(img_root):
            # a test image whose mask is in neither G/ nor N/: the error names the expected place
            mask, label_or_none = found.get(img.stem, (mask_root / "{G,N}" / f"{img.stem}.bmp", None))
            entries.append(Entry(img.stem, img, {"seg": mask}, label_or_none))
    return entries
