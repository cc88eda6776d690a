"""runtime/infer.py killed mid-folder (SIGKILL, a real subprocess) and rerun with --resume: the
rest is processed, nothing finished is recomputed or duplicated."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rfnet.runtime.infer import main
from rfnet.runtime.journal import JOURNAL, read_journal

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 12


def slow_variant(src: Path, dst: Path, matmuls: int = 300) -> Path:
    """The contract model plus a chain of 256 x 256 MatMuls fed by the image and added (times 0)
    to the scores: the same outputs, about 0.1 s per image on one thread (2-core CPU), so a run over a
    dozen images lasts long enough to be killed in the middle."""
    model = onnx.load(str(src))
    g = model.graph
    rng = np.random.default_rng(0)
    g.initializer.extend([
        numpy_helper.from_array(np.full((256, 256), 1.0 / 256, np.float32), "slow_seed"),
        numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), "slow_w"),
        numpy_helper.from_array(np.array(0.0, np.float32), "slow_zero"),
    ])
    for node in g.node:  # the scores Expand now writes scores_raw
        node.output[:] = ["scores_raw" if o == "scores" else o for o in node.output]
    nodes = [helper.make_node("ReduceMax", ["image"], ["slow_x"], keepdims=0),
             helper.make_node("Mul", ["slow_x", "slow_seed"], ["slow_0"])]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"slow_{i}", "slow_w"], [f"slow_{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", [f"slow_{matmuls}"], ["slow_sum"], keepdims=0),
              helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nil"]),
              helper.make_node("Add", ["scores_raw", "slow_nil"], ["scores"])]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def _journal_lines(out: Path) -> int:
    try:
        return (out / JOURNAL).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def folder(tmp_path: Path, contract) -> Path:
    specs = tuple((f"im_{i:02d}.png", 280 + 4 * i, 300, 70 + 10 * i) for i in range(N_IMAGES))
    contract.write_images(tmp_path / "images", specs=specs)
    return tmp_path / "images"


def test_killed_run_resumes_without_recomputing_or_duplicating(contract_onnx: Path, folder: Path,
                                                                tmp_path: Path) -> None:
    model = slow_variant(contract_onnx, tmp_path / "slow.onnx")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rfnet.runtime.infer", "--model", str(model), "--input", str(folder), "--output", str(out),
           "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _journal_lines(out) < 1 + 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == -signal.SIGKILL, stderr  # killed, not finished
    _, done = read_journal(out)
    assert 3 <= len(done) < N_IMAGES, len(done)
    assert not (out / "results.csv").exists()  # the tables are written at the end
    # the finished images' files, to see that the resumed run leaves them alone
    stamps = {r.name: (out / "refuge" / f"{r.name}.bmp").stat().st_mtime_ns for r in done}

    # a plain rerun refuses the folder; a resume with other settings too, touching nothing
    assert main(cmd[3:]) == 2
    assert main([*cmd[3:], "--resume", "--threshold", "0.4"]) == 2
    assert not (out / "results.csv").exists()

    assert main([*cmd[3:], "--resume"]) == 0
    rows = _rows(out / "results.csv")
    assert [r["name"] for r in rows] == [f"im_{i:02d}" for i in range(N_IMAGES)]  # each image once, in order
    assert all(r["gradable"] == "1" and abs(float(r["vcdr"]) - 0.48) < 0.05 for r in rows)
    for name, ns in stamps.items():
        assert (out / "refuge" / f"{name}.bmp").stat().st_mtime_ns == ns, f"{name} was recomputed"
    _, records = read_journal(out)
    assert sorted(r.name for r in records) == [r["name"] for r in rows]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["num_processed"], summary["num_resumed"], summary["num_failed"]) == (N_IMAGES, len(done), 0)
    assert summary["gradability"]["num_gradable"] == N_IMAGES
    assert summary["cdr"]["vcdr"]["mean"] == pytest.approx(np.mean([float(r["vcdr"]) for r in rows]), abs=1e-6)

    # resuming a finished run does nothing more and changes no row
    before = (out / "results.csv").read_bytes()
    assert main([*cmd[3:], "--resume"]) == 0
    assert (out / "results.csv").read_bytes() == before


def test_a_torn_last_journal_line_is_recomputed(contract_onnx: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--model", str(contract_onnx), "--input", str(folder), "--output", str(out), "--no-progress"]
    assert main(args) == 0
    journal = out / JOURNAL
    lines = journal.read_bytes().split(b"\n")
    # as if killed while writing the 5th record: 4 whole records and half of the 5th
    journal.write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][: len(lines[5]) // 2])
    (out / "results.csv").unlink()
    assert len(read_journal(out)[1]) == 4
    assert main([*args, "--resume"]) == 0
    assert [r["name"] for r in _rows(out / "results.csv")] == [f"im_{i:02d}" for i in range(N_IMAGES)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_resumed"] == 4 and summary["num_processed"] == N_IMAGES
    assert len(read_journal(out)[1]) == N_IMAGES


def test_resume_without_a_journal_starts_afresh(contract_onnx: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    assert main(["--model", str(contract_onnx), "--input", str(folder), "--output", str(out), "--resume",
                 "--no-progress"]) == 0
    assert len(_rows(out / "results.csv")) == N_IMAGES
