"""The progress journal of a runtime/infer.py run, for ``--resume`` (torch-free).

``<output>/progress.jsonl`` holds one JSON line per finished image, appended after that
image's files are written (one ``os.write`` of the whole line, so a killed process leaves at
most one incomplete last line, which is ignored). The first line records what the run was:
model file and hash, input, settings. ``runtime/infer.py --resume`` reads it back, refuses a
journal of another model, input or settings, skips the images it lists and writes
results.csv and summary.json over the union, each image once.

A killed process loses nothing that reached the journal; the operating system holds the
lines, so only a power cut before they reach the disk could lose the last few.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from rfnet.common.fileio import atomic_write_bytes
from rfnet.errors import UsageError

log = logging.getLogger(__name__)

JOURNAL = "progress.jsonl"
FORMAT = "rfnet-infer-progress"
FORMAT_VERSION = 1


@dataclass
class Record:
    """One finished image: its results.csv row and what summary.json needs.

    Attributes:
        file: the input file (as listed by the run).
        name: its output name (masks/<name>_disc.png, ...).
        row: the results.csv row (strings).
        gradable, reason: the verdict.
        cdr: CDRs (``rfnet.common.metrics.cdr_report``) when gradable, else None.
        latency_ms: model time of the image; timings: ms per stage.
        index: position in the current run's input list (not stored).
        resumed: restored from the journal of an earlier run (not stored).
    """

    file: str
    name: str
    row: dict[str, Any]
    gradable: bool
    reason: str
    cdr: dict[str, float] | None
    latency_ms: float
    timings: dict[str, float] = field(default_factory=dict)
    index: int = -1
    resumed: bool = False

    def to_line(self) -> bytes:
        data = asdict(self)
        del data["index"], data["resumed"]
        return (json.dumps(data, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Record":
        return cls(file=str(data["file"]), name=str(data["name"]), row=dict(data["row"]),
                   gradable=bool(data["gradable"]), reason=str(data["reason"]),
                   cdr=None if data["cdr"] is None else {k: float(v) for k, v in data["cdr"].items()},
                   latency_ms=float(data["latency_ms"]), timings={k: float(v) for k, v in data["timings"].items()},
                   resumed=True)


def journal_path(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / JOURNAL


def read_journal(out_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Record]]:
    """(header, records) of the journal in ``out_dir``; an incomplete or unreadable last line
    (the process was killed while writing it) is dropped.

    Raises:
        UsageError: no journal, or one that is not this format.
    """
    path = journal_path(out_dir)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise UsageError(f"{path}: no progress journal to resume from") from None
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    if tail:
        log.warning("%s: dropping an incomplete last line (the run was stopped while writing it)", path)
    try:
        header = json.loads(complete[0]) if complete else {}
    except json.JSONDecodeError:
        header = {}
    if header.get("format") != FORMAT:
        raise UsageError(f"{path}: not a runtime/infer.py progress journal")
    records: list[Record] = []
    for i, line in enumerate(complete[1:], start=2):
        try:
            records.append(Record.from_json(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if i == len(complete):  # a torn last line: recompute that image
                log.warning("%s: dropping an unreadable last line (%s)", path, exc)
                continue
            raise UsageError(f"{path}: line {i} is not a progress record ({exc})") from None
    return header, records


def check_same_run(header: Mapping[str, Any], run: Mapping[str, Any], where: Path) -> None:
    """UsageError naming what differs when ``header`` (a journal's) describes another run than ``run``."""
    differ = [k for k in sorted((set(run) | set(header)) - {"format", "format_version"})
              if header.get(k) != run.get(k)]
    if differ:
        shown = "; ".join(f"{k}: was {header.get(k)!r}, now {run.get(k)!r}" for k in differ)
        raise UsageError(f"{where}: the results there come from another run ({shown}); resume with the same "
                         f"model, input and settings, or write to a new --output")


class Journal:
    """Appends :class:`Record` lines to ``<out_dir>/progress.jsonl`` (one ``os.write`` each).

    The journal starts as ``header`` plus the ``restored`` records of a resumed run, written
    to a temporary file and renamed over the old journal (a torn last line disappears, and a
    second interruption during the rewrite loses nothing).
    """

    def __init__(self, out_dir: str | os.PathLike[str], header: Mapping[str, Any],
                 restored: Sequence[Record] = ()) -> None:
        self.path = journal_path(out_dir)
        head = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **header}, sort_keys=True) + "\n"
        atomic_write_bytes(self.path, head.encode() + b"".join(r.to_line() for r in restored))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def append(self, record: Record) -> None:
        self._write(record.to_line())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
