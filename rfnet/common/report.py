"""The screening report: one self-contained HTML page per output folder (torch-free).

``write_report(folder)`` reads what a run left in ``folder`` (``runtime/infer.py`` and
``rfnet.runtime.client``: results.csv + summary.json + overlay/; ``rfnet.evaluate``: per_image.csv +
summary.json + overlays/) and writes ``folder/report.html``:

* the counts (images, gradable, not gradable by reason, referred), the model and its thresholds
  (minimum disc score, referral vCDR), the run's date and settings;
* the gradable images in a table sorted by referral then vCDR (descending), re-sorted by
  clicking a column header, paged (100 rows a page) so 10,000 images stay usable; each row's
  thumbnail (``thumb/<name>.jpg``, a crop of the overlay around the disc, lazily loaded) opens
  the full overlay;
* the images that are not gradable in their own table, with the reason in words;
* a histogram of the vCDR over the gradable images, and, for an evaluation (ground truth known),
  predicted against true vCDR and the ROC curve of the vCDR where glaucoma labels exist (SVG).

Self-contained: no script, style or font from anywhere else; the only files it refers to are
the folder's own thumbnails and overlays, by relative links, and a Content-Security-Policy
forbids anything else. Every name and text from the data is escaped: the rows travel as JSON
in a ``<script type="application/json">`` element (``<`` written as ``\\u003c``) and are put on
the page with ``textContent``, never as markup.
"""
from __future__ import annotations

import csv
import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rfnet.common.fileio import atomic_write_text
from rfnet.common.imageio import ImageReadError, read_image, write_image
from rfnet.common.report_page import SCRIPT, STYLE, TEMPLATE

REPORT_HTML = "report.html"
THUMB_DIR = "thumb"
#: Long side of a thumbnail (pixels) and how much of the image around the disc box it shows.
THUMB_PX = 160
THUMB_CONTEXT = 2.5
PAGE_ROWS = 100


@dataclass(frozen=True)
class ReportRow:
    """One image as the report shows it (None: no value)."""

    name: str
    gradable: bool
    reason: str
    message: str
    vcdr: float | None
    vcdr_expert: float | None
    hcdr: float | None
    score: float | None
    refer: int | None
    vcdr_true: float | None = None
    label: int | None = None
    thumb: str = ""
    full: str = ""


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _int(v: Any) -> int | None:
    x = _num(v)
    return None if x is None else int(round(x))


def read_run(folder: Path) -> tuple[list[ReportRow], dict[str, Any], str]:
    """(rows, summary.json, kind) of an output folder; kind is "infer" or "evaluate".

    Raises:
        FileNotFoundError: the folder has neither results.csv nor per_image.csv.
    """
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if (folder / "results.csv").is_file():
        kind, table, overlays = "infer", folder / "results.csv", folder / "overlay"
    elif (folder / "per_image.csv").is_file():
        kind, table, overlays = "evaluate", folder / "per_image.csv", folder / "overlays"
    else:
        raise FileNotFoundError(f"{folder}: no results.csv or per_image.csv: not an output folder of "
                                "runtime/infer.py, rfnet.runtime.client or rfnet.evaluate")
    with open(table, newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))
    rows = []
    for r in raw:
        name = r.get("name", "")
        full = next((f"{overlays.name}/{name}{ext}" for ext in (".jpg", ".png") if (overlays / f"{name}{ext}").is_file()), "")
        thumb = f"{THUMB_DIR}/{name}.jpg" if (folder / THUMB_DIR / f"{name}.jpg").is_file() else ""
        pred = "vcdr" if kind == "infer" else "vcdr_pred"
        rows.append(ReportRow(
            name=name, gradable=str(r.get("gradable", "1")) in ("1", "True", "true"), reason=r.get("reason", "") or "",
            message=r.get("message", "") or "", vcdr=_num(r.get(pred)),
            vcdr_expert=_num(r.get("vcdr_expert" if kind == "infer" else "vcdr_expert_pred")),
            hcdr=_num(r.get("hcdr" if kind == "infer" else "hcdr_pred")), score=_num(r.get("score")),
            refer=_int(r.get("refer")), vcdr_true=_num(r.get("vcdr_gt")), label=_int(r.get("label")),
            thumb=thumb, full=full))
    return rows, summary, kind


def make_thumbnail(image: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """A thumbnail (long side :data:`THUMB_PX`) of an overlay: around the disc box (x0, y0, x1, y1,
    original pixels) when there is one, else the whole image."""
    h, w = image.shape[:2]
    if box is not None and box[2] > box[0] and box[3] > box[1]:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(box[2] - box[0], box[3] - box[1]) * THUMB_CONTEXT / 2
        x0, x1 = int(max(0, cx - half)), int(min(w, cx + half))
        y0, y1 = int(max(0, cy - half)), int(min(h, cy + half))
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            image = image[y0:y1, x0:x1]
    scale = THUMB_PX / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def ensure_thumbnails(folder: Path) -> int:
    """Write the missing ``thumb/<name>.jpg`` of a folder from its overlays (results.csv's disc box
    where it has one); returns how many were written. For folders written before thumbnails existed."""
    rows, _, kind = read_run(folder)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    if kind == "infer":
        with open(folder / "results.csv", newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                b = [_num(r.get(k)) for k in ("disc_x0", "disc_y0", "disc_x1", "disc_y1")]
                if all(v is not None for v in b):
                    boxes[r["name"]] = tuple(b)  # type: ignore[assignment]
    n = 0
    for row in rows:
        if row.thumb or not row.full:
            continue
        try:
            image = read_image(folder / row.full)
        except ImageReadError:
            continue
        if kind == "evaluate":  # prediction | ground truth side by side: the prediction half
            image = image[:, : image.shape[1] // 2]
        write_image(folder / THUMB_DIR / f"{row.name}.jpg", make_thumbnail(image, boxes.get(row.name)))
        n += 1
    return n


def _svg_frame(body: str, title: str, xlabel: str, ylabel: str, ticks: bool = True) -> str:
    """The plot frame ([0,1] on both axes, tick labels at 0, 0.5 and 1 unless ``ticks`` is off) round ``body``."""
    marks = "".join(f'<text x="{_xy(t, 0)[0]:.0f}" y="222" text-anchor="middle" font-size="9">{t:g}</text>'
                    f'<text x="36" y="{_xy(0, t)[1] + 3:.0f}" text-anchor="end" font-size="9">{t:g}</text>'
                    for t in (0, 0.5, 1)) if ticks else ""
    return (f'<figure><svg viewBox="0 0 320 240" width="320" height="240" role="img" aria-label="{html.escape(title)}">'
            '<rect x="40" y="10" width="270" height="200" fill="none" stroke="#999"/>'
            f'{marks}{body}<text x="175" y="235" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>'
            f'<text x="12" y="110" text-anchor="middle" font-size="11" transform="rotate(-90 12 110)">'
            f'{html.escape(ylabel)}</text></svg><figcaption>{html.escape(title)}</figcaption></figure>')


def _xy(x: float, y: float) -> tuple[float, float]:
    """[0,1] x [0,1] -> the plot frame's pixels."""
    return 40 + 270 * x, 210 - 200 * y


def histogram_svg(values: list[float], bins: int = 20) -> str:
    counts, _ = np.histogram(np.clip(values, 0, 1), bins=bins, range=(0, 1))
    top = max(1, int(counts.max()))
    bars = []
    for i, c in enumerate(counts):
        x0, y0 = _xy(i / bins, c / top)
        bars.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{270 / bins - 1:.1f}" height="{210 - y0:.1f}" '
                    f'fill="#4a7fb5"><title>{i / bins:.2f}-{(i + 1) / bins:.2f}: {c}</title></rect>')
    axis = "".join(f'<text x="{_xy(t, 0)[0]:.0f}" y="222" text-anchor="middle" font-size="9">{t:.1f}</text>'
                   for t in (0, 0.25, 0.5, 0.75, 1.0))
    return _svg_frame("".join(bars) + axis + f'<text x="44" y="22" font-size="9">max {top}</text>',
                      f"vCDR of the {len(values)} gradable images", "vCDR", "images", ticks=False)


def scatter_svg(pred: list[float], true: list[float]) -> str:
    pts = "".join(f'<circle cx="{_xy(t, p)[0]:.1f}" cy="{_xy(t, p)[1]:.1f}" r="2" fill="#b5524a"/>'
                  for p, t in zip(pred, true))
    diag = f'<line x1="{_xy(0, 0)[0]}" y1="{_xy(0, 0)[1]}" x2="{_xy(1, 1)[0]}" y2="{_xy(1, 1)[1]}" stroke="#999"/>'
    mae = float(np.mean(np.abs(np.subtract(pred, true)))) if pred else math.nan
    return _svg_frame(diag + pts, f"predicted against true vCDR ({len(pred)} gradable, MAE {mae:.3f})",
                      "true vCDR (ground-truth masks)", "predicted vCDR")


def roc_svg(scores: list[float], labels: list[int]) -> str:
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.int64)
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = [(s[y == 1] >= t).mean() for t in thresholds]
    fpr = [(s[y == 0] >= t).mean() for t in thresholds]
    xs, ys = np.array(fpr + [1.0]), np.array(tpr + [1.0])
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))  # trapezoids (np.trapz is gone in numpy 2.4)
    line = " ".join(f"{_xy(f, t)[0]:.1f},{_xy(f, t)[1]:.1f}" for f, t in zip(fpr + [1.0], tpr + [1.0]))
    diag = f'<line x1="{_xy(0, 0)[0]}" y1="{_xy(0, 0)[1]}" x2="{_xy(1, 1)[0]}" y2="{_xy(1, 1)[1]}" stroke="#ccc"/>'
    return _svg_frame(diag + f'<polyline points="{line}" fill="none" stroke="#2e7d32" stroke-width="2"/>',
                      f"ROC of the vCDR as glaucoma risk (AUC {area:.3f}, {int(y.sum())} glaucoma, "
                      f"{int((1 - y).sum())} normal)", "1 - specificity", "sensitivity")


def _model_lines(summary: dict[str, Any], kind: str) -> list[tuple[str, str]]:
    info = summary.get("model_info") or {}
    settings = summary.get("settings") or {}
    min_score = settings.get("min_disc_score", summary.get("min_disc_score", info.get("min_disc_score")))
    referral = info.get("referral_vcdr")
    lines = [("model", str(summary.get("model") or summary.get("checkpoint") or "")),
             ("preset", str(info.get("preset") or summary.get("preset") or "")),
             ("minimum disc score", "" if min_score is None else f"{float(min_score):.3f}"),
             ("referral threshold (vCDR)", "none: the model has no referral threshold" if referral is None
              else f"{float(referral):.3f}" + (" on the experts' scale" if info.get("vcdr_expert_scale") else "")),
             ("run", f"{kind}, {summary.get('created_utc') or 'date not recorded'}"),
             ("input", _text(summary.get("input") or summary.get("data_root") or summary.get("data") or ""))]
    if settings:
        lines.append(("settings", ", ".join(f"{k} {v}" for k, v in sorted(settings.items()))))
    return lines


def _text(value: Any) -> str:
    """A summary value as one line: lists joined with "; "."""
    return "; ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _counts(rows: list[ReportRow]) -> list[tuple[str, str]]:
    reasons = Counter(r.reason for r in rows if not r.gradable)
    out = [("images", str(len(rows))), ("gradable", str(sum(r.gradable for r in rows))),
           ("not gradable", str(sum(reasons.values())) + (" (" + ", ".join(f"{k}: {v}" for k, v in
                                                                           sorted(reasons.items())) + ")" if reasons else "")),
           ("referred", str(sum(1 for r in rows if r.refer == 1)))]
    return out


def _dl(items: list[tuple[str, str]], cls: str) -> str:
    return f'<dl class="{cls}">' + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items) + "</dl>"


def render(rows: list[ReportRow], summary: dict[str, Any], kind: str, title: str) -> str:
    """The page (a string) for ``rows``; see the module docstring."""
    gradable = [r for r in rows if r.gradable and r.vcdr is not None]
    figures = [histogram_svg([r.vcdr for r in gradable if r.vcdr is not None])] if gradable else []
    truth = [r for r in gradable if r.vcdr_true is not None]
    if truth:
        figures.append(scatter_svg([r.vcdr for r in truth if r.vcdr is not None], [r.vcdr_true for r in truth if r.vcdr_true is not None]))
    labelled = [r for r in gradable if r.label in (0, 1)]
    if len({r.label for r in labelled}) == 2:
        figures.append(roc_svg([r.vcdr_expert if r.vcdr_expert is not None else r.vcdr for r in labelled],  # type: ignore[misc]
                               [int(r.label) for r in labelled]))  # type: ignore[arg-type]
    data = [{"n": r.name, "g": int(r.gradable), "why": r.reason, "msg": r.message, "v": r.vcdr, "ve": r.vcdr_expert,
             "h": r.hcdr, "s": r.score, "ref": r.refer, "t": r.thumb, "f": r.full} for r in rows]
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e")
    payload = payload.replace("&", "\\u0026")
    page = TEMPLATE
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    subs = {
        "TITLE": html.escape(title), "MADE": html.escape(made),
        "COUNTS": _dl(_counts(rows), "counts"), "MODEL": _dl(_model_lines(summary, kind), "model"),
        "FIGURES": "".join(figures) or "<p>No gradable image: no figure.</p>",
        "STYLE": STYLE,
        "SCRIPT": SCRIPT.replace("__PAGE_ROWS__", str(PAGE_ROWS)),
        "DATA": payload,
    }
    # one pass: a value that happens to contain "{{...}}" is not substituted again
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: subs[m.group(1)], page)


def write_report(folder: str | Path, title: str | None = None) -> Path:
    """Write ``folder/report.html`` (atomically) from the run in ``folder``; its path."""
    folder = Path(folder)
    rows, summary, kind = read_run(folder)
    path = folder / REPORT_HTML
    atomic_write_text(path, render(rows, summary, kind, title or f"Screening report: {folder.name}"))
    return path
