"""The one image -> segmentation core: preprocess -> backend -> check -> post-process -> CDR (torch-free).

:class:`Segmenter` is what every path that turns images into disc / cup masks calls, with
any :class:`~rfnet.common.backend.Backend`:

* the deployment runtime (``rfnet.runtime.pipeline.Pipeline`` runs it behind a decode thread);
* the benchmarks' end-to-end pass (``rfnet.benchmarks.endtoend``);
* the exporters' checks: ONNX Runtime vs PyTorch (``export/export_onnx.py``), FP16 and INT8
  vs FP32 (``export/fp16.py``, ``export/onnx_tools/int8_eval.py``);
* training's validation and ``rfnet.evaluate`` (``rfnet.predict``, the PyTorch model behind
  ``rfnet.torch_backend.TorchBackend``).

Each result carries the gradability verdict (:mod:`rfnet.common.gradability`): whether a
confident, whole, plausible disc in a photograph that can be a fundus backs a CDR, and if not,
why. A result that is not gradable has no CDR (``cdr`` is None), so no consumer can report one.

Batching against the model's constraints -- chunks of the batch size, a chunk shorter than a
fixed batch or an engine profile's minimum zero-padded and the padded rows dropped -- and the
output check of the contract (:func:`rfnet.common.contract.check_outputs`) happen here only.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rfnet.common.backend import Backend, ModelLoadError, TensorSpec
from rfnet.common.contract import OUTPUT_NAMES, ModelMetadata, check_outputs, metadata_from_backend
from rfnet.common.gradability import Grade, GradingLimits, ImageQuality, check_min_score, grade, measure_image
from rfnet.common.imageio import Photo, decode_photo, read_photo
from rfnet.common.metrics import cdr_report, to_expert_scale
from rfnet.common.postprocess import Segmentation, postprocess
from rfnet.common.tta import merge_mirrored, mirror
from rfnet.common.preprocess import Letterbox, preprocess

log = logging.getLogger(__name__)

#: Stages timed by :meth:`Segmenter.process_batch` (milliseconds per image); ``preprocess``
#: includes measuring the image for the verdict, ``cdr`` the CDRs and the verdict.
STAGES: tuple[str, ...] = ("preprocess", "model", "postprocess", "cdr")

#: A JPEG is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling) while its long side
#: keeps at least this share of the model's input side: the letterbox then enlarges it by at most
#: 2 % instead of shrinking a picture several times larger; decoding and resizing take less time,
#: and the masks stay at the original size (docs/benchmarks.md has what it changes).
DECODE_SIDE_SHARE = 0.98


@dataclass
class SegmentedImage:
    """One image through the core.

    Attributes:
        segmentation: disc / cup masks at the original size, box, score.
        grade: the verdict (:class:`rfnet.common.gradability.Grade`: ``gradable``, ``reason``,
            ``message``).
        cdr: :func:`rfnet.common.metrics.cdr_report` of the masks when gradable, else None; with
            ``vcdr_expert`` too when the model has ``rfnet.vcdr_expert_scale`` (the vertical CDR on
            the experts' scale, clipped to [0, 1]).
        quality: the image measures the verdict used.
        timings: milliseconds per stage of :data:`STAGES` (``model`` is the backend time of
            the image's batch divided by the images in it).
    """

    segmentation: Segmentation
    grade: Grade
    cdr: dict[str, float] | None
    quality: ImageQuality
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def gradable(self) -> bool:
        return self.grade.gradable


def check_io_contract(backend: Backend, info: ModelMetadata) -> None:
    """One input [B,3,S,S] with S = ``input_size``; outputs boxes, scores, masks whose static
    K and M match ``top_k`` and ``mask_size`` (:class:`ModelLoadError` otherwise)."""
    src = backend.model_path
    spec = backend.input_spec()
    if len(spec.shape) != 4 or spec.shape[1] not in (3, -1):
        raise ModelLoadError(f"{src}: input {spec.name!r} has shape {spec.shape}, expected [B,3,S,S]")
    for axis in (2, 3):
        if spec.shape[axis] >= 0 and spec.shape[axis] != info.input_size:
            raise ModelLoadError(
                f"{src}: input {spec.name!r} is {spec.shape} but the metadata says input_size {info.input_size}"
            )
    outputs = {t.name: t for t in backend.outputs}
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise ModelLoadError(f"{src}: model outputs {sorted(outputs)} lack {missing} (expected {list(OUTPUT_NAMES)})")
    k, m = info.top_k, info.mask_size
    want = {"boxes": (-1, k, 4), "scores": (-1, k), "masks": (-1, k, 2, m, m)}
    for name, dims in want.items():
        got = outputs[name].shape
        if len(got) != len(dims) or any(g >= 0 and d >= 0 and g != d for g, d in zip(got, dims)):
            raise ModelLoadError(f"{src}: output {name} is {list(got)} but the metadata says top_k {k} and "
                                 f"mask_size {m} ({name} {['B' if d < 0 else d for d in dims]})")


def referral_risk(cdr: dict[str, float]) -> float:
    """The glaucoma risk score of a gradable result's CDRs: the vCDR on the experts' scale where
    the model has one, else the vCDR."""
    return float(cdr.get("vcdr_expert", cdr["vcdr"]))


def model_info(backend: Backend) -> ModelMetadata:
    """The loaded ``backend``'s metadata (ONNX ``rfnet.*`` strings or engine manifest), checked
    against its tensors (:func:`check_io_contract`)."""
    info = metadata_from_backend(backend.metadata, str(backend.model_path))
    check_io_contract(backend, info)
    return info


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


class Segmenter:
    """Images through one loaded backend, synchronously.

    Args:
        backend: a loaded :class:`Backend`.
        info: the model's metadata (default: :func:`model_info` of ``backend``).
        batch_size: images per backend call (adjusted to the model, see :func:`plan_batch`).
        threshold: mask probability threshold.
        ellipse: fit ellipses to disc and cup.
        keep_prob: keep the pasted probability maps in each :class:`Segmentation`.
        min_score: minimum disc score of a gradable result (default: the model's
            ``rfnet.min_disc_score``, :attr:`ModelMetadata.min_disc_score`).
        tta: also run every image mirrored left-right and merge the top detections
            (:mod:`rfnet.common.tta`; twice the model time).
        full_decode: :meth:`read` and :meth:`decode` always decode the whole picture (the pixels
            ``rfnet evaluate`` sees) instead of a large JPEG at reduced size.
    """

    def __init__(self, backend: Backend, info: ModelMetadata | None = None, *, batch_size: int = 1,
                 threshold: float = 0.5, ellipse: bool = False, keep_prob: bool = False,
                 min_score: float | None = None, tta: bool = False, full_decode: bool = False) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        if min_score is not None:
            check_min_score(min_score, "min_score")
        self.backend = backend
        self.info = info if info is not None else model_info(backend)
        self.spec = backend.input_spec()
        self.batch_size, self._min_batch = plan_batch(self.spec, batch_size)
        self.threshold = threshold
        self.ellipse = ellipse
        self.keep_prob = keep_prob
        self.min_score = self.info.min_disc_score if min_score is None else float(min_score)
        self.limits = GradingLimits.from_mapping(self.info.grading_limits)
        self.tta = tta
        self.full_decode = full_decode

    @property
    def decode_side(self) -> int:
        """Long side, in pixels, below which :meth:`read` and :meth:`decode` never reduce a JPEG
        (0: always decoded in full): :data:`DECODE_SIDE_SHARE` of the model's input side."""
        return 0 if self.full_decode else int(DECODE_SIDE_SHARE * self.info.input_size)

    def read(self, path: str | os.PathLike[str]) -> Photo:
        """An image file as this model needs it: a large JPEG decoded at reduced size (:meth:`decode_side`).

        Raises:
            ImageReadError: the file cannot be read; the message names it and the problem.
        """
        return read_photo(path, min_side=self.decode_side)

    def decode(self, data: bytes, source: str, max_pixels: int | None = None) -> Photo:
        """:meth:`read` of a file's bytes (``source`` names it in errors; ``max_pixels``: see
        :func:`rfnet.common.imageio.decode_image`)."""
        return decode_photo(data, source, min_side=self.decode_side, max_pixels=max_pixels)

    def prepare(self, photo: Photo) -> tuple[np.ndarray, Letterbox, ImageQuality]:
        """:meth:`measure` and :meth:`preprocess` (with :meth:`margin`) of a decoded photo, in its
        original pixels."""
        return self._prepare(photo.pixels, photo.size)

    def _prepare(self, pixels: np.ndarray,
                 original: tuple[int, int] | None) -> tuple[np.ndarray, Letterbox, ImageQuality]:
        # measured first: the field's edge decides the letterbox's margin
        quality = self.measure(pixels, original)
        tensor, lb = self.preprocess(pixels, original, margin=self.margin(quality))
        return tensor, lb, quality

    def margin(self, quality: ImageQuality) -> float:
        """The letterbox margin of an image: the model's ``crop_margin`` when the fundus field's
        edge does not show (a disc-centred crop, whose disc reaches the image's edges), else 1."""
        return 1.0 if quality.field_edge else self.info.crop_margin

    def preprocess(self, image: np.ndarray, original: tuple[int, int] | None = None,
                   margin: float = 1.0) -> tuple[np.ndarray, Letterbox]:
        """RGB uint8 [H,W,3] -> (float32 [3,S,S], its letterbox), as the model was trained;
        ``original``: (height, width) of the picture ``image`` is a reduced copy of; ``margin``:
        see :meth:`margin` (:meth:`prepare` and :meth:`process_batch` pass it)."""
        return preprocess(image, self.info.input_config(), original, margin)

    def measure(self, image: np.ndarray, original: tuple[int, int] | None = None) -> ImageQuality:
        """The image measures :meth:`finish` grades with (RGB uint8 [H,W,3]; ``original`` as in
        :meth:`preprocess`)."""
        return measure_image(image, original)

    def infer(self, tensors: np.ndarray) -> dict[str, np.ndarray]:
        """Preprocessed ``tensors`` [N,3,S,S] -> checked outputs ``{boxes [N,K,4], scores [N,K],
        masks [N,K,2,M,M]}`` (float32), in chunks of :attr:`batch_size`.

        Raises:
            BackendError: the backend failed; ContractError: an output breaks the contract.
        """
        n = int(tensors.shape[0])
        if n == 0:
            raise ValueError("infer needs at least one image")
        out = self._infer_chunks(tensors)
        if self.tta:
            out, _ = merge_mirrored(out, self._infer_chunks(mirror(tensors)), int(tensors.shape[-1]))
        return out

    def _infer_chunks(self, tensors: np.ndarray) -> dict[str, np.ndarray]:
        n = int(tensors.shape[0])
        parts: list[tuple[np.ndarray, ...]] = []
        for start in range(0, n, self.batch_size):
            chunk = np.asarray(tensors[start : start + self.batch_size], dtype=self.spec.dtype)
            real = chunk.shape[0]
            if real < self._min_batch:  # a fixed batch or a profile minimum: pad with zeros
                chunk = np.concatenate([chunk, np.zeros((self._min_batch - real, *chunk.shape[1:]), chunk.dtype)])
            out = self.backend.infer({self.spec.name: chunk})
            parts.append(tuple(a[:real] for a in check_outputs(out, chunk.shape[0], self.info, str(self.backend.model_path))))
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(OUTPUT_NAMES)}

    def finish(self, outputs: dict[str, np.ndarray], i: int, lb: Letterbox,
               quality: ImageQuality) -> SegmentedImage:
        """Post-processing, verdict and (when gradable) CDRs of image ``i`` of :meth:`infer`'s
        ``outputs``; ``quality`` is :meth:`measure` of the original image (timings without ``model``)."""
        t0 = time.perf_counter()
        seg = postprocess(outputs["boxes"][i], outputs["scores"][i], outputs["masks"][i], lb, self.threshold,
                          self.ellipse, keep_prob=self.keep_prob, mask_box_scale=self.info.mask_box_scale)
        t1 = time.perf_counter()
        verdict = grade(quality, seg, self.min_score, self.limits)
        # the same figures as on the full masks, on the window's pixels
        cdr = cdr_report(*seg.cropped()) if verdict.gradable else None
        if cdr is not None and self.info.vcdr_expert_scale is not None:
            cdr["vcdr_expert"] = float(to_expert_scale(cdr["vcdr"], self.info.vcdr_expert_scale))
        if cdr is not None and self.info.referral_vcdr is not None:
            cdr["refer"] = float(referral_risk(cdr) >= self.info.referral_vcdr)
        t2 = time.perf_counter()
        return SegmentedImage(seg, verdict, cdr, quality, {"postprocess": (t1 - t0) * 1e3, "cdr": (t2 - t1) * 1e3})

    def process_tensors(self, tensors: np.ndarray, lbs: Sequence[Letterbox],
                        qualities: Sequence[ImageQuality]) -> list[SegmentedImage]:
        """Already preprocessed images (float32 [N,3,S,S], their letterboxes and :meth:`measure`
        of the originals) -> one result each."""
        t0 = time.perf_counter()
        outputs = self.infer(tensors)
        model_ms = (time.perf_counter() - t0) * 1e3 / len(lbs)
        results = [self.finish(outputs, i, lb, q) for i, (lb, q) in enumerate(zip(lbs, qualities, strict=True))]
        for r in results:
            r.timings["model"] = model_ms
        return results

    def process_batch(self, images: Sequence[np.ndarray | Photo]) -> list[SegmentedImage]:
        """RGB uint8 images [H,W,3] of any sizes (or :meth:`read`'s photos) -> one
        :class:`SegmentedImage` each, same order, with every stage of :data:`STAGES` timed."""
        if not images:
            return []
        pre_ms: list[float] = []
        tensors, lbs, qualities = [], [], []
        for image in images:
            t0 = time.perf_counter()
            pixels, original = (image.pixels, image.size) if isinstance(image, Photo) else (image, None)
            tensor, lb, quality = self._prepare(pixels, original)
            qualities.append(quality)
            pre_ms.append((time.perf_counter() - t0) * 1e3)
            tensors.append(tensor)
            lbs.append(lb)
        results = self.process_tensors(np.stack(tensors), lbs, qualities)
        for r, ms in zip(results, pre_ms):
            r.timings = {"preprocess": ms, "model": r.timings["model"], "postprocess": r.timings["postprocess"],
                         "cdr": r.timings["cdr"]}
        return results

    def segment(self, images: Sequence[np.ndarray]) -> list[Segmentation]:
        """Just the :class:`Segmentation` of each image (:meth:`process_batch` without the rest)."""
        return [r.segmentation for r in self.process_batch(images)]
