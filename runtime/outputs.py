"""Everything the runtime writes, atomically, and never over existing results without --overwrite.

Layout of the output folder::

    refuge/<name>.bmp                             REFUGE map: 0 cup, 128 rim, 255 background (gradable images)
    overlay/<name>.jpg                            contours (disc green, cup blue) on the image (.png on request);
                                                  for an image that is not gradable: no contours, "not gradable: <reason>"
    thumb/<name>.jpg                              with the overlay: a small crop of it around the disc (report.html)
    report.html                                   the screening report (rfnet.common.report), unless --no-report
    masks/<name>_disc.png, masks/<name>_cup.png   on request: 0/255 (1-bit PNG) at the original size (gradable images)
    results.csv                                   one row per processed image
    summary.json                                  run settings, timings, failures
    progress.jsonl                                the images done so far, for --resume (runtime/journal.py)

An image that is not gradable (``rfnet.common.gradability``) gets a results.csv row with
``gradable`` 0, its ``reason`` and ``message``, and empty CDR cells; no masks and no REFUGE map
are written for it (they would carry a segmentation no confident disc backs) unless
``--save`` names ``ungradable`` too (for review).

By default each mask is written once, in the REFUGE map (it holds disc and cup); the separate
PNGs are ``--save masks`` (or ``all``). Overlays are JPEG (quality 95) unless PNG is asked for:
PNG-encoding a 3.6 MP photograph costs more than the light model itself (docs/lab/benchmarks-log.md).
``rfnet.runtime.writer`` runs an :class:`OutputWriter` in a background thread, off the inference loop.

Every file goes through :mod:`rfnet.common.fileio` (temporary file + rename), so an
interrupted run never leaves a half-written image or table behind.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rfnet.common.fileio import OutputExistsError, atomic_write_bytes, atomic_write_json, atomic_write_text
from rfnet.common.imageio import encode_mask_png, read_image, write_image
from rfnet.common.metrics import to_refuge_seg
from rfnet.common.report import THUMB_DIR, make_thumbnail, write_report
from rfnet.common.segment import DECODE_SIDE_SHARE
from rfnet.common.viz import draw_contours
from rfnet.errors import UsageError
from rfnet.runtime.fields import FIELD_NAMES, Value, format_fields, result_fields
from rfnet.runtime.journal import Journal, Record
from rfnet.runtime.pipeline import ImageResult

log = logging.getLogger(__name__)

SAVE_CHOICES = ("masks", "refuge", "overlay", "csv")
#: What is written unless --save says otherwise: each mask once (the REFUGE map), overlay, table.
DEFAULT_SAVE = ("refuge", "overlay", "csv")
#: Overlay file formats; the first is the default.
OVERLAY_FORMATS = ("jpg", "png")
#: The overlay's long side in pixels unless --overlay-size says otherwise (0: the photograph's own
#: size). An overlay is for a person checking the outlines: 1024 px shows a disc of a 45-degree
#: field at 100-150 px and a disc-centred photograph at several hundred; the measurements (results.csv,
#: the REFUGE map, the masks) always come from the full-size masks. A 2047 px overlay costs several
#: times the encoding time and file size (docs/benchmarks.md).
DEFAULT_OVERLAY_SIDE = 1024
#: Also write the masks, REFUGE map and contour overlay of images that are not gradable (to
#: review what the model saw; results.csv still leaves their CDR cells empty). Not in "all".
UNGRADABLE = "ungradable"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"

#: Result fields written after latency_ms: the free-text message stays the last column.
TRAILING_FIELDS = ("message",)
#: results.csv columns: the name, the input file, the result fields of :mod:`rfnet.runtime.fields`
#: (gradable 1/0 with the reason code and message when 0, the CDR cells then empty; vcdr is
#: REFUGE's max column count ratio, vcdr_extent the row-extent ratio; the disc box in original
#: pixels, ...), and latency_ms, the backend time of the image's batch divided by the images in
#: it, before the message.
CSV_COLUMNS = ("name", "file", *(n for n in FIELD_NAMES if n not in TRAILING_FIELDS), "latency_ms",
               *TRAILING_FIELDS)


def parse_save(text: str) -> frozenset[str]:
    """``"masks,refuge"`` -> {"masks", "refuge"}; ``"all"`` -> every choice of :data:`SAVE_CHOICES`;
    :data:`UNGRADABLE` may be added (UsageError, a ValueError, on unknown)."""
    items = {s.strip().lower() for s in text.split(",") if s.strip()}
    if "all" in items:
        items = (items - {"all"}) | set(SAVE_CHOICES)
    unknown = sorted(items - set(SAVE_CHOICES) - {UNGRADABLE})
    if unknown or not items:
        raise UsageError(f"--save: unknown {unknown or 'empty list'}; choose from {','.join(SAVE_CHOICES)} or all, "
                         f"plus {UNGRADABLE}")
    return frozenset(items)


def prepare_output_dir(out_dir: str | os.PathLike[str], overwrite: bool) -> Path:
    """Create ``out_dir``; refuse a non-empty one unless ``overwrite``.

    Raises:
        OutputExistsError: the folder has files in it and ``overwrite`` is false (nothing is touched).
        NotADirectoryError: ``out_dir`` is a file.
    """
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{p}: output path exists and is not a folder")
    if p.is_dir():
        entries = sorted(e.name for e in p.iterdir())
        if entries and not overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise OutputExistsError(
                f"{p}: output folder is not empty ({len(entries)} entries: {shown}); "
                f"pass --overwrite to write into it (existing files with the same names are replaced)"
            )
    p.mkdir(parents=True, exist_ok=True)
    return p


def output_names(paths: Sequence[Path]) -> list[str]:
    """A unique, filesystem-safe output name per input (the stem, disambiguated when needed).

    ``a/x.png`` and ``b/x.png`` (or ``x.png`` and ``x.jpg``) would collide on the stem; those
    get the parent folder and the extension added (``a_x_png``), then a counter if needed.
    """
    def safe(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._") or "image"

    stems = Counter(safe(Path(p).stem) for p in paths)
    names: list[str] = []
    used: set[str] = set()
    for p in paths:
        p = Path(p)
        name = safe(p.stem)
        if stems[name] > 1:
            name = safe(f"{p.parent.name}_{p.stem}_{p.suffix.lstrip('.')}")
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names.append(name)
    return names


class OutputWriter:
    """Writes per-image files as results arrive and the tables at the end.

    With a ``journal``, each image's :class:`~rfnet.runtime.journal.Record` is appended to it once
    its files are written (``--resume`` skips the images listed there).
    """

    def __init__(self, out_dir: Path, save: Iterable[str], journal: Journal | None = None,
                 overlay_format: str = OVERLAY_FORMATS[0], overlay_side: int = DEFAULT_OVERLAY_SIDE) -> None:
        if overlay_format not in OVERLAY_FORMATS:
            raise UsageError(f"overlay format must be one of {OVERLAY_FORMATS}, got {overlay_format!r}")
        if overlay_side < 0:
            raise UsageError(f"overlay size must be 0 (the image's own) or a number of pixels, got {overlay_side}")
        self.out_dir = Path(out_dir)
        self.save = frozenset(save)
        self.overlay_format = overlay_format
        self.overlay_side = overlay_side
        self.rows: list[tuple[int, dict[str, Any]]] = []
        self.records: list[Record] = []
        self.journal = journal

    def restore(self, records: Iterable[Record]) -> None:
        """Take over the records of an earlier, interrupted run (their ``index`` set)."""
        for rec in records:
            self.records.append(rec)
            self.rows.append((rec.index, rec.row))

    def write(self, name: str, result: ImageResult) -> list[Path]:
        """Write the per-image files selected by ``save``, record the CSV row, then journal it."""
        written = self.write_files(name, result)
        self.record(name, result)
        return written

    def write_files(self, name: str, result: ImageResult) -> list[Path]:
        """The per-image files of ``result`` (safe to run for several images at once: each has its own)."""
        image = self._overlay_picture(result)
        if result.gradable or UNGRADABLE in self.save:
            seg = result.segmentation
            x0, y0, x1, y1 = (float(v) for v in np.asarray(seg.box).reshape(4))
            return self.write_images(name, seg.disc, seg.cup, image, seg.bounds(), (x0, y0, x1, y1))
        return self.write_ungradable(name, image, result.grade.reason)

    def _overlay_picture(self, result: ImageResult) -> np.ndarray:
        """The pixels the overlay is drawn from: the image as decoded for the model, or the whole
        picture read again when that was reduced well below the overlay's size (``--overlay-size 0``
        or larger than the model's input; a copy within :data:`DECODE_SIDE_SHARE` of the size is
        drawn as it is, never enlarged)."""
        h, w = result.segmentation.disc.shape[:2]
        need = max(h, w) if self.overlay_side == 0 else min(self.overlay_side, max(h, w))
        if "overlay" not in self.save or max(result.image.shape[:2]) >= DECODE_SIDE_SHARE * need:
            return result.image
        return read_image(result.path)

    def record(self, name: str, result: ImageResult) -> None:
        """Record the CSV row of ``result`` and journal it (after its files are written: a journalled
        image is complete; one caller at a time)."""
        row = self.add_row(result.index, name, result.path, result_fields(result), result.latency_ms)
        rec = Record(str(result.path), name, row, result.gradable, result.grade.reason, result.cdr,
                     result.latency_ms, dict(result.timings), result.index)
        self.records.append(rec)
        if self.journal is not None:
            self.journal.append(rec)

    def write_ungradable(self, name: str, image: np.ndarray | None, reason: str) -> list[Path]:
        """The files of an image that is not gradable: no masks or REFUGE map; the overlay (RGB
        uint8 [H,W,3] ``image``, needed for it only) has no contours and says why."""
        if "overlay" not in self.save:
            return []
        if image is None:
            raise ValueError(f"{name}: the overlay needs the image")
        path = self.out_dir / "overlay" / f"{name}.{self.overlay_format}"
        empty = np.zeros(image.shape[:2], bool)
        drawn = draw_contours(image, empty, empty, label=f"not gradable: {reason}", max_side=self.overlay_side)
        write_image(path, drawn)
        return [path, self._thumbnail(name, drawn, None)]

    def _thumbnail(self, name: str, drawn: np.ndarray, box: tuple[float, float, float, float] | None) -> Path:
        path = self.out_dir / THUMB_DIR / f"{name}.jpg"
        write_image(path, make_thumbnail(drawn, box))
        return path

    def write_images(self, name: str, disc: np.ndarray, cup: np.ndarray, image: np.ndarray | None,
                     bounds: tuple[int, int, int, int] | None = None,
                     box: tuple[float, float, float, float] | None = None) -> list[Path]:
        """masks/, refuge/ and overlay/ (+ thumb/) files of one image as selected by ``save`` (bool
        masks [H,W], empty outside ``bounds`` ``(row0, row1, col0, col1)`` when given; ``image``,
        RGB uint8 [H,W,3], is needed for the overlay only; ``box``, the disc box in original
        pixels, centres the thumbnail)."""
        written: list[Path] = []
        if "masks" in self.save:
            for kind, mask in (("disc", disc), ("cup", cup)):
                path = self.out_dir / "masks" / f"{name}_{kind}.png"
                atomic_write_bytes(path, encode_mask_png(mask))
                written.append(path)
        if "refuge" in self.save:
            path = self.out_dir / "refuge" / f"{name}.bmp"
            write_image(path, to_refuge_seg(disc, cup, bounds))
            written.append(path)
        if "overlay" in self.save:
            if image is None:
                raise ValueError(f"{name}: the overlay needs the image")
            path = self.out_dir / "overlay" / f"{name}.{self.overlay_format}"
            drawn = draw_contours(image, disc, cup, max_side=self.overlay_side, bounds=bounds)
            write_image(path, drawn)
            s = drawn.shape[1] / disc.shape[1]  # the overlay's scale (<= 1)
            thumb_box = None if box is None else (box[0] * s, box[1] * s, box[2] * s, box[3] * s)
            written += [path, self._thumbnail(name, drawn, thumb_box)]
        return written

    def add_row(self, index: int, name: str, file: str | os.PathLike[str], values: Mapping[str, Value],
                latency_ms: float) -> dict[str, Any]:
        """Record (and return) the results.csv row of input ``index`` from its field values
        (:mod:`rfnet.runtime.fields`); a CDR without a value is an empty cell."""
        row = {"name": name, "file": str(file), **format_fields(values), "latency_ms": f"{latency_ms:.3f}"}
        self.rows.append((index, row))
        return row

    def write_csv(self) -> Path | None:
        """results.csv sorted by input order (None when "csv" is not in ``save``)."""
        if "csv" not in self.save:
            return None
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        w.writeheader()
        for _, row in sorted(self.rows, key=lambda r: r[0]):
            w.writerow(row)
        path = self.out_dir / RESULTS_CSV
        atomic_write_text(path, buf.getvalue())
        return path

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.out_dir / SUMMARY_JSON
        atomic_write_json(path, summary)
        return path


def write_run_report(writer: OutputWriter) -> Path | None:
    """report.html beside results.csv (:func:`rfnet.common.report.write_report`); None, with a log
    line, when results.csv was not saved (the report is built from it) or the page cannot be written."""
    if "csv" not in writer.save:
        log.info("no report.html: results.csv was not saved (--save without csv)")
        return None
    try:
        path = write_report(writer.out_dir)
    except (OSError, ValueError) as exc:  # the results stay; only the page is missing
        log.warning("%s: report.html not written: %s", writer.out_dir, exc)
        return None
    log.info("report: %s", path)
    return path
