"""benchmarks/report_page.py: the generated run and the figures it prints (the browser part is
tested in tests/rfnet/common/test_report.py)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from rfnet.benchmarks.report_page import main, make_run
from rfnet.common.report import read_run


def test_generated_run_reads_as_an_infer_folder(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "run", 30)
    rows, summary, kind = read_run(folder)
    with open(folder / "results.csv", newline="") as fh:
        gradable = [r["gradable"] for r in csv.DictReader(fh)]
    assert kind == "infer" and len(rows) == 30 and gradable.count("0") == 3
    assert summary["model_info"]["referral_vcdr"] == 0.6 and (folder / "thumb" / "img000029.jpg").is_file()


def test_prints_size_and_build_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rows", "40"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("40 rows: report.html ") and " MB, written in " in out


def test_rejects_no_rows() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--rows", "0"])
    assert exc.value.code == 2
