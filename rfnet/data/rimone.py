"""RIM-ONE DL loader (layout: shared field notes section 4).

::

    RIM-ONE_DL_images/partitioned_by_hospital/{training_set,test_set}/{glaucoma,normal}/*.png
    RIM-ONE_DL_reference_segmentations/{glaucoma,normal}/<stem>-1-{Disc,Cup}-T.png

Binary disc / cup masks; the label comes from the class folder (glaucoma = 1). The
``partition`` option picks ``partitioned_by_hospital`` (default) or ``partitioned_randomly``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rfnet.common.imageio import list_images
from rfnet.data.base import Entry, FundusDataset, normalize_split, read_mask_checked, require_dirs
from rfnet.data.sample import DatasetLayoutError, binarize
from rfnet.errors import UsageError

SPLITS = {"train": ("training", "training_set"), "test": ("testing", "test_set")}
PARTITIONS = ("by_hospital", "randomly")


class RimOneDLDataset(FundusDataset):
    """RIM-ONE DL, lazily loaded."""

    dataset_name = "rim-one-dl"

    def __init__(self, root: str | Path, split: str = "train", *, partition: str = "by_hospital", strict: bool = False) -> None:
        if partition not in PARTITIONS:
            raise UsageError(f"rim-one-dl: unknown partition {partition!r}; choose one of {PARTITIONS}")
        root = Path(root)
        canonical = normalize_split(split, SPLITS, "rim-one-dl")
        set_name = "training_set" if canonical == "train" else "test_set"
        layout = (
            f"the RIM-ONE DL layout: RIM-ONE_DL_images/partitioned_{partition}/{{training_set,test_set}}/{{glaucoma,normal}}/*.png "
            "and RIM-ONE_DL_reference_segmentations/{glaucoma,normal}/<stem>-1-{Disc,Cup}-T.png"
        )
        img_root = root / "RIM-ONE_DL_images" / f"partitioned_{partition}" / set_name
        seg_root = root / "RIM-ONE_DL_reference_segmentations"
        require_dirs(root, layout, [img_root, seg_root])
        entries = []
        for cls, label in (("glaucoma", 1), ("normal", 0)):
            if not (img_root / cls).is_dir():
                continue
            for img in list_images(img_root / cls):
                masks = {role: seg_root / cls / f"{img.stem}-1-{role.capitalize()}-T.png" for role in ("disc", "cup")}
                entries.append(Entry(img.stem, img, masks, label))
        if not entries:
            raise DatasetLayoutError(f"{img_root}: no images found in glaucoma/ or normal/; expected {layout}")
        super().__init__(entries, root=root, split=canonical, strict=strict)

    def read_masks(self, entry: Entry, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Path | None]:
        disc = binarize(read_mask_checked(entry.name, entry.masks["disc"]))
        cup = binarize(read_mask_checked(entry.name, entry.masks["cup"]))
        return disc, cup, entry.masks["disc"]
