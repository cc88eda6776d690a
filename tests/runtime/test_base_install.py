"""`pip install .` is the torch-free runtime: the base wheel, installed into a fresh virtual
environment, pulls no torch, installs no top-level name but ``rfnet`` and runs ``rfnet infer`` on
an ONNX model.

The test builds the project's wheel from a copy of the sources, creates a venv without pip,
installs the wheel with the test interpreter's pip (``pip --python``) from local wheels only
(``--no-index``: tests use no network) and runs the installed ``rfnet`` console script with no
path leading back to the checkout.

The dependency wheels come from ``$RFNET_WHEELHOUSE`` or ``<venv running the tests>/wheelhouse``,
which ``make test`` fills (``make wheelhouse``: ``pip download`` of the base install's
requirements, from pip's cache after the install). Without them the test is skipped and says so.
Measured cost on the 2-core development machine (nice 19, another job running): 6.6 s (wheel
about 1 s, install about 5 s -- mostly unpacking OpenCV and ONNX Runtime --, the runtime on 4
images under 1 s); ``make wheelhouse`` itself took 3 s (106 MB of wheels).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.wheel import build_wheel, run_clean, top_level_names

#: What the base install must not bring (they belong to the [train] / [export] extras).
EXTRAS_ONLY = {"torch", "torchvision", "matplotlib", "onnx", "onnxsim", "onnxconverter-common", "polygraphy"}


def _wheelhouse() -> Path:
    path = Path(os.environ.get("RFNET_WHEELHOUSE") or Path(sys.prefix) / "wheelhouse")
    if not any(path.glob("*.whl")):
        pytest.skip(f"no dependency wheels in {path}: run `make wheelhouse` (make test does) or set "
                    f"RFNET_WHEELHOUSE to a folder filled by `pip download --dest DIR .`")
    return path


def test_base_wheel_runs_the_runtime_without_torch(tmp_path: Path, contract_onnx: Path, image_dir: Path) -> None:
    wheelhouse = _wheelhouse()
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    assert run_clean([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    python = str(venv / "bin" / "python")
    proc = run_clean([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index",
                 "--find-links", str(wheelhouse), str(wheel)])
    assert proc.returncode == 0, proc.stderr

    listing = run_clean([python, "-c", "import importlib.metadata as m, json; "
                    "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"], cwd=tmp_path)
    installed = set(json.loads(listing.stdout))
    assert {"rfnet-trt", "numpy", "opencv-python-headless", "onnxruntime", "tqdm"} <= installed
    assert not installed & EXTRAS_ONLY, installed

    # the distribution's top-level names are the project's own (no generic `runtime` or `export`)
    files = run_clean([python, "-c", "import importlib.metadata as m; "
                       "print('\\n'.join(str(f) for f in m.distribution('rfnet-trt').files))"], cwd=tmp_path).stdout.split()
    assert top_level_names(files) == {"rfnet"}, sorted(top_level_names(files))

    # the installed console script, run away from the checkout: its verbs, then a run
    usage = run_clean([str(venv / "bin" / "rfnet"), "--help"], cwd=tmp_path)
    assert usage.returncode == 0 and all(f"  {verb} " in usage.stdout for verb in ("infer", "build", "train", "serve"))
    out = tmp_path / "out"
    proc = run_clean([str(venv / "bin" / "rfnet"), "infer", "--model", str(contract_onnx), "--input", str(image_dir), "--output", str(out),
                 "--batch", "2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processed"] == 4 and summary["num_failed"] == 0 and summary["backend"] == "onnxruntime"
    assert len(list((out / "refuge").glob("*.bmp"))) == 4 and len(list((out / "overlay").glob("*.jpg"))) == 4
    # and the log went through its one line per stage (no progress-bar fragments in a pipe)
    assert "\r" not in proc.stderr and "images processed" in proc.stderr
