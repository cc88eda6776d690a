"""Test-time augmentation: the model on the image and on its mirror image, top detections merged
(torch-free).

A fundus photograph and its left-right mirror are equally plausible eyes, so averaging the two
predictions cancels part of the model's left-right noise. The merge works on the raw outputs
(contract of docs/design.md), so every backend and every later step is unchanged:

* the mirrored view's top box is mapped back (``x -> S - x`` in network-input pixels, pixel
  edges) and its masks are mirrored back (mask columns follow the box);
* when both top detections are real (score > 0) and overlap (IoU >= :data:`MIN_IOU`), slot 0
  becomes their mean box, mean score and mean masks; otherwise the plain view's outputs stay.

Cost: twice the model time (docs/lab/benchmarks-log.md).
"""
from __future__ import annotations

import numpy as np

from rfnet.common.postprocess import box_iou

#: Below this IoU the two views disagree on the disc; the plain view is kept.
MIN_IOU = 0.5


def mirror(tensors: np.ndarray) -> np.ndarray:
    """Preprocessed batch [N,3,S,S] -> its left-right mirror (contiguous)."""
    return np.ascontiguousarray(tensors[..., ::-1])


def merge_mirrored(plain: dict[str, np.ndarray], mirrored: dict[str, np.ndarray], width: int
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Merge the outputs of a batch and of its mirror (both ``{boxes [N,K,4], scores [N,K],
    masks [N,K,2,M,M]}``, width ``S`` of the network input).

    Returns:
        (merged outputs, bool [N]: whether image i's top detections were merged).
    """
    boxes, scores, masks = plain["boxes"].copy(), plain["scores"].copy(), plain["masks"].copy()
    merged = np.zeros(boxes.shape[0], dtype=bool)
    for i in range(boxes.shape[0]):
        if scores[i, 0] <= 0 or mirrored["scores"][i, 0] <= 0:
            continue
        mb = mirrored["boxes"][i, 0]
        back = np.array([width - mb[2], mb[1], width - mb[0], mb[3]], dtype=boxes.dtype)
        if box_iou(boxes[i, 0], back) < MIN_IOU:
            continue
        boxes[i, 0] = (boxes[i, 0] + back) / 2
        scores[i, 0] = (scores[i, 0] + mirrored["scores"][i, 0]) / 2
        masks[i, 0] = (masks[i, 0] + mirrored["masks"][i, 0][..., ::-1]) / 2
        merged[i] = True
    return {"boxes": boxes, "scores": scores, "masks": masks}, merged
