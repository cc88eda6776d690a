"""Image files -> model -> disc / cup masks and CDRs, for any backend (torch-free).

decode (OpenCV, background thread) + preprocessing -> the shared synchronous core
(:class:`rfnet.common.segment.Segmenter`: batching, backend, output check, post-processing,
CDRs).

Decoding and preprocessing run in a producer thread feeding a bounded queue, so reading
the next images from disk overlaps inference on the current batch (OpenCV and the
backends release the GIL). A file that cannot be read becomes an :class:`ImageFailure`
and the run goes on.

With ``workers`` > 1 (a backend whose ``concurrent_infer`` allows it: ONNX Runtime on the CPU),
that many batches run at once, each in its own thread (inference, post-processing, CDRs);
results come out in the order one worker gives (batch order: an unreadable file as soon as it
is read). On a CPU, two single-threaded inferences keep two cores busier than one inference
split over both (no intra-op barrier waiting on a core the decode or writer thread holds);
docs/benchmarks.md has the measurement.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union, cast

import numpy as np

from rfnet.common.backend import Backend, BackendError
from rfnet.common.contract import ModelMetadata
from rfnet.common.gradability import Grade, ImageQuality
from rfnet.common.imageio import ImageReadError
from rfnet.common.postprocess import Segmentation
from rfnet.common.preprocess import Letterbox
from rfnet.common.segment import Segmenter
from rfnet.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class ImageResult:
    """One successfully processed image."""

    index: int
    path: Path
    image: np.ndarray  # uint8 [h,w,3] RGB, kept for the overlay: the picture or a reduced copy (Segmenter.read)
    segmentation: Segmentation
    grade: Grade  # the verdict (rfnet.common.gradability): gradable, reason, message
    cdr: dict[str, float] | None  # None when not gradable: no CDR is reported
    latency_ms: float  # backend time of its batch divided by the images in it
    timings: dict[str, float] = field(default_factory=dict)  # ms: decode, preprocess, postprocess, cdr

    @property
    def ok(self) -> bool:
        return True

    @property
    def gradable(self) -> bool:
        return self.grade.gradable


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
    quality: ImageQuality | None = None
    error: str | None = None
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0


_DONE = object()


class Pipeline(Segmenter):
    """Runs image files through a loaded backend: a decode thread in front of the core.

    Args:
        backend: a loaded :class:`Backend`.
        info: the model's metadata (default: read from the backend and checked).
        batch_size: images per inference call (adjusted to the model, see
            :func:`rfnet.common.segment.plan_batch`).
        threshold: probability threshold of the masks.
        ellipse: fit ellipses to disc and cup.
        prefetch: decoded images buffered ahead of inference.
        min_score: minimum disc score of a gradable result (default: the model's ``rfnet.min_disc_score``).
        tta: also run each image mirrored left-right and merge (:mod:`rfnet.common.tta`).
        workers: batches in flight at once, each in its own thread (1: one after the other);
            more than 1 needs a backend with ``concurrent_infer`` (UsageError otherwise).
        full_decode: decode every picture whole (see :class:`~rfnet.common.segment.Segmenter`).
    """

    def __init__(
        self,
        backend: Backend,
        info: ModelMetadata | None = None,
        *,
        batch_size: int = 1,
        threshold: float = 0.5,
        ellipse: bool = False,
        prefetch: int = 4,
        min_score: float | None = None,
        tta: bool = False,
        workers: int = 1,
        full_decode: bool = False,
    ) -> None:
        super().__init__(backend, info, batch_size=batch_size, threshold=threshold, ellipse=ellipse,
                         min_score=min_score, tta=tta, full_decode=full_decode)
        self.prefetch = max(1, prefetch)
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        if workers > 1 and not backend.concurrent_infer:  # TensorRT, ONNX Runtime on a GPU provider
            raise UsageError(f"the {backend.name} backend runs one inference at a time: workers must be 1, "
                             f"got {workers}")
        self.workers = workers

    # -- decode thread ---------------------------------------------------------------------
    def _decode_one(self, index: int, path: Path) -> _Decoded:
        item = _Decoded(index, path)
        t0 = time.perf_counter()
        try:
            photo = self.read(path)
            item.image = photo.pixels
            t1 = time.perf_counter()
            item.tensor, item.lb, item.quality = self.prepare(photo)
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
        """Yield one :class:`ImageResult` or :class:`ImageFailure` per path (batch order: an
        unreadable file comes out when it is read, before the images of its unfinished batch)."""
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch + self.batch_size * self.workers)
        stop = threading.Event()
        worker = threading.Thread(target=self._producer, args=(list(paths), q, stop), name="rfnet-decode", daemon=True)
        worker.start()
        try:
            if self.workers == 1:
                for unit in self._units(q):
                    yield from (unit,) if isinstance(unit, ImageFailure) else self._run_batch(unit)
            else:
                yield from self._run_concurrently(self._units(q))
        finally:
            stop.set()
            worker.join(timeout=5.0)

    def _units(self, q: "queue.Queue[Any]") -> Iterator[ImageFailure | list[_Decoded]]:
        """The decode queue as work units, in decode order: a failure, or a batch of decoded images."""
        batch: list[_Decoded] = []
        while True:
            item = q.get()
            if item is _DONE:
                break
            if item.error is not None:
                yield ImageFailure(item.index, item.path, item.error)
                continue
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _run_concurrently(self, units: Iterable[ImageFailure | list[_Decoded]]) -> Iterator[Outcome]:
        """:attr:`workers` batches at a time in a thread pool; outcomes yielded in the units' order."""
        pending: deque[Future[list[Outcome]] | list[Outcome]] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="rfnet-infer") as pool:
            try:
                for unit in units:
                    pending.append([unit] if isinstance(unit, ImageFailure)
                                   else pool.submit(lambda b: list(self._run_batch(b)), unit))
                    while len(pending) > self.workers:  # at most that many units ahead of the consumer
                        yield from _outcomes(pending.popleft())
                while pending:
                    yield from _outcomes(pending.popleft())
            finally:
                for p in pending:  # the consumer stopped early: drop what has not started
                    if isinstance(p, Future):
                        p.cancel()

    def _run_batch(self, items: list[_Decoded]) -> Iterator[Outcome]:
        t0 = time.perf_counter()
        try:
            # every queued item decoded fine (failures were yielded before batching)
            tensors = [cast(np.ndarray, it.tensor) for it in items]
            # one image: a view, not a 12 MB copy
            outputs = self.infer(tensors[0][None] if len(tensors) == 1 else np.stack(tensors))
        except (BackendError, ValueError) as exc:  # ContractError (bad output shapes) is a ValueError
            for it in items:
                yield ImageFailure(it.index, it.path, f"{it.path}: inference failed: {exc}")
            return
        latency_ms = (time.perf_counter() - t0) * 1e3 / len(items)
        for i, it in enumerate(items):
            assert it.image is not None and it.lb is not None and it.quality is not None
            try:
                done = self.finish(outputs, i, it.lb, it.quality)
            except Exception as exc:
                yield ImageFailure(it.index, it.path, f"{it.path}: post-processing failed: {type(exc).__name__}: {exc}")
                continue
            timings = {"decode": it.decode_ms, "preprocess": it.preprocess_ms, **done.timings}
            yield ImageResult(it.index, it.path, it.image, done.segmentation, done.grade, done.cdr, latency_ms, timings)


def _outcomes(unit: "Future[list[Outcome]] | list[Outcome]") -> list[Outcome]:
    return unit if isinstance(unit, list) else unit.result()
