"""One model instance of the RF-Net service: encoded images in, result fields and masks out.

Free of PyTriton (``runtime/serve.py`` binds :class:`SegmentService` into Triton) and of torch.
The wire format, used by ``runtime/serve.py`` and ``runtime/client.py``:

=====================  ======  =====  ===================================================
tensor                 dtype   dims   per request item (batch dimension first, [N,1])
=====================  ======  =====  ===================================================
``image`` (input)      BYTES   [1]    the encoded image file (JPEG, PNG, BMP, TIFF)
each result field      FP64 /  [1]    :data:`rfnet.runtime.fields.RESULT_FIELDS`: gradable, reason,
                       INT32 /        vcdr, vcdr_extent, hcdr, area_cdr, disc box, score,
                       BYTES          disc_found, cup_low_confidence, message (``float`` /
                                      ``int`` / ``str``)
``disc_mask``          BYTES  [1]    PNG, 8-bit grey, 255 disc / 0 elsewhere, original size
``cup_mask``           BYTES  [1]    PNG, 8-bit grey, 255 cup / 0 elsewhere, original size
``latency_ms``         FP64   [1]    backend time of the item's batch / images in it
``error``              BYTES  [1]    empty when the item succeeded, else what went wrong
=====================  ======  =====  ===================================================

The masks are the PNG files ``runtime/infer.py`` writes to ``masks/`` (same encoder, same
bytes). An image that is not gradable (the verdict of ``rfnet.common.gradability``, with the
model's ``rfnet.min_disc_score`` or ``--min-score`` as infer.py) is a succeeded item with
``gradable`` 0, its ``reason`` and ``message``, and NaN CDR fields; its masks are still sent (a
client writes them only on request, for review, as infer.py's ``--save ungradable``). A failed
item has ``error`` set, no values (NaN / "" / 0) and empty masks; the other items of the request
and of the batch are unaffected.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rfnet.common.backend import Backend, BackendError
from rfnet.common.gradability import ImageQuality
from rfnet.common.imageio import ImageReadError, encode_mask_png
from rfnet.common.preprocess import Letterbox
from rfnet.common.segment import Segmenter
from rfnet.runtime.backends import create_backend
from rfnet.runtime.fields import KINDS, RESULT_FIELDS, Value, empty_fields, fields_to_arrays, result_fields

log = logging.getLogger(__name__)

MODEL_NAME = "rfnet"
IMAGE_INPUT = "image"
DISC_MASK = "disc_mask"
CUP_MASK = "cup_mask"
LATENCY = "latency_ms"
ERROR = "error"
#: JSON of the served model's deployment fields and the minimum disc score in force (the same in
#: every answer): what a client's summary.json and report show as the model and its thresholds.
MODEL_INFO = "model_info"
#: Default refusal threshold of a request image's declared pixel count: 268 Mpx, 2.5x a
#: 12000 x 9000 photograph, about 0.8 GB decoded; OpenCV's own limit is 2**30.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 28


def output_specs() -> list[tuple[str, Any]]:
    """(name, numpy dtype) of every output in order: the result fields, masks, latency, error, model info.
    Strings and bytes are ``np.bytes_`` here (Triton BYTES); arrays carrying them are object arrays."""
    wire = {"float": KINDS["float"], "int": KINDS["int"], "str": np.bytes_}
    return [*((f.name, wire[f.kind]) for f in RESULT_FIELDS),
            (DISC_MASK, np.bytes_), (CUP_MASK, np.bytes_), (LATENCY, np.float64), (ERROR, np.bytes_),
            (MODEL_INFO, np.bytes_)]


def encode_mask(mask: np.ndarray) -> bytes:
    """bool [H,W] -> 1-bit PNG bytes (0 / 255), the bytes of ``runtime/infer.py``'s mask files."""
    return encode_mask_png(mask)


def decode_mask(data: bytes, what: str) -> np.ndarray:
    """PNG bytes of :func:`encode_mask` -> bool [H,W] (ValueError naming ``what`` otherwise)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if img is None:
        raise ValueError(f"{what}: not a PNG mask ({len(data)} bytes)")
    return img > 127


@dataclass(frozen=True)
class ServeSettings:
    """How each model instance loads and runs the model.

    Attributes:
        model: ``.onnx`` or ``.engine`` (manifest beside it).
        backend: ``auto``, ``onnxruntime`` or ``tensorrt`` (``rfnet.runtime.backends.BACKENDS``).
        max_batch_size: images per backend call (Triton's dynamic batcher fills up to this).
        threshold, ellipse: as ``runtime/infer.py``'s ``--threshold`` / ``--ellipse``.
        min_score: minimum disc score of a gradable image, as infer.py's ``--min-score`` (None:
            the model's ``rfnet.min_disc_score``).
        threads: ONNX Runtime intra-op threads (None: its default).
        cuda_graph: TensorRT CUDA graphs.
        max_image_pixels: a request image declaring more pixels is refused (None: no limit).
    """

    model: Path
    backend: str = "auto"
    max_batch_size: int = 8
    threshold: float = 0.5
    ellipse: bool = False
    min_score: float | None = None
    threads: int | None = None
    cuda_graph: bool = False
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS


class SegmentService:
    """One model instance: a backend loaded once, behind the shared core, on its own thread.

    Every load, inference and close runs on one dedicated thread: a CUDA context (PyCUDA's, for
    the TensorRT backend) is current only on the thread that made it, and the thread Triton calls
    an instance from is the server's business. The call itself blocks until the batch is done.

    Raises (constructor):
        RFNetError: the model cannot be loaded (missing library, bad metadata, ...).
    """

    def __init__(self, settings: ServeSettings, name: str = "0") -> None:
        self.settings = settings
        self.name = name
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rfnet-instance-{name}")
        try:
            self._backend, self.segmenter = self._thread.submit(self._load).result()
        except BaseException:
            self._thread.shutdown(wait=True)
            raise
        self.model_info = json.dumps({"model_info": self.segmenter.info.deploy_fields(),
                                      "min_disc_score": self.segmenter.min_score}, sort_keys=True).encode("utf-8")

    def _load(self) -> tuple[Backend, Segmenter]:
        s = self.settings
        backend = create_backend(s.model, s.backend, cuda_graph=s.cuda_graph, intra_op_threads=s.threads)
        try:
            backend.load()
            return backend, Segmenter(backend, batch_size=s.max_batch_size, threshold=s.threshold, ellipse=s.ellipse,
                                      min_score=s.min_score)
        except BaseException:
            backend.close()
            raise

    @property
    def device(self) -> str:
        return self._backend.device

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Encoded images, object array [N,1] (or [N]) of bytes -> the outputs of
        :func:`output_specs`, each [N,1]. Never raises for a bad item: that item gets ``error``."""
        return self._thread.submit(self._guarded, image).result()

    def close(self) -> None:
        """Release the backend (on its thread) and stop the thread."""
        try:
            self._thread.submit(self._backend.close).result()
        finally:
            self._thread.shutdown(wait=True)

    # -- on the instance's thread ------------------------------------------------------------
    def _guarded(self, image: np.ndarray) -> dict[str, np.ndarray]:
        items = [bytes(x) for x in np.asarray(image, dtype=object).reshape(-1)]
        try:
            return self._run(items)
        except Exception as exc:  # a bug must cost this batch, not the server
            log.exception("instance %s: batch of %d failed", self.name, len(items))
            return _assemble(len(items), {}, {i: f"internal error: {type(exc).__name__}: {exc}" for i in range(len(items))},
                             self.model_info)

    def _run(self, items: list[bytes]) -> dict[str, np.ndarray]:
        errors: dict[int, str] = {}
        ok: list[tuple[int, np.ndarray, Letterbox, ImageQuality]] = []
        for i, data in enumerate(items):
            try:
                photo = self.segmenter.decode(data, "image", max_pixels=self.settings.max_image_pixels)
                ok.append((i, *self.segmenter.prepare(photo)))
            except ImageReadError as exc:
                errors[i] = str(exc)
            except Exception as exc:  # cv2.error or MemoryError on an absurd image: this item only
                errors[i] = f"image: {type(exc).__name__}: {exc}"
        done: dict[int, tuple[dict[str, Value], bytes, bytes, float]] = {}
        if ok:
            t0 = time.perf_counter()
            try:
                outputs = self.segmenter.infer(np.stack([t for _, t, _, _ in ok]))
            except (BackendError, ValueError) as exc:  # ContractError is a ValueError
                return _assemble(len(items), {}, {**errors, **{i: f"inference failed: {exc}" for i, *_ in ok}},
                                 self.model_info)
            latency = (time.perf_counter() - t0) * 1e3 / len(ok)
            for j, (i, _, lb, quality) in enumerate(ok):
                try:
                    res = self.segmenter.finish(outputs, j, lb, quality)
                    seg = res.segmentation
                    done[i] = (result_fields(res), encode_mask(seg.disc), encode_mask(seg.cup), latency)
                except Exception as exc:
                    errors[i] = f"post-processing failed: {type(exc).__name__}: {exc}"
        return _assemble(len(items), done, errors, self.model_info)


def _assemble(n: int, done: dict[int, tuple[dict[str, Value], bytes, bytes, float]],
              errors: dict[int, str], model_info: bytes) -> dict[str, np.ndarray]:
    """Per-item results and errors -> output arrays [n,1] in item order."""
    empty = empty_fields()
    rows = [done[i][0] if i in done else empty for i in range(n)]
    out = fields_to_arrays(rows)
    out[DISC_MASK] = np.array([[done[i][1] if i in done else b""] for i in range(n)], dtype=object)
    out[CUP_MASK] = np.array([[done[i][2] if i in done else b""] for i in range(n)], dtype=object)
    out[LATENCY] = np.array([[done[i][3] if i in done else 0.0] for i in range(n)], dtype=np.float64)
    out[ERROR] = np.array([[errors.get(i, "").encode("utf-8")] for i in range(n)], dtype=object)
    out[MODEL_INFO] = np.array([[model_info] for _ in range(n)], dtype=object)
    return out
