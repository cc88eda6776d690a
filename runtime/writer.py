"""Output files written by a background thread, off the inference loop (torch-free).

Encoding an overlay and the REFUGE map and writing them (each file ``fsync``ed by
:mod:`rfnet.common.fileio`) takes about as long as the light model's inference on a CPU; done
in line, the next image would wait for it. :class:`BackgroundWriter` hands each result to one
thread that runs :meth:`rfnet.runtime.outputs.OutputWriter.write` while the main loop goes on with
the next image. OpenCV's encoders and file I/O release the GIL, so on two cores the writing
overlaps inference instead of adding to it. Two threads by default: while one waits for its
files to reach the disk (``fsync``), the other encodes the next image's; the rows and the journal
are recorded one image at a time, each after its files are written.

The queue is bounded (each waiting result holds its decoded image), so a slow disk slows the
loop down instead of filling memory. A file that cannot be written makes that image an
:class:`rfnet.runtime.pipeline.ImageFailure`; the thread goes on with the next one.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import numpy as np

from rfnet.runtime.outputs import OutputWriter
from rfnet.runtime.pipeline import ImageFailure, ImageResult

log = logging.getLogger(__name__)

_STOP = object()


class BackgroundWriter:
    """Writes every :meth:`submit`'s files and row (``writer.write_files``, then ``writer.record``)
    in ``threads`` background threads.

    Args:
        writer: the :class:`OutputWriter` (its CSV rows are complete once :meth:`close` returned).
        queue_size: results waiting at most; :meth:`submit` blocks beyond that.
        threads: writer threads (at least 1).
    """

    def __init__(self, writer: OutputWriter, queue_size: int = 4, threads: int = 2) -> None:
        self.writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._failures: list[ImageFailure] = []
        self._lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"rfnet-writer-{i}", daemon=True)
                         for i in range(max(1, threads))]
        for t in self._threads:
            t.start()
        self._closed = False

    def submit(self, name: str, result: ImageResult) -> None:
        """Queue ``result``'s files under ``name``; the thread frees ``result.image`` once written."""
        if self._closed:
            raise RuntimeError("BackgroundWriter is closed")
        self._queue.put((name, result))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            name, result = item
            try:
                self.writer.write_files(name, result)
                with self._record_lock:
                    self.writer.record(name, result)
            except Exception as exc:  # OSError, an encoder's ValueError, cv2.error: that image failed, go on
                with self._lock:
                    self._failures.append(ImageFailure(result.index, result.path,
                                                       f"{result.path}: cannot write outputs: {exc}"))
            finally:
                result.image = np.empty((0, 0, 3), np.uint8)  # written (or not): free the pixels

    def take_failures(self) -> list[ImageFailure]:
        """Images whose files could not be written, since the last call."""
        with self._lock:
            out, self._failures = self._failures, []
        return out

    def close(self) -> list[ImageFailure]:
        """Write what is queued, stop the thread; the failures not taken yet."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
            for t in self._threads:
                t.join()
        return self.take_failures()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
