"""Predict a whole dataset with an RF-Net model and score it: shared by training and evaluation.

The path is exactly the deployment one: the model goes behind
:class:`rfnet.torch_backend.TorchBackend` and through the same image -> segmentation core as
ONNX Runtime and TensorRT (:class:`rfnet.common.segment.Segmenter`: letterbox + normalise ->
eval forward -> output check -> paste into the original pixels, threshold, clean), then
:func:`rfnet.common.metrics.case_metrics` against the original-size ground truth. Training's
per-epoch validation and ``rfnet.evaluate`` both call :func:`evaluate_dataset`, so the
numbers they print are the same numbers.

Each image also gets the core's gradability verdict (``gradable``, ``reason``): the CDR
columns of an image that is not gradable are empty (None), and the CDR statistics of
:class:`EvalResult` use gradable images only, while Dice and IoU use every image (and are
also given over gradable images alone).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rfnet.common.gradability import MEASURES
from rfnet.common.metrics import case_metrics, summarize
from rfnet.common.postprocess import Segmentation
from rfnet.common.progress import track
from rfnet.common.segment import SegmentedImage, Segmenter
from rfnet.config import ModelConfig
from rfnet.data.sample import Sample
from rfnet.torch_backend import TorchBackend

log = logging.getLogger(__name__)

#: Columns of the per-image table, in order (``rfnet.evaluate`` writes them to CSV).
CASE_COLUMNS: tuple[str, ...] = (
    "name",
    "dataset",
    "dice_disc",
    "dice_cup",
    "iou_disc",
    "iou_cup",
    "miou",
    "vcdr_pred",
    "vcdr_gt",
    "vcdr_ae",
    "vcdr_ae_all",
    "vcdr_extent_pred",
    "vcdr_extent_gt",
    "vcdr_extent_ae",
    "hcdr_pred",
    "hcdr_gt",
    "area_cdr_pred",
    "area_cdr_gt",
    "vcdr_expert_pred",
    "score",
    "disc_found",
    "cup_low_confidence",
    "gradable",
    "reason",
    "refer",
    "label",
    "expert_cdr",
    # what the gradability checks measured (rfnet.common.gradability.MEASURES and the image's
    # colour and field): the limits are calibrated on these (rfnet.grading_calibration --limits)
    "disc_fraction",
    "disc_field_ratio",
    "disc_contrast",
    "disc_uncertainty",
    "cup_uncertainty",
    "saturation",
    "field_edge",
)
#: Predicted-CDR columns: empty (None) for an image that is not gradable.
CDR_PRED_COLUMNS: tuple[str, ...] = tuple(
    f"{name}_{part}" for name in ("vcdr", "vcdr_extent", "hcdr", "area_cdr") for part in ("pred", "ae"))
#: Per-image values that are not metrics (left out of the statistics).
_NOT_METRICS = ("vcdr_ae_all", "label", "expert_cdr", "disc_found", "cup_low_confidence", "score", "gradable", "dataset", "refer",
                "disc_fraction", "disc_field_ratio", "disc_contrast", "disc_uncertainty", "cup_uncertainty", "saturation",
                "field_edge")


@dataclass
class EvalResult:
    """Per-image rows, their mean / std, and what could not be evaluated.

    Attributes:
        rows: one dict per evaluated image (keys :data:`CASE_COLUMNS`; the
            :data:`CDR_PRED_COLUMNS` are None when the image is not gradable).
        summary: ``{metric: (mean, std)}`` over ``rows`` (NaN and None left out): Dice and IoU
            over every image, CDR errors over the gradable ones (the only ones with a CDR).
        gradable_summary: the same over gradable images only.
        skipped: names of items that could not be loaded (unreadable / truncated / missing
            file, empty disc, ...); the dataset's ``problems`` say why.
        no_disc: names of images where the model found no disc (their Dice is 0).
        reasons: ``{reason: count}`` of the images that are not gradable.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, tuple[float, float]] = field(default_factory=dict)
    gradable_summary: dict[str, tuple[float, float]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    no_disc: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    def mean(self, key: str) -> float:
        return self.summary.get(key, (math.nan, math.nan))[0]

    @property
    def n_gradable(self) -> int:
        return sum(1 for r in self.rows if r["gradable"])

    @property
    def gradable_rate(self) -> float:
        """Share of the evaluated images that are gradable (NaN when none was evaluated)."""
        return self.n_gradable / len(self.rows) if self.rows else math.nan

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
    min_score: float | None = None,
    tta: bool = False,
) -> Iterator[tuple[Sample, SegmentedImage]]:
    """Yield ``(sample, result)`` for every loadable item of ``dataset`` in order: the core's
    :class:`~rfnet.common.segment.SegmentedImage` (segmentation, verdict, CDRs when gradable).

    ``min_score`` overrides the model's minimum disc score (``cfg.grading.min_disc_score``);
    ``tta`` also runs the mirrored images (:mod:`rfnet.common.tta`).

    ``dataset`` needs ``len``, ``get(i) -> Sample | None`` (``None``: a bad item the dataset
    recorded; it raises instead when strict) and ``bad_names``: any :class:`rfnet.data.base.FundusDataset`.
    Bad items are skipped (``dataset.get`` returns ``None`` and records why) or raise when
    the dataset is strict. Puts the model in eval mode; restoring train mode is the caller's job.
    """
    model.eval()
    pending: list[Sample] = []
    with TorchBackend.from_model(model, cfg, device) as backend:
        core = Segmenter(backend, batch_size=max(1, batch_size), threshold=threshold, ellipse=ellipse,
                         min_score=min_score, tta=tta)

        def flush() -> Iterator[tuple[Sample, SegmentedImage]]:
            yield from zip(pending, core.process_batch([s.image for s in pending]))
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


def case_row(sample: Sample, result: SegmentedImage) -> dict[str, Any]:
    """Per-image metrics (:func:`rfnet.common.metrics.case_metrics`) plus detection score,
    verdict, glaucoma label and expert CDR when the dataset knows them; the predicted CDRs and
    their errors are None when the image is not gradable."""
    seg = result.segmentation
    row: dict[str, Any] = {"name": sample.name, "dataset": sample.meta.get("dataset", "")}
    row.update(case_metrics(seg.disc, seg.cup, sample.disc, sample.cup))
    # the vCDR error whatever the verdict: what calibrating the verdict needs (is a refused image one
    # the model segments well?); an error against the ground truth, not a CDR to report
    row["vcdr_ae_all"] = row.get("vcdr_ae")
    if not result.gradable:
        row.update(dict.fromkeys(CDR_PRED_COLUMNS))
    # the vertical CDR on the experts' scale, for models with rfnet.vcdr_expert_scale (None otherwise)
    row["vcdr_expert_pred"] = None if result.cdr is None else result.cdr.get("vcdr_expert")
    row["score"] = float(seg.score)
    row["disc_found"] = int(seg.found)
    row["cup_low_confidence"] = int(seg.cup_fallback)
    row["gradable"] = int(result.gradable)
    row["reason"] = result.grade.reason
    row["refer"] = "" if result.cdr is None or "refer" not in result.cdr else int(result.cdr["refer"])
    for key in MEASURES:
        value = result.grade.measures.get(key)
        row[key] = "" if value is None or math.isnan(value) else float(value)
    row["saturation"] = float(result.quality.saturation)
    row["field_edge"] = int(result.quality.field_edge)
    label = sample.meta.get("label")
    row["label"] = "" if label is None else int(label)
    # Drishti-GS: the experts' CDRs and their mean (``expert_cdr_mean``); other loaders may give one value
    cdr = sample.meta.get("expert_cdr_mean", sample.meta.get("expert_cdr"))
    if isinstance(cdr, (list, tuple)):
        cdr = float(np.mean([float(c) for c in cdr])) if cdr else None
    row["expert_cdr"] = "" if cdr is None else float(cdr)
    return row


def _metrics(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """:func:`summarize` of the metric columns; the CDR columns are present (NaN) even when no
    image had a CDR, so a report shows them as missing rather than dropping them."""
    out = summarize({k: v for k, v in r.items() if k not in _NOT_METRICS} for r in rows)
    return {**{k: (math.nan, math.nan) for k in CDR_PRED_COLUMNS if rows}, **out}


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
    min_score: float | None = None,
    tta: bool = False,
) -> EvalResult:
    """Predict and score every item of ``dataset``; ``on_case(sample, seg, row)`` is called per
    image (evaluation writes its BMPs and overlays there; ``row["gradable"]`` is the verdict).
    ``min_score`` overrides the model's minimum disc score; ``tta`` adds the mirrored view.
    See :class:`EvalResult`."""
    result = EvalResult()
    for sample, done in predict_dataset(
        model, dataset, cfg, device, batch_size=batch_size, threshold=threshold, ellipse=ellipse,
        progress=progress, desc=desc, min_score=min_score, tta=tta,
    ):
        row = case_row(sample, done)
        if not done.segmentation.found:
            result.no_disc.append(sample.name)
        result.rows.append(row)
        if on_case is not None:
            on_case(sample, done.segmentation, row)
    result.summary = _metrics(result.rows)
    result.gradable_summary = _metrics([r for r in result.rows if r["gradable"]])
    result.reasons = dict(Counter(str(r["reason"]) for r in result.rows if not r["gradable"]))
    result.skipped = list(getattr(dataset, "bad_names", []))
    if result.no_disc:
        log.warning("%s: no disc detected in %d image(s): %s", desc, len(result.no_disc), ", ".join(result.no_disc[:10]))
    weak = [str(r["name"]) for r in result.rows if r["cup_low_confidence"]]
    if weak:
        log.warning("%s: cup below the threshold, taken at half its peak (low confidence) in %d image(s): %s",
                    desc, len(weak), ", ".join(weak[:10]))
    if result.reasons:
        log.info("%s: %d of %d image(s) not gradable (%s); their CDRs are left out", desc,
                 len(result.rows) - result.n_gradable, len(result.rows),
                 ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items())))
    return result
