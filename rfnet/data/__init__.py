"""Datasets, synthetic data and augmentation.

Torch-free except :mod:`rfnet.data.torch_dataset` (import it explicitly):

* :func:`load_dataset` ("refuge" | "drishti-gs" | "rim-one-dl" | "folder") -> lazy
  :class:`FundusDataset` of :class:`Sample` (image uint8 [H,W,3] RGB, disc / cup bool
  [H,W], disc box float32 [4] xyxy, meta);
* :mod:`rfnet.data.splits`: deterministic train/val and k-fold splits by name;
* :mod:`rfnet.data.augment`: flips and 90-degree rotations of image, masks and boxes;
* :mod:`rfnet.data.synthetic`: generated fundus images (``python -m rfnet.data.synthetic``).
"""
from __future__ import annotations

from rfnet.data.base import Entry, FundusDataset
from rfnet.data.registry import DATASET_NAMES, load_dataset
from rfnet.data.sample import DatasetLayoutError, Problem, Sample, SampleError, box_from_mask
from rfnet.data.splits import held_out_fold, kfold_datasets, kfold_split, split_dataset, train_val_split

__all__ = [
    "DATASET_NAMES",
    "DatasetLayoutError",
    "Entry",
    "FundusDataset",
    "Problem",
    "Sample",
    "SampleError",
    "box_from_mask",
    "held_out_fold",
    "kfold_datasets",
    "kfold_split",
    "load_dataset",
    "split_dataset",
    "train_val_split",
]
