"""Predict a whole dataset with an RF-Net model and score it: shared by training and evaluation.

The path is exactly the deployment one: the model goes behind
:class:`rfnet.torch_backend.TorchBackend` and through the same image -> segmentation core as
ONNX Runtime and TensorRT (:class:`rfnet.common.segment.Segmenter`: letterbox + normalise ->
eval forward -> output check -> paste into the original pixels, threshold, clean), then
:func:`rfnet.common.metrics.case_metrics` against the original-size ground truth. Training's
per-epoch validation and ``rfnet.evaluate`` both call :func:`evaluate_dataset`, so the
numbers they print are the same numbers.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rfnet.common.metrics import case_metrics, summarize
from rfnet.common.postprocess import Segmentation
from rfnet.common.progress import track
from rfnet.common.segment import Segmenter
from rfnet.config import ModelConfig
from rfnet.data.sample import Sample
from rfnet.torch_backend import TorchBackend

log = logging.getLogger(__name__)

#: Columns of the per-image table, in order (``rfnet.evaluate`` writes them to CSV).
CASE_COLUMNS: tuple[str, ...] = (
    "name",
    "dice_disc",
    "dice_cup",
    "iou_disc",
    "iou_cup",
    "miou",
    "vcdr_pred",
    "vcdr_gt",
    "vcdr_ae",
    "vcdr_extent_pred",
    "vcdr_extent_gt",
    "vcdr_extent_ae",
    "hcdr_pred",
    "hcdr_gt",
    "area_cdr_pred",
    "area_cdr_gt",
    "score",
    "disc_found",
    "cup_low_confidence",
    "label",
    "expert_cdr",
)


@dataclass
class EvalResult:
    """Per-image rows, their mean / std, and what could not be evaluated.

    Attributes:
        rows: one dict per evaluated image (keys :data:`CASE_COLUMNS`).
        summary: ``{metric: (mean, std)}`` over ``rows`` (NaN values left out).
        skipped: names of items that could not be loaded (unreadable / truncated / missing
            file, empty disc, ...); the dataset's ``problems`` say why.
        no_disc: names of images where the model found no disc (their Dice is 0).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, tuple[float, float]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    no_disc: list[str] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return self.summary.get(key, (math.nan, math.nan))[0]

    @property
    def score(self) -> float:
        """Model-selection score: mean of the disc and cup Dice (NaN if nothing was evaluated)."""
        return (self.mean("dice_disc") + self.mean("dice_cup")) / 2.0


def predict_images(
    model: nn.Module,
    images: Sequence[np.ndarray],
    cfg: ModelConfig,
    device: torch.device,
    *,
    threshold: float = 0.5,
    ellipse: bool = False,
) -> list[Segmentation]:
    """Segment RGB uint8 images [H,W,3] (any sizes) in one forward pass -> one
    :class:`Segmentation` each, at the original size. ``model`` must be in eval mode."""
    with TorchBackend.from_model(model, cfg, device) as backend:
        core = Segmenter(backend, batch_size=max(1, len(images)), threshold=threshold, ellipse=ellipse)
        return core.segment(images)


def predict_dataset(
    model: nn.Module,
    dataset: Any,
    cfg: ModelConfig,
    device: torch.device,
    *,
    batch_size: int = 4,
    threshold: float = 0.5,
    ellipse: bool = False,
    progress: bool = True,
    desc: str = "predict",
) -> Iterator[tuple[Sample, Segmentation]]:
    """Yield ``(sample, segmentation)`` for every loadable item of ``dataset`` in order.

    ``dataset`` needs ``len``, ``get(i) -> Sample | None`` (``None``: a bad item the dataset
    recorded; it raises instead when strict) and ``bad_names``: any :class:`rfnet.data.base.FundusDataset`.
    Bad items are skipped (``dataset.get`` returns ``None`` and records why) or raise when
    the dataset is strict. Puts the model in eval mode; restoring train mode is the caller's job.
    """
    model.eval()
    pending: list[Sample] = []
    with TorchBackend.from_model(model, cfg, device) as backend:
        core = Segmenter(backend, batch_size=max(1, batch_size), threshold=threshold, ellipse=ellipse)

        def flush() -> Iterator[tuple[Sample, Segmentation]]:
            yield from zip(pending, core.segment([s.image for s in pending]))
            pending.clear()

        for i in track(range(len(dataset)), desc=desc, unit="img", enabled=progress):
            sample = dataset.get(i)
            if sample is None:
                continue
            pending.append(sample)
            if len(pending) >= max(1, batch_size):
                yield from flush()
        if pending:
            yield from flush()


def case_row(sample: Sample, seg: Segmentation) -> dict[str, Any]:
    """Per-image metrics (:func:`rfnet.common.metrics.case_metrics`) plus detection score,
    glaucoma label and expert CDR when the dataset knows them."""
    row: dict[str, Any] = {"name": sample.name}
    row.update(case_metrics(seg.disc, seg.cup, sample.disc, sample.cup))
    row["score"] = float(seg.score)
    row["disc_found"] = int(seg.found)
    row["cup_low_confidence"] = int(seg.cup_fallback)
    label = sample.meta.get("label")
    row["label"] = "" if label is None else int(label)
    # Drishti-GS: the experts' CDRs and their mean (``expert_cdr_mean``); other loaders may give one value
    cdr = sample.meta.get("expert_cdr_mean", sample.meta.get("expert_cdr"))
    if isinstance(cdr, (list, tuple)):
        cdr = float(np.mean([float(c) for c in cdr])) if cdr else None
    row["expert_cdr"] = "" if cdr is None else float(cdr)
    return row


def evaluate_dataset(
    model: nn.Module,
    dataset: Any,
    cfg: ModelConfig,
    device: torch.device,
    *,
    batch_size: int = 4,
    threshold: float = 0.5,
    ellipse: bool = False,
    progress: bool = True,
    desc: str = "evaluate",
    on_case: Callable[[Sample, Segmentation, dict[str, Any]], None] | None = None,
) -> EvalResult:
    """Predict and score every item of ``dataset``; ``on_case(sample, seg, row)`` is called per
    image (evaluation writes its BMPs and overlays there). See :class:`EvalResult`."""
    result = EvalResult()
    for sample, seg in predict_dataset(
        model, dataset, cfg, device, batch_size=batch_size, threshold=threshold, ellipse=ellipse,
        progress=progress, desc=desc,
    ):
        row = case_row(sample, seg)
        if not seg.found:
            result.no_disc.append(sample.name)
        result.rows.append(row)
        if on_case is not None:
            on_case(sample, seg, row)
    result.summary = summarize(
        {k: v for k, v in r.items() if k not in ("label", "expert_cdr", "disc_found", "cup_low_confidence", "score")}
        for r in result.rows
    )
    result.skipped = list(getattr(dataset, "bad_names", []))
    if result.no_disc:
        log.warning("%s: no disc detected in %d image(s): %s", desc, len(result.no_disc), ", ".join(result.no_disc[:10]))
    weak = [str(r["name"]) for r in result.rows if r["cup_low_confidence"]]
    if weak:
        log.warning("%s: cup below the threshold, taken at half its peak (low confidence) in %d image(s): %s",
                    desc, len(weak), ", ".join(weak[:10]))
    return result
