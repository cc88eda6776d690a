"""Image files -> model -> disc / cup masks and CDRs, for any backend (torch-free).

decode (OpenCV, background thread) -> shared preprocessing (``rfnet.common.preprocess``)
-> batch -> backend -> shared post-processing (``rfnet.common.postprocess``) -> CDRs
(``rfnet.common.metrics.cdr_report``).

Decoding and preprocessing run in a producer thread feeding a bounded queue, so reading
the next images from disk overlaps inference on the current batch (OpenCV and the
backends release the GIL). A file that cannot be read becomes an :class:`ImageFailure`
and the run goes on.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from rfnet.common.imageio import ImageReadError, read_image
from rfnet.common.metrics import cdr_report
from rfnet.common.postprocess import Segmentation, postprocess
from rfnet.common.preprocess import Letterbox, preprocess
from rfnet.config import CLASS_NAMES, InputConfig
from runtime.backends.base import Backend, BackendError, ModelLoadError, TensorSpec

log = logging.getLogger(__name__)

#: Output tensor names of every RF-Net export (docs/design.md, "Model outputs").
OUTPUT_NAMES = ("boxes", "scores", "masks")


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about a model besides its tensors."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mask_size: int | None = None
    top_k: int | None = None
    class_names: tuple[str, ...] = CLASS_NAMES
    preset: str | None = None
    precision: str | None = None

    @property
    def input_config(self) -> InputConfig:
        return InputConfig(size=self.input_size, mean=self.mean, std=self.std)

    @classmethod
    def from_onnx_metadata(cls, meta: Mapping[str, str], source: str | Path) -> "ModelInfo":
        """Parse the ``rfnet.*`` strings of an ONNX file's ``metadata_props``."""

        def get(key: str, required: bool = True) -> Any:
            if key not in meta:
                if required:
                    raise ModelLoadError(
                        f"{source}: ONNX metadata lacks {key!r}; this is not an RF-Net export "
                        f"(export the model with export/export_onnx.py, which records the preprocessing)"
                    )
                return None
            raw = meta[key]
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                return raw  # plain strings such as rfnet.preset = paper

        return cls._build(
            source,
            input_size=get("rfnet.input_size"),
            mean=get("rfnet.mean"),
            std=get("rfnet.std"),
            mask_size=get("rfnet.mask_size", False),
            top_k=get("rfnet.top_k", False),
            class_names=get("rfnet.class_names", False),
            preset=get("rfnet.preset", False),
            precision=get("rfnet.precision", False),
        )

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], source: str | Path) -> "ModelInfo":
        """Take the preprocessing copied into an engine manifest."""
        return cls._build(
            source,
            input_size=manifest.get("input_size"),
            mean=manifest.get("mean"),
            std=manifest.get("std"),
            mask_size=manifest.get("mask_size"),
            top_k=manifest.get("top_k"),
            class_names=manifest.get("class_names"),
            preset=manifest.get("preset"),
            precision=manifest.get("precision"),
        )

    @classmethod
    def _build(cls, source: str | Path, **kw: Any) -> "ModelInfo":
        try:
            size = int(kw["input_size"])
            mean = tuple(float(v) for v in kw["mean"])
            std = tuple(float(v) for v in kw["std"])
            if size <= 0 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise ValueError("need input_size > 0 and 3 means and 3 positive stds")
            names = tuple(str(c) for c in (kw.get("class_names") or CLASS_NAMES))
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{source}: invalid preprocessing metadata ({exc}): {kw}") from exc
        if names[:2] != CLASS_NAMES:
            raise ModelLoadError(f"{source}: mask channels are {list(names)}, this runtime expects {list(CLASS_NAMES)}")
        opt = lambda v: None if v is None else int(v)  # noqa: E731
        return cls(size, mean, std, opt(kw.get("mask_size")), opt(kw.get("top_k")), names,  # type: ignore[arg-type]
                   kw.get("preset"), kw.get("precision"))

    @classmethod
    def from_backend(cls, backend: Backend) -> "ModelInfo":
        """Engine -> its manifest; ONNX -> its metadata_props. Also checks the I/O contract."""
        meta = backend.metadata
        if "format" in meta and meta.get("format") == "rfnet-engine-manifest":
            info = cls.from_manifest(meta, backend.model_path)
        else:
            info = cls.from_onnx_metadata(meta, backend.model_path)
        check_io_contract(backend, info)
        return info


def check_io_contract(backend: Backend, info: ModelInfo) -> None:
    """One input [B,3,S,S] with S = input_size; outputs boxes, scores, masks (ModelLoadError otherwise)."""
    src = backend.model_path
    spec = backend.input_spec()
    if len(spec.shape) != 4 or spec.shape[1] not in (3, -1):
        raise ModelLoadError(f"{src}: input {spec.name!r} has shape {spec.shape}, expected [B,3,S,S]")
    for axis in (2, 3):
        if spec.shape[axis] >= 0 and spec.shape[axis] != info.input_size:
            raise ModelLoadError(
                f"{src}: input {spec.name!r} is {spec.shape} but the metadata says input_size {info.input_size}"
            )
    names = {t.name for t in backend.outputs}
    missing = [n for n in OUTPUT_NAMES if n not in names]
    if missing:
        raise ModelLoadError(f"{src}: model outputs {sorted(names)} lack {missing} (expected {list(OUTPUT_NAMES)})")


def plan_batch(spec: TensorSpec, requested: int) -> tuple[int, int]:
    """(images per batch, minimum batch actually fed) for a requested batch size.

    A fixed batch dimension forces its size (short batches are zero-padded); a profile
    caps it at the profile maximum and pads short batches up to the profile minimum.
    """
    if requested < 1:
        raise ValueError(f"batch size must be >= 1, got {requested}")
    if spec.shape[0] >= 0:
        fixed = spec.shape[0]
        if requested != fixed:
            log.warning("model has a fixed batch size of %d; using it instead of %d", fixed, requested)
        return fixed, fixed
    hi = spec.max_dim(0)
    lo = spec.min_shape[0] if spec.min_shape is not None else 1
    if hi is not None and requested > hi:
        log.warning("engine profile allows at most %d images per batch; using %d instead of %d", hi, hi, requested)
        requested = hi
    return requested, max(1, lo)


@dataclass
class ImageResult:
    """One successfully processed image."""

    index: int
    path: Path
    image: np.ndarray  # uint8 [H,W,3] RGB, kept for the overlay
    segmentation: Segmentation
    cdr: dict[str, float]
    latency_ms: float  # backend time of its batch divided by the images in it
    timings: dict[str, float] = field(default_factory=dict)  # decode/preprocess/postprocess ms

    @property
    def ok(self) -> bool:
        return True


@dataclass
class ImageFailure:
    """One image that could not be processed, with the reason."""

    index: int
    path: Path
    error: str

    @property
    def ok(self) -> bool:
        return False


Outcome = Union[ImageResult, ImageFailure]


@dataclass
class _Decoded:
    index: int
    path: Path
    image: np.ndarray | None = None
    tensor: np.ndarray | None = None
    lb: Letterbox | None = None
    error: str | None = None
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0


_DONE = object()


class Pipeline:
    """Runs images through a loaded backend.

    Args:
        backend: a loaded :class:`Backend`.
        info: the model's preprocessing (:meth:`ModelInfo.from_backend`).
        batch_size: images per inference call (adjusted to the model, see :func:`plan_batch`).
        threshold: probability threshold of the masks.
        ellipse: fit ellipses to disc and cup.
        prefetch: decoded images buffered ahead of inference.
    """

    def __init__(
        self,
        backend: Backend,
        info: ModelInfo,
        *,
        batch_size: int = 1,
        threshold: float = 0.5,
        ellipse: bool = False,
        prefetch: int = 4,
    ) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.backend = backend
        self.info = info
        self.spec = backend.input_spec()
        self.batch_size, self._min_batch = plan_batch(self.spec, batch_size)
        self.threshold = threshold
        self.ellipse = ellipse
        self.prefetch = max(1, prefetch)

    # -- decode thread ---------------------------------------------------------------------
    def _decode_one(self, index: int, path: Path) -> _Decoded:
        item = _Decoded(index, path)
        t0 = time.perf_counter()
        try:
            item.image = read_image(path)
            t1 = time.perf_counter()
            item.tensor, item.lb = preprocess(item.image, self.info.input_config)
            item.decode_ms, item.preprocess_ms = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
        except ImageReadError as exc:
            item.error = str(exc)
        except Exception as exc:  # e.g. cv2.error or MemoryError on an absurd image: skip, keep going
            item.error = f"{path}: {type(exc).__name__}: {exc}"
        return item

    def _producer(self, paths: Sequence[Path], out: "queue.Queue[Any]", stop: threading.Event) -> None:
        try:
            for i, p in enumerate(paths):
                item = self._decode_one(i, Path(p))
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        finally:
            while True:  # the consumer always gets the end marker unless it stopped
                try:
                    out.put(_DONE, timeout=0.1)
                    return
                except queue.Full:
                    if stop.is_set():
                        return

    # -- main loop -------------------------------------------------------------------------
    def run(self, paths: Sequence[Path]) -> Iterator[Outcome]:
        """Yield one :class:`ImageResult` or :class:`ImageFailure` per path (batch order)."""
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch + self.batch_size)
        stop = threading.Event()
        worker = threading.Thread(target=self._producer, args=(list(paths), q, stop), name="rfnet-decode", daemon=True)
        worker.start()
        batch: list[_Decoded] = []
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    break
                if item.error is not None:
                    yield ImageFailure(item.index, item.path, item.error)
                    continue
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield from self._run_batch(batch)
                    batch = []
            if batch:
                yield from self._run_batch(batch)
        finally:
            stop.set()
            worker.join(timeout=5.0)

    def _run_batch(self, items: list[_Decoded]) -> Iterator[Outcome]:
        n = len(items)
        fed = max(n, self._min_batch)
        s = self.info.input_size
        batch = np.zeros((fed, 3, s, s), dtype=self.spec.dtype)
        for i, it in enumerate(items):
            batch[i] = it.tensor
        t0 = time.perf_counter()
        try:
            out = self.backend.infer({self.spec.name: batch})
            boxes, scores, masks = (np.asarray(out[k], dtype=np.float32) for k in OUTPUT_NAMES)
            _check_outputs(boxes, scores, masks, fed)
        except (BackendError, KeyError, ValueError) as exc:
            for it in items:
                yield ImageFailure(it.index, it.path, f"{it.path}: inference failed: {exc}")
            return
        latency_ms = (time.perf_counter() - t0) * 1e3 / n
        for i, it in enumerate(items):
            assert it.image is not None and it.lb is not None
            t1 = time.perf_counter()
            try:
                seg = postprocess(boxes[i], scores[i], masks[i], it.lb, self.threshold, self.ellipse)
                cdr = cdr_report(seg.disc, seg.cup)
            except Exception as exc:
                yield ImageFailure(it.index, it.path, f"{it.path}: post-processing failed: {type(exc).__name__}: {exc}")
                continue
            timings = {
                "decode_ms": it.decode_ms,
                "preprocess_ms": it.preprocess_ms,
                "postprocess_ms": (time.perf_counter() - t1) * 1e3,
            }
            yield ImageResult(it.index, it.path, it.image, seg, cdr, latency_ms, timings)


def _check_outputs(boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray, batch: int) -> None:
    if boxes.ndim != 3 or boxes.shape[0] != batch or boxes.shape[2] != 4:
        raise ValueError(f"output boxes has shape {boxes.shape}, expected [{batch},K,4]")
    k = boxes.shape[1]
    if scores.shape != (batch, k):
        raise ValueError(f"output scores has shape {scores.shape}, expected [{batch},{k}]")
    if masks.ndim != 5 or masks.shape[:3] != (batch, k, 2):
        raise ValueError(f"output masks has shape {masks.shape}, expected [{batch},{k},2,S,S]")
