"""The ``rfnet`` command (rfnet/__main__.py): verbs listed, each verb is its module's main."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from rfnet.__main__ import VERBS, main
from rfnet.runtime.infer import main as infer_main


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k != "latency_ms"} for r in csv.DictReader(fh)]


def test_help_lists_every_verb_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("train", "evaluate", "export", "quantize", "build", "infer", "serve", "client", "bench", "demo",
                 "summary", "report"):
        assert any(line.split()[:1] == [verb] for line in out.splitlines()), verb
    assert main(["frobnicate"]) == 2 and "unknown verb 'frobnicate'" in capsys.readouterr().err


def test_the_installed_command_runs_without_torch_for_the_runtime() -> None:
    """The console script of the installed package (pip install -e . puts it beside the interpreter)."""
    exe = Path(sys.executable).with_name("rfnet")
    if not exe.is_file():
        pytest.skip(f"no rfnet console script beside {sys.executable}: the package is not installed in this venv")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and all(v in res.stdout for v in VERBS)


def test_rfnet_infer_equals_python_m_runtime_infer(contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    args = ["--model", str(contract_onnx), "--input", str(image_dir), "--no-progress", "--no-report"]
    assert main(["infer", *args, "--output", str(tmp_path / "a")]) == 0
    assert infer_main([*args, "--output", str(tmp_path / "b")]) == 0
    assert _rows(tmp_path / "a" / "results.csv") == _rows(tmp_path / "b" / "results.csv")


def test_rfnet_infer_equals_the_checkout_forms(contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    """In a checkout, ``python -m runtime.infer`` and ``python runtime/infer.py`` still run (the folder
    installs as rfnet.runtime) and give the rows ``rfnet infer`` gives."""
    repo = Path(__file__).resolve().parents[2]
    args = ["--model", str(contract_onnx), "--input", str(image_dir), "--no-progress", "--no-report"]
    assert main(["infer", *args, "--output", str(tmp_path / "a")]) == 0
    for out, form in (("m", ["-m", "runtime.infer"]), ("script", [str(repo / "runtime" / "infer.py")])):
        res = subprocess.run([sys.executable, *form, *args, "--output", str(tmp_path / out)], cwd=repo,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert _rows(tmp_path / out / "results.csv") == _rows(tmp_path / "a" / "results.csv"), form
