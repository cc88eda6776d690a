"""Drishti-GS1 loader (layout: shared field notes section 4).

::

    Drishti-GS1_files/Training/Images/drishtiGS_NNN.{png,jpg}
    Drishti-GS1_files/Training/GT/<id>/SoftMap/<id>_ODsegSoftmap.png, <id>_cupsegSoftmap.png
    Drishti-GS1_files/Training/GT/<id>/<id>_cdrValues.txt          (4 experts' CDRs)
    Drishti-GS1_files/Test/Images/...,  Test/Test_GT/<id>/...

The soft maps hold 0/64/128/191/255 = 0..4 of the 4 experts marking the pixel. A pixel is
foreground when ``soft >= soft_threshold``; the default 255 ("all four agree") is the
common benchmark mask, 191 = at least 3, 128 = at least 2 (majority), 64 = any expert.
``root`` may be ``Drishti-GS1_files``, its parent, or a split folder (holding ``Images/``).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.common.imageio import list_images
from rfnet.data.base import Entry, FundusDataset, normalize_split, read_mask_checked, require_dirs
from rfnet.data.sample import DatasetLayoutError, Problem
from rfnet.errors import UsageError

log = logging.getLogger(__name__)

SPLITS = {"train": ("training",), "test": ("testing",)}
_SPLIT_DIRS = {"train": ("Training", "GT"), "test": ("Test", "Test_GT")}
LAYOUT = (
    "Drishti-GS1_files/{Training,Test}/Images/drishtiGS_NNN.{png,jpg} with "
    "Training/GT/<id>/SoftMap/<id>_{OD,cup}segSoftmap.png (Test/Test_GT/<id>/... for the test split)"
)


class DrishtiDataset(FundusDataset):
    """Drishti-GS1 with soft-map thresholding and the experts' CDR values in ``meta``."""

    dataset_name = "drishti-gs"

    def __init__(self, root: str | Path, split: str = "train", *, soft_threshold: int = 255, strict: bool = False) -> None:
        if not 1 <= int(soft_threshold) <= 255:
            raise UsageError(f"soft_threshold must be in 1..255 (255 = all 4 experts agree), got {soft_threshold}")
        self.soft_threshold = int(soft_threshold)
        root = Path(root)
        canonical = normalize_split(split, SPLITS, "drishti-gs")
        split_dir, gt_dir = _resolve(root, canonical)
        entries = []
        for img in list_images(split_dir / "Images"):
            gt = gt_dir / img.stem
            soft = gt / "SoftMap" if (gt / "SoftMap").is_dir() or not gt.is_dir() else gt
            entries.append(
                Entry(
                    img.stem,
                    img,
                    {"disc": soft / f"{img.stem}_ODsegSoftmap.png", "cup": soft / f"{img.stem}_cupsegSoftmap.png"},
                    None,
                    {"cdr_file": gt / f"{img.stem}_cdrValues.txt"},
                )
            )
        if not entries:
            raise DatasetLayoutError(f"{split_dir / 'Images'}: no images found; expected {LAYOUT}")
        super().__init__(entries, root=root, split=canonical, strict=strict)

    def read_masks(self, entry: Entry, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Path | None]:
        disc = read_mask_checked(entry.name, entry.masks["disc"]) >= self.soft_threshold
        cup = read_mask_checked(entry.name, entry.masks["cup"]) >= self.soft_threshold
        return disc, cup, entry.masks["disc"]

    def extra_meta(self, entry: Entry) -> dict[str, Any]:
        """``expert_cdr`` (list of the experts' CDRs) and ``expert_cdr_mean``; None if absent."""
        path: Path = entry.extra["cdr_file"]
        meta: dict[str, Any] = {"expert_cdr": None, "expert_cdr_mean": None, "soft_threshold": self.soft_threshold}
        if not path.is_file():
            log.debug("%s: no CDR values file", path)
            return meta
        try:
            values = [float(v) for v in re.split(r"[\s,;]+", path.read_text().strip()) if v]
        except (OSError, ValueError) as exc:
            self._record(Problem(entry.name, str(path), f"cannot parse experts' CDR values ({exc})", "warning"))
            return meta
        if values:
            meta["expert_cdr"] = values
            meta["expert_cdr_mean"] = float(np.mean(values))
        return meta


def _resolve(root: Path, split: str) -> tuple[Path, Path]:
    """Find (split folder, GT folder) from any of the accepted roots."""
    split_name, gt_name = _SPLIT_DIRS[split]
    if (root / "Images").is_dir():  # a split folder itself
        gt = root / gt_name if (root / gt_name).is_dir() else root / "GT"
        require_dirs(root, LAYOUT, [gt])
        return root, gt
    base = root / "Drishti-GS1_files" if (root / "Drishti-GS1_files").is_dir() else root
    split_dir = base / split_name
    require_dirs(base, LAYOUT, [split_dir / "Images", split_dir / gt_name])
    return split_dir, split_dir / gt_name
