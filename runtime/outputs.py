"""Everything the runtime writes, atomically, and never over existing results without --overwrite.

Layout of the output folder::

    refuge/<name>.bmp                             REFUGE map: 0 cup, 128 rim, 255 background
    overlay/<name>.jpg                            contours (disc green, cup blue) on the image (.png on request)
    masks/<name>_disc.png, masks/<name>_cup.png   on request: 0/255 (1-bit PNG) at the original size
    results.csv                                   one row per processed image
    summary.json                                  run settings, timings, failures

By default each mask is written once, in the REFUGE map (it holds disc and cup); the separate
PNGs are ``--save masks`` (or ``all``). Overlays are JPEG (quality 95) unless PNG is asked for:
PNG-encoding a 3.6 MP photograph costs more than the light model itself (docs/benchmarks.md).
Every file goes through :mod:`rfnet.common.fileio` (temporary file + rename), so an
interrupted run never leaves a half-written image or table behind. ``runtime.writer`` runs an
:class:`OutputWriter` in a background thread, off the inference loop.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from rfnet.common.fileio import OutputExistsError, atomic_write_bytes, atomic_write_json, atomic_write_text
from rfnet.common.imageio import write_image
from rfnet.common.postprocess import Segmentation
from rfnet.common.viz import overlay
from rfnet.errors import UsageError
from runtime.pipeline import ImageResult

SAVE_CHOICES = ("masks", "refuge", "overlay", "csv")
#: What is written unless --save says otherwise: each mask once (the REFUGE map), overlay, table.
DEFAULT_SAVE = ("refuge", "overlay", "csv")
#: Overlay file formats; the first is the default.
OVERLAY_FORMATS = ("jpg", "png")
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"

#: results.csv columns. vcdr is REFUGE's (max column count ratio), vcdr_extent the
#: row-extent ratio; the disc box is in original pixels; latency_ms is the backend time of
#: the image's batch divided by the images in it.
CSV_COLUMNS = (
    "name",
    "file",
    "vcdr",
    "vcdr_extent",
    "hcdr",
    "area_cdr",
    "disc_x0",
    "disc_y0",
    "disc_x1",
    "disc_y1",
    "score",
    "disc_found",
    "cup_low_confidence",
    "latency_ms",
)


def parse_save(text: str) -> frozenset[str]:
    """``"masks,refuge"`` -> {"masks", "refuge"}; ``"all"`` -> every choice (UsageError, a ValueError, on unknown)."""
    items = {s.strip().lower() for s in text.split(",") if s.strip()}
    if items == {"all"}:
        return frozenset(SAVE_CHOICES)
    unknown = sorted(items - set(SAVE_CHOICES))
    if unknown or not items:
        raise UsageError(f"--save: unknown {unknown or 'empty list'}; choose from {','.join(SAVE_CHOICES)} or all")
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
    """Writes per-image files as results arrive and the tables at the end."""

    def __init__(self, out_dir: Path, save: Iterable[str], overlay_format: str = OVERLAY_FORMATS[0]) -> None:
        if overlay_format not in OVERLAY_FORMATS:
            raise UsageError(f"overlay format must be one of {OVERLAY_FORMATS}, got {overlay_format!r}")
        self.out_dir = Path(out_dir)
        self.save = frozenset(save)
        self.overlay_format = overlay_format
        self.rows: list[tuple[int, dict[str, Any]]] = []

    def write(self, name: str, result: ImageResult) -> list[Path]:
        """Write the per-image files selected by ``save`` and record the CSV row."""
        seg = result.segmentation
        written: list[Path] = []
        if "masks" in self.save:
            for kind, mask in (("disc", seg.disc), ("cup", seg.cup)):
                path = self.out_dir / "masks" / f"{name}_{kind}.png"
                _write_bilevel_png(path, mask)
                written.append(path)
        if "refuge" in self.save:
            path = self.out_dir / "refuge" / f"{name}.bmp"
            write_image(path, refuge_map(seg))
            written.append(path)
        if "overlay" in self.save:
            path = self.out_dir / "overlay" / f"{name}.{self.overlay_format}"
            write_image(path, overlay(result.image, seg.disc, seg.cup))
            written.append(path)
        box = [float(v) for v in np.asarray(seg.box, dtype=np.float64).reshape(4)]
        row = {
            "name": name,
            "file": str(result.path),
            "vcdr": _f(result.cdr["vcdr"]),
            "vcdr_extent": _f(result.cdr["vcdr_extent"]),
            "hcdr": _f(result.cdr["hcdr"]),
            "area_cdr": _f(result.cdr["area_cdr"]),
            "disc_x0": f"{box[0]:.2f}",
            "disc_y0": f"{box[1]:.2f}",
            "disc_x1": f"{box[2]:.2f}",
            "disc_y1": f"{box[3]:.2f}",
            "score": _f(seg.score),
            "disc_found": int(seg.found),
            "cup_low_confidence": int(seg.cup_fallback),
            "latency_ms": f"{result.latency_ms:.3f}",
        }
        self.rows.append((result.index, row))
        return written

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


def refuge_map(seg: Segmentation) -> np.ndarray:
    """``rfnet.common.metrics.to_refuge_seg(seg.disc, seg.cup)`` (uint8: 0 cup, 128 rim, 255
    background), touching only the segmentation's window."""
    y0, y1, x0, x1 = seg.bounds()
    out = np.full(seg.disc.shape, 255, dtype=np.uint8)
    win = out[y0:y1, x0:x1]
    win[seg.disc[y0:y1, x0:x1]] = 128
    win[seg.cup[y0:y1, x0:x1]] = 0
    return out


def _write_bilevel_png(path: Path, mask: np.ndarray) -> None:
    """A bool mask as a 1-bit PNG (reads back as 0/255 uint8), a few times faster to encode than 8-bit."""
    ok, encoded = cv2.imencode(".png", np.asarray(mask, dtype=bool).view(np.uint8) * np.uint8(255),
                               [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the mask as PNG")
    atomic_write_bytes(path, encoded.tobytes())


def _f(v: float) -> str:
    return f"{float(v):.6f}"
