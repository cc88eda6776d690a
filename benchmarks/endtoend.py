"""The end-to-end pass: decode -> preprocess -> model -> postprocess -> CDR, one image at a time,
timed per stage, with Dice against the ground truth and mask agreement with the reference.

It runs the deployment code itself: ``Segmenter.read`` (timed here), then the
shared core (:class:`rfnet.common.segment.Segmenter`, which times the other stages) with batch
1, sequentially, so the latency of each image is the time a user waits for its CDR. Dice is
computed after the clock stops.

Dice and IoU are taken over every image; the vCDR error over the images the core finds
gradable (``rfnet.common.gradability``: the others have no CDR), whose count and reasons the
accuracy report gives.

Ground-truth and reference masks are kept bit-packed (1 bit per pixel), so a few hundred
full-size fundus images fit in memory.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rfnet.benchmarks.measure import PAPER_FPS, fps_from_ms, latency_stats, speedup
from rfnet.common.backend import Backend, BackendError, BackendUnavailableError
from rfnet.common.contract import ModelMetadata
from rfnet.common.metrics import agreement, case_metrics, summarize
from rfnet.common.progress import track
from rfnet.common.segment import STAGES as CORE_STAGES
from rfnet.common.segment import SegmentedImage, Segmenter
from rfnet.runtime.pipeline import ImageResult, Pipeline

log = logging.getLogger(__name__)

STAGES = ("decode", *CORE_STAGES)
#: Failures listed one by one in the report (the count is always complete).
MAX_LISTED_FAILURES = 20


@dataclass(frozen=True)
class PackedMasks:
    """Disc and cup bool [H,W] masks stored with ``np.packbits``."""

    shape: tuple[int, int]
    disc: np.ndarray
    cup: np.ndarray

    @classmethod
    def pack(cls, disc: np.ndarray, cup: np.ndarray) -> "PackedMasks":
        d, c = np.asarray(disc, bool), np.asarray(cup, bool)
        if d.shape != c.shape or d.ndim != 2:
            raise ValueError(f"disc {d.shape} and cup {c.shape} must be equal 2-D shapes")
        return cls((int(d.shape[0]), int(d.shape[1])), np.packbits(d.ravel()), np.packbits(c.ravel()))

    def unpack(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.shape[0] * self.shape[1]
        f = lambda p: np.unpackbits(p, count=n).reshape(self.shape).astype(bool)  # noqa: E731
        return f(self.disc), f(self.cup)


@dataclass(frozen=True)
class GTImage:
    """One evaluation image: its name, file and ground-truth masks."""

    name: str
    path: Path
    gt: PackedMasks


def load_ground_truth(dataset: str, root: str | Path, split: str | None, limit: int | None,
                      *, progress: bool = True, fold: int | None = None, folds: int = 5,
                      seed: int = 0) -> tuple[list[GTImage], list[str]]:
    """Read the evaluation set once: ``(images, problems)``; with ``fold``, only that fold's
    held-out images of a ``folds``-fold split by name (``rfnet.data.splits.kfold_split``, ``seed``),
    the split ``rfnet.train --fold`` trains around.

    Bad items are skipped and described in ``problems`` (the dataset loader names the file).

    Raises:
        ValueError (``DatasetLayoutError``): unknown dataset or a root without its layout.
    """
    from rfnet.data import held_out_fold, load_dataset

    ds = load_dataset(dataset, root, split=split)
    if fold is not None:
        ds = held_out_fold(ds, fold, folds, seed)
    n = len(ds) if limit is None else min(limit, len(ds))
    out: list[GTImage] = []
    for i in track(range(n), desc="ground truth", unit="img", enabled=progress):
        sample = ds.get(i)
        if sample is None:
            continue
        out.append(GTImage(str(sample.meta["name"]), Path(sample.meta["path"]), PackedMasks.pack(sample.disc, sample.cup)))
    return out, [str(p) for p in ds.problems]


def _one_image(core: Segmenter, path: Path) -> tuple[SegmentedImage, dict[str, float]]:
    """Run one image through the whole path; ``(result, milliseconds per stage of STAGES)``."""
    t0 = time.perf_counter()
    photo = core.read(path)  # as the runtime reads it: a large JPEG at reduced size
    decode_ms = (time.perf_counter() - t0) * 1e3
    (done,) = core.process_batch([photo])
    return done, {"decode": decode_ms, **done.timings}


def end_to_end(
    backend: Backend,
    info: ModelMetadata,
    images: Sequence[GTImage],
    *,
    threshold: float = 0.5,
    warmup: int = 0,
    reference: dict[str, PackedMasks] | None = None,
    keep_masks: bool = False,
    label: str = "",
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, PackedMasks]]:
    """One timed pass over ``images`` (after ``warmup`` untimed images).

    Returns:
        ``(timing, accuracy, masks)``: timing = latency stats per image end to end and per
        stage, FPS, speed-up against the paper, failures; accuracy = mean Dice disc / cup
        against the ground truth (and std, IoU, vCDR MAE) and, with ``reference``, mean
        agreement Dice against the reference's masks; masks = the packed predictions by
        image name when ``keep_masks``.
    Raises:
        BackendUnavailableError: the path turned out unavailable on its first call (e.g. a
        CUDA graph that cannot be captured): the caller reports it as not run.
    """
    core = Segmenter(backend, info, batch_size=1, threshold=threshold)
    n_warm = max(0, min(warmup, len(images)))
    for item in list(images)[:n_warm]:
        try:
            _one_image(core, item.path)
        except BackendUnavailableError:
            raise
        except Exception as exc:  # reported by the timed pass below
            log.debug("warm-up on %s failed: %s", item.path, exc)
    tally = _Tally(reference, keep_masks)
    for item in track(images, desc=f"end-to-end {label}", unit="img", enabled=progress):
        try:
            done, ms = _one_image(core, item.path)
        except BackendUnavailableError:
            raise
        except (BackendError, ValueError, RuntimeError, OSError) as exc:
            tally.failures.append({"image": str(item.path), "error": f"{type(exc).__name__}: {exc}"})
            continue
        tally.add(item, done, ms)
    accuracy = summarize_accuracy(tally.rows, tally.agree, len(images))
    accuracy["gradable"] = {"images": len(tally.rows) - sum(tally.reasons.values()),
                            "reasons": dict(sorted(tally.reasons.items()))}
    return tally.timing(n_warm), accuracy, tally.kept


@dataclass
class _Tally:
    """What :func:`end_to_end` collects per image: stage times, metrics, agreement, failures."""

    reference: dict[str, PackedMasks] | None
    keep_masks: bool
    totals: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    rows: list[dict[str, float]] = field(default_factory=list)
    agree: list[dict[str, float]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    kept: dict[str, PackedMasks] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # not gradable: count per reason

    def add(self, item: GTImage, done: SegmentedImage, ms: dict[str, float]) -> None:
        seg = done.segmentation
        self.totals.append(sum(ms.values()))
        for s in STAGES:
            self.stages[s].append(ms[s])
        gt_disc, gt_cup = item.gt.unpack()
        if seg.disc.shape != gt_disc.shape:
            self.failures.append({"image": str(item.path),
                                  "error": f"mask shape {seg.disc.shape} != ground truth {gt_disc.shape}"})
            return
        row = case_metrics(seg.disc, seg.cup, gt_disc, gt_cup)
        if not done.gradable:  # no CDR for it: its CDR errors stay out of the means
            row = {k: v for k, v in row.items() if not k.endswith(("_pred", "_ae"))}
            self.reasons[done.grade.reason] = self.reasons.get(done.grade.reason, 0) + 1
        self.rows.append(row)
        if self.reference is not None and item.name in self.reference:
            ref_disc, ref_cup = self.reference[item.name].unpack()
            self.agree.append({"disc": agreement(seg.disc, ref_disc), "cup": agreement(seg.cup, ref_cup)})
        if self.keep_masks:
            self.kept[item.name] = PackedMasks.pack(seg.disc, seg.cup)

    def timing(self, warmup_images: int) -> dict[str, Any]:
        mean_ms = latency_stats(self.totals)["mean"]
        fps = fps_from_ms(mean_ms if mean_ms is None else float(mean_ms))
        return {
            "images": len(self.totals),
            "warmup_images": warmup_images,
            "latency_ms": latency_stats(self.totals),
            "stages_ms": {s: latency_stats(v) for s, v in self.stages.items()},
            "fps": fps,
            "speedup_vs_paper": speedup(fps),
            "paper_fps": PAPER_FPS,
            "failed_images": len(self.failures),
            "failures": self.failures[:MAX_LISTED_FAILURES],
        }


def _finite(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def summarize_accuracy(rows: list[dict[str, float]], agree: list[dict[str, float]], total: int) -> dict[str, Any]:
    """Mean / std of the per-image metrics (NaN-free values only; None when there are none)."""
    s = summarize(rows) if rows else {}
    get = lambda k, i: _finite(s[k][i]) if k in s else None  # noqa: E731
    out: dict[str, Any] = {
        "images_scored": len(rows),
        "images_total": total,
        "dice_disc": get("dice_disc", 0),
        "dice_disc_std": get("dice_disc", 1),
        "dice_cup": get("dice_cup", 0),
        "dice_cup_std": get("dice_cup", 1),
        "miou": get("miou", 0),
        "vcdr_mae": get("vcdr_ae", 0),
    }
    if agree:
        a = summarize(agree)
        out["agreement_vs_reference"] = {"disc": _finite(a["disc"][0]), "cup": _finite(a["cup"][0]),
                                         "disc_min": min(r["disc"] for r in agree),
                                         "cup_min": min(r["cup"] for r in agree), "images": len(agree)}
    return out


def pipeline_throughput(backend: Backend, info: ModelMetadata, images: Sequence[GTImage], batch: int,
                        *, threshold: float = 0.5, outputs: Path | None = None,
                        writer_threads: int = 2, workers: int = 1) -> dict[str, Any]:
    """End-to-end throughput as deployed: ``rfnet.runtime.pipeline.Pipeline`` (decoding in a
    background thread overlapping inference, ``batch`` images per call) over all images once;
    with ``outputs`` (a folder), the runtime's default files are written there too, as
    ``runtime/infer.py`` writes them (``rfnet.runtime.writer.BackgroundWriter``: REFUGE map, JPEG
    overlay, then results.csv) by ``writer_threads`` threads; ``workers`` inferences run at once
    (:class:`~rfnet.runtime.pipeline.Pipeline`'s ``workers``; ``backend`` set up for it).

    Returns ``{"status", "batch_size", "images", "failed_images", "wall_s", "throughput_fps",
    "speedup_vs_paper", "outputs"}``; FPS = processed images / wall time, start to the last CDR
    (with outputs: to the last file and results.csv written).
    """
    from rfnet.runtime.outputs import DEFAULT_SAVE, OutputWriter, output_names
    from rfnet.runtime.writer import BackgroundWriter

    pipe = Pipeline(backend, info, batch_size=batch, threshold=threshold, workers=workers)
    paths = [im.path for im in images]
    names = output_names(paths)
    t0 = time.perf_counter()
    writer = (BackgroundWriter(OutputWriter(outputs, DEFAULT_SAVE), threads=writer_threads)
              if outputs is not None else None)
    ok = failed = 0
    for outcome in pipe.run(paths):
        if isinstance(outcome, ImageResult):  # the pipeline computed its CDRs already
            ok += 1
            if writer is not None:
                writer.submit(names[outcome.index], outcome)
        else:
            failed += 1
    if writer is not None:
        unwritten = writer.close()
        writer.writer.write_csv()
        ok, failed = ok - len(unwritten), failed + len(unwritten)
    wall = time.perf_counter() - t0
    fps = ok / wall if wall > 0 and ok else None
    return {"status": "ok", "batch_size": pipe.batch_size, "workers": workers, "images": ok, "failed_images": failed,
            "wall_s": wall, "throughput_fps": fps, "speedup_vs_paper": speedup(fps),
            "outputs": ",".join(DEFAULT_SAVE) if outputs is not None else "none"}
