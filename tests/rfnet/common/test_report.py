"""The screening report (rfnet.common.report): its page, checked in a real headless Chromium.

The browser tests need Debian's ``chromium`` (``make test`` installs it where it can) and the
``playwright`` package of the [dev] extra (driving that Chromium; no browser download); they are
skipped, with the reason, where either is missing. A screenshot of the page is kept in
``build/test-artefacts/report.png``.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.imageio import write_image
from rfnet.common.report import PAGE_ROWS, REPORT_HTML, ensure_thumbnails, read_run, render, write_report
from rfnet.runtime.outputs import CSV_COLUMNS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = Path(__file__).resolve().parents[3] / "build" / "test-artefacts"
EVIL = "<img src=x onerror=alert(1)>"


def _row(name: str, gradable: bool, vcdr: float | None, refer: int | None, reason: str = "", message: str = "") -> dict:
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(name=name, file=f"in/{name}.jpg", gradable="1" if gradable else "0", reason=reason, message=message,
               score="0.990000", disc_found="1" if gradable else "0", cup_low_confidence="0", latency_ms="1.0",
               disc_x0="40", disc_y0="40", disc_x1="80", disc_y1="80")
    if gradable:
        row.update(vcdr=f"{vcdr:.6f}", hcdr=f"{vcdr:.6f}", refer="" if refer is None else str(refer))
    return row


def _run_folder(folder: Path, rows: list[dict], overlays: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    (folder / "summary.json").write_text(json.dumps({
        "model": "models/screen.onnx", "created_utc": "2026-12-06T12:00:00+00:00", "input": "in/",
        "model_info": {"preset": "screen", "min_disc_score": 0.5, "referral_vcdr": 0.6, "vcdr_expert_scale": None},
        "settings": {"min_disc_score": 0.5, "threshold": 0.5}}))
    if overlays:
        rng = np.random.default_rng(0)
        for r in rows:
            write_image(folder / "overlay" / f"{r['name']}.jpg", rng.integers(0, 255, (120, 120, 3), dtype=np.uint8))
    return folder


def _small_run(tmp_path: Path) -> Path:
    rows = [_row("low", True, 0.35, 0), _row("high", True, 0.72, 1), _row("mid", True, 0.55, 0),
            _row("veryhigh", True, 0.81, 1), _row(EVIL, True, 0.45, 0),
            _row("dark", False, None, None, "image_too_dark", "image too dark to be a fundus photograph"),
            _row('quote"s', False, None, None, "no_colour", "grey-scale or red-free image")]
    folder = _run_folder(tmp_path / "run", rows)
    assert ensure_thumbnails(folder) == len(rows)
    return folder


def test_page_is_self_contained_escapes_names_and_counts(tmp_path: Path) -> None:
    folder = _small_run(tmp_path)
    page = write_report(folder).read_text(encoding="utf-8")
    assert EVIL not in page and "onerror=alert(1)>" not in page  # the name only travels as escaped JSON
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    rows, summary, kind = read_run(folder)
    assert kind == "infer" and len(rows) == 7 and rows[4].thumb == f"thumb/{EVIL}.jpg"
    assert "<dt>referred</dt><dd>2</dd>" in page and "<dt>gradable</dt><dd>5</dd>" in page
    assert "no_colour: 1" in page and "0.600" in page  # reasons counted, the referral threshold shown


def test_an_evaluation_folder_adds_the_scatter_and_the_roc(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    cols = ["name", "dataset", "vcdr_pred", "vcdr_gt", "gradable", "reason", "score", "label", "refer"]
    with open(folder / "per_image.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for i in range(12):
            w.writerow({"name": f"e{i}", "dataset": "rim-one-dl", "vcdr_pred": 0.3 + 0.04 * i, "vcdr_gt": 0.32 + 0.04 * i,
                        "gradable": 1, "reason": "", "score": 0.99, "label": int(i >= 6), "refer": ""})
    page = render(*read_run(folder), title="t")
    assert "predicted against true vCDR" in page and "ROC of the vCDR" in page and "AUC 1.000" in page


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; make test installs it where it can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def test_report_in_headless_chromium(tmp_path: Path, browser) -> None:
    """The DOM: counts, referred first then vCDR descending, the not-gradable section with reasons
    in words, a sort by clicking a header, the hostile name shown as text (no dialog, no extra
    element), and no request leaving the folder."""
    folder = _small_run(tmp_path)
    page_path = write_report(folder)
    page = browser.new_page()
    requests, dialogs = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    names = page.eval_on_selector_all("#gradable-table tbody tr", "rs => rs.map(r => r.getAttribute('data-name'))")
    assert names == ["veryhigh", "high", "mid", EVIL, "low"]
    assert page.eval_on_selector_all("#gradable-table tbody tr.refer", "rs => rs.length") == 2
    ungradable = page.eval_on_selector_all("#ungradable-table tbody tr", "rs => rs.map(r => r.innerText)")
    assert len(ungradable) == 2 and any("image too dark" in t for t in ungradable) and any('quote"s' in t for t in ungradable)
    assert page.inner_text("dl.counts").split() [:4] == ["images", "7", "gradable", "5"]
    page.click("#gradable-table th[data-key='v']")  # vCDR: descending first, then ascending
    page.click("#gradable-table th[data-key='v']")
    names = page.eval_on_selector_all("#gradable-table tbody tr", "rs => rs.map(r => r.getAttribute('data-name'))")
    assert names == ["low", EVIL, "mid", "high", "veryhigh"]
    evil_cell = page.eval_on_selector_all("#gradable-table tbody td", f"tds => tds.filter(t => t.textContent === {json.dumps(EVIL)}).length")
    assert evil_cell == 1 and page.eval_on_selector_all("img[src='x']", "e => e.length") == 0 and not dialogs
    page.wait_for_timeout(300)  # lazy thumbnails of the visible rows
    outside = [u for u in requests if not u.startswith(folder.as_uri()) and not u.startswith("data:")]
    assert not outside, outside
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "report.png"), full_page=True)
    page.close()


def test_ten_thousand_rows_are_paged(tmp_path: Path, browser) -> None:
    rng = np.random.default_rng(1)
    rows = [_row(f"img{i:05d}", i % 10 != 0, float(rng.uniform(0.2, 0.9)), int(i % 7 == 0)) if i % 10 else
            _row(f"img{i:05d}", False, None, None, "low_disc_score", "disc score below the minimum") for i in range(10_000)]
    folder = _run_folder(tmp_path / "big", rows, overlays=False)
    page_path = write_report(folder)
    page = browser.new_page()
    page.goto(page_path.as_uri())
    assert page.eval_on_selector_all("#gradable-table tbody tr", "rs => rs.length") == PAGE_ROWS
    assert "page 1 of 90" in page.inner_text(".pager[data-for='gradable-table']")
    page.click(".pager[data-for='gradable-table'] button:text('next')")
    assert "page 2 of 90" in page.inner_text(".pager[data-for='gradable-table']")
    assert (folder / REPORT_HTML).stat().st_size < 3_000_000
    page.close()
