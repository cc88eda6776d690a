"""INT8 calibration data: fundus images preprocessed exactly like the runtime (torch-free).

TensorRT's implicit INT8 calibration (``IInt8MinMaxCalibrator``, or ``IInt8EntropyCalibrator2`` for DLA;
TensorRT 8.6/10.x) runs the
FP32 network on representative inputs and records activation histograms. Those inputs must
be what the deployed engine will see, so every image goes through the shared runtime path:
``rfnet.common.imageio.read_image`` (RGB uint8) and ``rfnet.common.preprocess.preprocess``
(letterbox to ``S x S``, ``(x - mean) / std``, CHW float32) with ``S``/``mean``/``std`` read
from the ONNX model's ``rfnet.*`` metadata -- never from defaults.

The calibrator class itself needs TensorRT base classes and lives in ``export/trt/trt_calibrator.py``;
this module only yields float32 ``[B, 3, S, S]`` batches and a hash of what was used. ``B`` is
the network input's batch when the ONNX fixes it (``export/build.py`` enforces that).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rfnet.export.errors import ExportError
from rfnet.common.imageio import ImageReadError, list_images, read_image
from rfnet.common.preprocess import preprocess
from rfnet.config import InputConfig

log = logging.getLogger(__name__)


class CalibrationDataError(ExportError, ValueError):
    """The calibration images cannot be used; the message names the folder/file and the fix."""


@dataclass(frozen=True)
class CalibrationSet:
    """A fixed, ordered list of calibration images and the preprocessing applied to them.

    ``batches()`` yields ``num_batches`` float32 arrays of shape ``[batch_size, 3, S, S]``;
    the ``len(paths) % batch_size`` images that do not fill a last batch are left out
    (TensorRT calibrates with a fixed batch size).
    """

    paths: tuple[Path, ...]
    input_cfg: InputConfig
    batch_size: int

    @property
    def num_batches(self) -> int:
        return len(self.paths) // self.batch_size

    @property
    def num_images(self) -> int:
        """Images actually used (whole batches only)."""
        return self.num_batches * self.batch_size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        s = self.input_cfg.size
        return (self.batch_size, 3, s, s)

    def batches(self) -> Iterator[np.ndarray]:
        """Yield float32 ``[B, 3, S, S]`` C-contiguous batches (decoded lazily, one batch in memory)."""
        for b in range(self.num_batches):
            batch = np.empty(self.shape, dtype=np.float32)
            for i, path in enumerate(self.paths[b * self.batch_size : (b + 1) * self.batch_size]):
                try:
                    image = read_image(path)
                except ImageReadError as exc:
                    raise CalibrationDataError(f"calibration image {exc}") from exc
                batch[i], _ = preprocess(image, self.input_cfg)
            yield batch

    def data_sha256(self) -> str:
        """SHA-256 over the preprocessing settings, batch size and each used file's name and bytes.

        Two builds share this hash only if TensorRT saw identical calibration inputs.
        """
        h = hashlib.sha256()
        settings = {
            "size": int(self.input_cfg.size),
            "mean": [float(v) for v in self.input_cfg.mean],
            "std": [float(v) for v in self.input_cfg.std],
            "batch_size": self.batch_size,
        }
        h.update(json.dumps(settings, sort_keys=True).encode())
        for path in self.paths[: self.num_images]:
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\0")
        return h.hexdigest()


def make_calibration_set(
    source: str | os.PathLike[str],
    input_cfg: InputConfig,
    batch_size: int,
    *,
    max_images: int | None = None,
    recursive: bool = True,
) -> CalibrationSet:
    """List the images of ``source`` (folder, glob or file) for calibration.

    Raises:
        CalibrationDataError: no images, fewer images than one batch, or a bad argument.
    """
    if batch_size < 1:
        raise CalibrationDataError(f"calibration batch size must be >= 1, got {batch_size}")
    try:
        paths: Sequence[Path] = list_images(source, recursive=recursive)
    except FileNotFoundError as exc:
        raise CalibrationDataError(f"--calib-dir {exc}") from exc
    if max_images is not None:
        paths = paths[:max_images]
    if not paths:
        raise CalibrationDataError(
            f"{source}: no calibration images (.png/.jpg/.bmp/.tif); use a few hundred real fundus images"
        )
    if len(paths) < batch_size:
        raise CalibrationDataError(
            f"{source}: {len(paths)} images is fewer than one calibration batch of {batch_size}; "
            "add images or lower --calib-batch"
        )
    dropped = len(paths) % batch_size
    if dropped:
        log.warning("%s: %d images do not fill a last batch of %d and are not used", source, dropped, batch_size)
    if len(paths) < 100:
        log.warning(
            "%s: only %d calibration images; INT8 masks degrade with too few or unrepresentative images",
            source,
            len(paths),
        )
    return CalibrationSet(paths=tuple(paths), input_cfg=input_cfg, batch_size=batch_size)
