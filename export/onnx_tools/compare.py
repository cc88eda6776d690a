"""Comparing models on images: the exporters' accuracy checks (torch-free apart from the caller).

``export_onnx.py`` compares ONNX Runtime with PyTorch, ``fp16.py`` and ``int8_eval.py`` an FP16 or
INT8 ONNX with its FP32 original. Every model runs through the runtime's own code: the ONNX
Runtime backend (:func:`cpu_backend`) and the shared image -> segmentation core
(:class:`rfnet.common.segment.Segmenter`: batching, output check, post-processing), so a check
here passes or fails for the same reasons the deployed model would.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import numpy as np

from rfnet.common.backend import Backend
from rfnet.common.contract import OUTPUT_NAMES
from rfnet.common.metrics import agreement
from rfnet.common.postprocess import Segmentation
from rfnet.common.segment import Segmenter
from rfnet.runtime.backends.onnxrt import CPU_PROVIDER, OnnxRuntimeBackend

log = logging.getLogger(__name__)


def cpu_backend(path: str | os.PathLike[str], threads: int = 0) -> OnnxRuntimeBackend:
    """The runtime's ONNX Runtime backend on the CPU for ``path`` (not loaded yet; use ``with``).

    ``threads`` sets the intra-op threads (0 = ONNX Runtime's default: all cores).
    """
    return OnnxRuntimeBackend(Path(path), providers=[CPU_PROVIDER], intra_op_threads=threads or None)


def whole_batch(backend: Backend, n: int) -> int:
    """Batch size that runs ``n`` images in as few calls as the model allows (its fixed batch, else ``n``)."""
    fixed = backend.input_spec().shape[0]
    return fixed if fixed > 0 else max(1, n)


@dataclass
class ModelRun:
    """One model on a list of images: raw outputs [N,...] and the post-processed masks."""

    outputs: dict[str, np.ndarray]
    segmentations: list[Segmentation]
    fps: float | None = None  # model-only images per second, when measured


def run_onnx(path: str | os.PathLike[str], images: Sequence[np.ndarray], *, threads: int = 0,
             fps_iters: int = 0) -> ModelRun:
    """Run RGB ``images`` through the ONNX model ``path`` on the CPU (ONNX Runtime backend + the core).

    With ``fps_iters`` > 0, also times the model alone (:func:`model_fps`) on the first image.
    """
    with cpu_backend(path, threads) as backend:
        core = Segmenter(backend, batch_size=whole_batch(backend, len(images)))
        tensors, lbs = zip(*(core.preprocess(im) for im in images))
        outputs = core.infer(np.stack(tensors))
        segs = [core.finish(outputs, i, lb, core.measure(im)).segmentation for i, (lb, im) in enumerate(zip(lbs, images))]
        fps = model_fps(backend, tensors[0], iters=fps_iters) if fps_iters > 0 else None
    return ModelRun(outputs, segs, fps)


def model_fps(backend: Backend, tensor: np.ndarray, iters: int = 20, warmup: int = 3) -> float:
    """Model throughput in images per second: backend calls on copies of one preprocessed image
    (float32 [3,S,S]) at the model's fixed batch, else batch 1; no pre/post-processing."""
    core = Segmenter(backend, batch_size=whole_batch(backend, 1))
    batch = np.repeat(tensor[None], core.batch_size, axis=0)
    for _ in range(warmup):
        core.infer(batch)
    start = time.perf_counter()
    for _ in range(iters):
        core.infer(batch)
    return iters * core.batch_size / (time.perf_counter() - start)


@dataclass
class MaskAgreement:
    """Per-image Dice of disc and cup between two backends' post-processed masks."""

    disc: list[float]
    cup: list[float]

    @property
    def disc_mean(self) -> float:
        return float(np.mean(self.disc)) if self.disc else float("nan")

    @property
    def cup_mean(self) -> float:
        return float(np.mean(self.cup)) if self.cup else float("nan")


def mask_agreement(a: Sequence[Segmentation], b: Sequence[Segmentation]) -> MaskAgreement:
    """Disc / cup Dice of the segmentations ``a`` vs ``b`` (same images, same order)."""
    return MaskAgreement(
        disc=[agreement(x.disc, y.disc) for x, y in zip(a, b)],
        cup=[agreement(x.cup, y.cup) for x, y in zip(a, b)],
    )


def max_abs_diffs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute difference per output name present in both (NaN-aware: NaN -> inf)."""
    diffs = {}
    for name in OUTPUT_NAMES:
        if name in a and name in b:
            d = np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))
            diffs[name] = float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0
    return diffs


@dataclass
class EvalImage:
    """One evaluation image, with ground truth when known (bool [H,W] masks)."""

    name: str
    image: np.ndarray
    disc: np.ndarray | None = None
    cup: np.ndarray | None = None


def synthetic_images(num: int, seed: int = 0, size: int = 512) -> list[EvalImage]:
    """``num`` generated fundus images (``rfnet.data.synthetic``) with their ground truth."""
    from rfnet.data.synthetic import generate_sample

    rng = np.random.default_rng(seed)
    out = []
    for i in range(num):
        image, disc, cup = generate_sample(rng, size)
        out.append(EvalImage(f"synthetic_{i:03d}", image, np.asarray(disc, bool), np.asarray(cup, bool)))
    return out


def folder_images(folder: str | os.PathLike[str], num: int | None = None,
                  names: Collection[str] | None = None) -> list[EvalImage]:
    """Images of ``folder`` (or of ``folder/images`` when that exists), sorted, at most ``num``;
    with ``names``, only the images with those stems.

    Ground truth is attached when ``folder/masks/<stem>.png`` holds a REFUGE-style map
    (0 cup, 128 rim, 255 background), the layout ``rfnet.data.synthetic``'s CLI writes.
    """
    from rfnet.common.imageio import list_images, read_image, read_mask
    from rfnet.common.metrics import from_refuge_seg

    root = Path(folder)
    img_dir = root / "images" if (root / "images").is_dir() else root
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{root}: no such image folder")
    paths = list_images(img_dir)
    if not paths:
        raise FileNotFoundError(f"{img_dir}: no images found")
    if names is not None:
        paths = [p for p in paths if p.stem in names]
    paths = paths[:num] if num else paths
    mask_dir = root / "masks"
    out = []
    for p in paths:
        item = EvalImage(p.stem, read_image(p))
        mask_path = next((m for m in sorted(mask_dir.glob(p.stem + ".*"))), None) if mask_dir.is_dir() else None
        if mask_path is not None:
            item.disc, item.cup = from_refuge_seg(read_mask(mask_path))
        out.append(item)
    return out
