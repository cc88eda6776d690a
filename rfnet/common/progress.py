"""Progress of a long loop: a tqdm bar on a terminal, one log line per stage elsewhere (torch-free).

Written to a file or a pipe (``make demo > log 2>&1``, CI), a tqdm bar becomes hundreds of
carriage-return fragments. :func:`track` shows the bar only when standard error is a
terminal; otherwise it logs one line when the stage is done (``desc: N unit in S s``).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def stderr_is_terminal() -> bool:
    """Whether standard error is an interactive terminal (where a progress bar belongs)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def track(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it",
             enabled: bool = True, summary: bool = True) -> Iterator[T]:
    """Iterate ``iterable``, showing a bar (``enabled`` and on a terminal) or, without a bar,
    logging one INFO line at the end when ``summary``."""
    if enabled and stderr_is_terminal():
        from tqdm import tqdm

        yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False)
        return
    start, n = time.perf_counter(), 0
    for item in iterable:
        yield item
        n += 1
    if summary:
        log.info("%s: %d %s in %.1f s", desc, n, unit, time.perf_counter() - start)
