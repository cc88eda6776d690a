"""Size and load time of the screening report (report.html) for a run of N images.

Builds a generated output folder of ``--rows`` images (results.csv, summary.json, one small
thumbnail per image, one in ten not gradable), writes its report.html with
:func:`rfnet.common.report.write_report`, and prints the build time and page size; with
``--browser`` it also opens the page in headless Chromium (Debian's ``chromium`` and the
``playwright`` package of the [dev] extra) and prints the navigation time, the rows shown and the
time of a sort by header click. Exit status: 0 measured, 2 bad arguments or no browser.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.imageio import write_image
from rfnet.common.report import write_report
from rfnet.runtime.outputs import CSV_COLUMNS

log = logging.getLogger(__name__)


def make_run(folder: Path, rows: int, seed: int = 0) -> Path:
    """A generated output folder of ``rows`` images, laid out as ``rfnet infer`` writes it."""
    rng = np.random.default_rng(seed)
    (folder / "thumb").mkdir(parents=True, exist_ok=True)
    write_image(folder / "thumb" / "_one.jpg", rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        for i in range(rows):
            name = f"img{i:06d}"
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(name=name, file=f"in/{name}.jpg", score=f"{rng.uniform(0.5, 1):.6f}", latency_ms="60.0")
            if i % 10:
                v = float(rng.uniform(0.2, 0.9))
                row.update(gradable="1", disc_found="1", vcdr=f"{v:.6f}", hcdr=f"{v:.6f}", refer=str(int(v >= 0.6)))
            else:
                row.update(gradable="0", reason="low_disc_score", message="disc score below the minimum")
            w.writerow(row)
            shutil.copyfile(folder / "thumb" / "_one.jpg", folder / "thumb" / f"{name}.jpg")
    (folder / "summary.json").write_text(json.dumps({
        "model": "screen.onnx", "input": "in/", "model_info": {"preset": "screen", "min_disc_score": 0.5,
                                                              "referral_vcdr": 0.6}}), encoding="utf-8")
    return folder


def in_browser(page_path: Path) -> dict[str, float]:
    """Navigation time, rows shown and one sort click of the page in headless Chromium."""
    from playwright.sync_api import sync_playwright  # the [dev] extra

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        nav = page.evaluate("() => performance.getEntriesByType('navigation')[0].duration")
        shown = page.eval_on_selector_all("#gradable-table tbody tr", "rs => rs.length")
        t0 = time.perf_counter()
        page.click("#gradable-table th[data-key='v']")
        page.eval_on_selector_all("#gradable-table tbody tr", "rs => rs.length")
        click_ms = (time.perf_counter() - t0) * 1000
        browser.close()
    return {"navigation_ms": float(nav), "rows_shown": float(shown), "sort_click_ms": click_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/report_page.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000, help="images in the generated run (default 10000)")
    p.add_argument("--browser", action="store_true", help="also load the page in headless Chromium")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if args.rows < 1:
        p.error("--rows must be at least 1")
    if args.browser and not (shutil.which("chromium") or shutil.which("chromium-browser")):
        log.error("--browser: no chromium on PATH (Debian: apt-get install chromium)")
        return ExitCode.USAGE
    with tempfile.TemporaryDirectory(prefix="rfnet_report_") as tmp:
        folder = make_run(Path(tmp) / "run", args.rows)
        t0 = time.perf_counter()
        page_path = write_report(folder)
        build_s = time.perf_counter() - t0
        print(f"{args.rows} rows: report.html {page_path.stat().st_size / 1e6:.2f} MB, written in {build_s:.2f} s")
        if args.browser:
            m = in_browser(page_path)
            print(f"headless Chromium: navigation {m['navigation_ms']:.0f} ms, {m['rows_shown']:.0f} rows shown, "
                  f"sort by vCDR click {m['sort_click_ms']:.0f} ms")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
