"""ONNX Runtime helpers shared by the exporters: sessions, batching, mask agreement, FPS.

Torch-free (numpy, OpenCV, onnxruntime and the project's torch-free ``rfnet.common``):
``quantize.py`` and ``fp16.py`` compare two ONNX models with these, ``export_onnx.py``
compares ONNX Runtime with PyTorch.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rfnet.common.postprocess import Segmentation, postprocess
from rfnet.common.preprocess import Letterbox, preprocess_batch
from rfnet.config import InputConfig

log = logging.getLogger(__name__)

OUTPUT_NAMES: tuple[str, ...] = ("boxes", "scores", "masks")
INPUT_NAME = "image"


def make_session(path: str | os.PathLike[str] | bytes, threads: int = 0) -> "onnxruntime.InferenceSession":  # noqa: F821
    """CPU ONNX Runtime session for ``path`` (or serialized model bytes) with all graph optimisations.

    ``threads`` sets ``intra_op_num_threads`` (0 = ONNX Runtime's default: all cores).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # keep ORT's own warnings (e.g. unused initializers) out of the report
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def session_batch(session: "onnxruntime.InferenceSession") -> int | None:  # noqa: F821
    """Static batch size of the session's first input, or None when it is dynamic."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def run_batched(session: "onnxruntime.InferenceSession", batch: np.ndarray) -> dict[str, np.ndarray]:  # noqa: F821
    """Run ``batch`` float32 [N,3,S,S] through ``session`` whatever its batch size.

    A static-batch model of batch B gets chunks of B images (the last chunk padded with
    copies of its last image, padded results dropped). Returns ``{name: [N,...]}``.
    """
    name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]
    b = session_batch(session) or batch.shape[0]
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in out_names}
    for start in range(0, batch.shape[0], b):
        part = batch[start : start + b]
        real = part.shape[0]
        if real < b:
            part = np.concatenate([part, np.repeat(part[-1:], b - real, axis=0)], axis=0)
        for n, value in zip(out_names, session.run(out_names, {name: np.ascontiguousarray(part)})):
            chunks[n].append(np.asarray(value)[:real])
    return {n: np.concatenate(v, axis=0) for n, v in chunks.items()}


def agreement_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty (they agree perfectly)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * float(np.logical_and(a, b).sum()) / total


def segment_all(outputs: dict[str, np.ndarray], lbs: Sequence[Letterbox], threshold: float = 0.5) -> list[Segmentation]:
    """Post-process every image of a batch of model outputs (runtime's own post-processing)."""
    return [
        postprocess(outputs["boxes"][i], outputs["scores"][i], outputs["masks"][i], lb, threshold)
        for i, lb in enumerate(lbs)
    ]


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
        disc=[agreement_dice(x.disc, y.disc) for x, y in zip(a, b)],
        cup=[agreement_dice(x.cup, y.cup) for x, y in zip(a, b)],
    )


def binary_mask_dice(masks_a: np.ndarray, masks_b: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Dice of the raw mask outputs binarised at ``threshold``, over the non-padded slots.

    Args:
        masks_a, masks_b: [B,K,2,S,S] probabilities from two backends.
        scores: [B,K] scores of the reference backend; slots with score 0 are padding.
    """
    valid = np.asarray(scores) > 0
    if not valid.any():
        valid = np.ones_like(valid, dtype=bool)
    return agreement_dice(masks_a[valid] > threshold, masks_b[valid] > threshold)


def max_abs_diffs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute difference per output name present in both (NaN-aware: NaN -> inf)."""
    diffs = {}
    for name in OUTPUT_NAMES:
        if name in a and name in b:
            d = np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))
            diffs[name] = float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0
    return diffs


def measure_fps(
    session: "onnxruntime.InferenceSession", batch: np.ndarray, iters: int = 20, warmup: int = 3  # noqa: F821
) -> float:
    """Model throughput in images per second (ONNX Runtime ``run`` only, no pre/post-processing)."""
    b = session_batch(session) or batch.shape[0]
    feed = np.ascontiguousarray(np.resize(batch, (b,) + batch.shape[1:]).astype(np.float32))
    name = session.get_inputs()[0].name
    for _ in range(warmup):
        session.run(None, {name: feed})
    start = time.perf_counter()
    for _ in range(iters):
        session.run(None, {name: feed})
    elapsed = time.perf_counter() - start
    return iters * b / elapsed


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


def folder_images(folder: str | os.PathLike[str], num: int | None = None) -> list[EvalImage]:
    """Images of ``folder`` (or of ``folder/images`` when that exists), sorted, at most ``num``.

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


def preprocess_items(items: Sequence[EvalImage], input_cfg: InputConfig) -> tuple[np.ndarray, list[Letterbox]]:
    """Runtime preprocessing of every item: (float32 [N,3,S,S], letterboxes)."""
    return preprocess_batch([it.image for it in items], input_cfg)


def align_to_reference(
    ref: dict[str, np.ndarray], other: dict[str, np.ndarray], score_tol: float = 1e-4
) -> tuple[dict[str, np.ndarray], int]:
    """Reorder ``other``'s K detection slots per image to match ``ref`` where scores tie.

    Outputs are sorted by score; two detections whose scores differ by less than float
    noise (an untrained or weakly trained model has many) may come out in either order
    from two backends. Each ``ref`` slot is paired with the unused ``other`` slot whose
    score is within ``score_tol`` and whose box is closest (the same slot on ties). Slots
    without a partner keep their position, so a real difference still shows in the diffs.

    Args:
        ref, other: ``{"boxes" [B,K,4], "scores" [B,K], "masks" [B,K,2,S,S]}``.
    Returns:
        (reordered copy of ``other``, number of slots that moved).
    """
    rs, os_ = np.asarray(ref["scores"]), np.asarray(other["scores"])
    rb, ob = np.asarray(ref["boxes"]), np.asarray(other["boxes"])
    out = {k: np.array(v, copy=True) for k, v in other.items()}
    moved = 0
    for b in range(rs.shape[0]):
        k = rs.shape[1]
        used: set[int] = set()
        perm: list[int] = []
        for i in range(k):
            cands = [j for j in range(k) if j not in used and abs(float(rs[b, i]) - float(os_[b, j])) <= score_tol]
            if cands:
                j = min(cands, key=lambda j: (float(np.abs(rb[b, i] - ob[b, j]).max()), abs(j - i)))
            else:
                j = i if i not in used else min(set(range(k)) - used)
            used.add(j)
            perm.append(j)
        moved += sum(1 for i, j in enumerate(perm) if i != j)
        for name in out:
            if out[name].ndim >= 2 and out[name].shape[1] == k:
                out[name][b] = np.asarray(other[name])[b][perm]
    return out, moved
