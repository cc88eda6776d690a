"""TensorRT implicit-INT8 calibrator (TensorRT 8.6 / 10.x; TensorRT 11 has no calibrators).

The calibrator must subclass a TensorRT class, so the class is made at run time from the
installed ``tensorrt`` (``IInt8MinMaxCalibrator``, or ``IInt8EntropyCalibrator2``, which DLA
requires), as Polygraphy's ``Calibrator(BaseClass=...)`` does. The data come from
``rfnet.export.calibration.CalibrationSet`` (runtime preprocessing).

Contract with TensorRT (explicit-batch networks):

* every batch is one array of exactly the network input's calibration shape: the input's
  own shape when it is static, else the calibration profile's (``config.set_calibration_profile``
  exists for networks with runtime dimensions only); :func:`make_calibrator` refuses a
  calibration set whose batch differs, and ``get_batch_size`` reports that batch;
* ``get_batch(names)`` returns one device pointer per input name, or ``[]`` when done;
* TensorRT's Python wrapper prints an exception raised inside a callback and treats it as
  "no more data", so the calibrator keeps the first one in ``error`` and the builder raises it
  after ``build_serialized_network`` returns.

Never run against a real TensorRT here (no machine of this project has it).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from rfnet.export.calibration import CalibrationSet
from rfnet.common.fileio import atomic_write_bytes

if TYPE_CHECKING:  # the TensorRT 10.x stubs (tensorrt-stubs)
    from typing_extensions import Buffer

    from rfnet.export.trt.cuda_device import DeviceBuffer

log = logging.getLogger(__name__)

CALIBRATORS = {"minmax": "IInt8MinMaxCalibrator", "entropy2": "IInt8EntropyCalibrator2"}


def _device_buffer(nbytes: int) -> "DeviceBuffer":
    from rfnet.export.trt.cuda_device import DeviceBuffer  # cuda-python or PyCUDA, imported when calibrating

    return DeviceBuffer(nbytes)


class _CalibratorBody:
    """What both calibrators do; combined with the TensorRT base class in :func:`make_calibrator`."""

    def _setup(self, calib_set: CalibrationSet | None, shape: tuple[int, ...], cache_path: Path,
               buffer_factory: Callable[[int], Any]) -> None:
        self.error: BaseException | None = None
        self.batches_done = 0
        self._calib_set, self._shape, self._cache_path = calib_set, tuple(shape), cache_path
        self._iter: Iterator[np.ndarray] = calib_set.batches() if calib_set is not None else iter(())
        self._buffer_factory = buffer_factory
        self._buf: Any = None

    def get_batch_size(self) -> int:
        return int(self._shape[0])

    def get_batch(self, names: list[str]) -> list[int]:
        """Device pointers of the next batch, one per input name; ``[]`` = no more batches."""
        if self.error is not None:
            return []
        try:
            batch = next(self._iter, None)
            if batch is None:
                return []
            if len(names) != 1:
                raise ValueError(f"the calibrator feeds one input (the image batch); TensorRT asked for {names}")
            if tuple(batch.shape) != self._shape:
                raise ValueError(f"calibration batch has shape {list(batch.shape)}, expected {list(self._shape)}")
            if self._buf is None:
                self._buf = self._buffer_factory(4 * int(np.prod(self._shape)))  # float32 input
            self._buf.copy_from_host(batch)
        except BaseException as exc:  # keep it: TensorRT would print it and take it for the end of the data
            self.error = exc
            return []
        self.batches_done += 1
        if self._calib_set is not None:
            log.info("calibration batch %d/%d", self.batches_done, self._calib_set.num_batches)
        return [int(self._buf.ptr)]

    def read_calibration_cache(self) -> "Buffer":
        if self._calib_set is None and self._cache_path.is_file():
            log.info("using calibration cache %s", self._cache_path)
            return self._cache_path.read_bytes()
        # TensorRT documents None for "no cache, calibrate from the images"; the stubs say Buffer only.
        return None  # type: ignore[return-value]

    def write_calibration_cache(self, cache: "Buffer") -> None:
        try:
            atomic_write_bytes(self._cache_path, bytes(memoryview(cache)))
            log.info("wrote calibration cache %s", self._cache_path)
        except BaseException as exc:
            self.error = self.error or exc

    def close(self) -> None:
        """Free the device buffer (after the build)."""
        if self._buf is not None:
            self._buf.free()
            self._buf = None


def make_calibrator(
    algorithm: str,
    calib_set: CalibrationSet | None,
    shape: tuple[int, ...],
    cache_path: Path,
    *,
    buffer_factory: Callable[[int], Any] | None = None,
) -> _CalibratorBody:
    """A calibrator feeding ``calib_set`` (``None``: only the cache) in batches of ``shape``.

    Args:
        algorithm: ``minmax`` (``IInt8MinMaxCalibrator``) or ``entropy2`` (``IInt8EntropyCalibrator2``).
        shape: the network input's calibration shape ``(B, 3, S, S)``.
        buffer_factory: ``nbytes -> device buffer`` with ``ptr``, ``copy_from_host``, ``free``
            (default: ``rfnet.export.trt.cuda_device.DeviceBuffer``, cuda-python or PyCUDA).
    Raises:
        ValueError: unknown algorithm, or the calibration set's batches do not have ``shape``.
    """
    import tensorrt as trt  # only after import_tensorrt() succeeded

    if calib_set is not None and tuple(calib_set.shape) != tuple(shape):
        raise ValueError(
            f"calibration batches are {list(calib_set.shape)} but the network input calibrates at {list(shape)}; "
            "TensorRT takes exactly the input's (or the calibration profile's) shape"
        )
    # The mixin comes first so its methods override the pybind11 base's (TensorRT calls them by name).
    if algorithm == "entropy2":
        class Entropy2(_CalibratorBody, trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                trt.IInt8EntropyCalibrator2.__init__(self)  # required by the pybind11 base

        calibrator: _CalibratorBody = Entropy2()
    elif algorithm == "minmax":
        class MinMax(_CalibratorBody, trt.IInt8MinMaxCalibrator):
            def __init__(self) -> None:
                trt.IInt8MinMaxCalibrator.__init__(self)  # required by the pybind11 base

        calibrator = MinMax()
    else:
        raise ValueError(f"unknown calibrator {algorithm!r}; expected one of {sorted(CALIBRATORS)}")
    calibrator._setup(calib_set, shape, cache_path, buffer_factory or _device_buffer)
    return calibrator
