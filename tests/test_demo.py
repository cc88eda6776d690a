"""demo.py (python -m demo) end to end with a given checkpoint (training is the train CLI's own tests' job)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from demo import main as demo_main  # noqa: E402
from tests.support.small_model import save_small_checkpoint  # noqa: E402


def test_demo_deploys_a_checkpoint_and_reports_where_results_are(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "small.pt"
    save_small_checkpoint(ckpt)
    out = tmp_path / "demo"
    rc = demo_main(["--out", str(out), "--checkpoint", str(ckpt), "--n-train", "1", "--n-val", "3"])
    assert rc == 0
    with open(out / "inference" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    summary = json.loads((out / "inference" / "summary.json").read_text())
    assert summary["backend"] == "onnxruntime" and summary["num_processed"] == 3
    printed = capsys.readouterr().out
    assert str(out / "inference" / "results.csv") in printed and "images/s" in printed
    assert f"gradable         {summary['gradability']['num_gradable']} of 3 images" in printed
    # A second run must not overwrite the results without --overwrite.
    assert demo_main(["--out", str(out), "--checkpoint", str(ckpt)]) == 2
