"""benchmarks/bench.py end to end on the contract ONNX model and a generated data set."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rfnet.benchmarks.bench import main
from rfnet.benchmarks.measure import PAPER_FPS

FAST = ["--warmup", "1", "--iterations", "3", "--no-progress"]


def _run(tmp_path: Path, data: Path, *models: Path | str, extra: list[str] | None = None, out: str = "out") -> tuple[int, dict]:
    argv = [a for m in models for a in ("--model", str(m))] + ["--data", str(data), "--out", str(tmp_path / out)]
    rc = main(argv + FAST + (extra or []))
    report_path = tmp_path / out / "report.json"
    return rc, json.loads(report_path.read_text()) if report_path.is_file() else {}


def _result(report: dict, name: str, runner: str = "onnxruntime-cpu") -> dict:
    matches = [r for r in report["results"] if r["model_name"] == name and r["runner"] == runner]
    assert len(matches) == 1, [r["id"] for r in report["results"]]
    return matches[0]


def test_report_files_and_fields(tmp_path: Path, bench_models, bench_data: Path,
                                 monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    rc, rep = _run(tmp_path, bench_data, bench_models.ref, bench_models.int8, extra=["--batch-sizes", "1,2", "--threads", "1"])
    assert rc == 0
    out = tmp_path / "out"
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "| model | backend | precision | end-to-end ms |" in md
    assert "ref_int8.onnx | onnxruntime-cpu | int8 |" in md
    assert "All parity checks held" in md
    assert "- Machine's CPU time during the run: " in md  # a shared machine's figures say so
    # Without matplotlib (a runtime-only install) the figure is left out, the rest is written.
    from rfnet.benchmarks.report import write_reports

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    paths = write_reports(tmp_path / "no_mpl", rep)
    assert sorted(paths) == ["json", "md"] and all(p.is_file() for p in paths.values())
    assert not (tmp_path / "no_mpl" / "report.png").exists() and "report.png not written" in caplog.text

    env = rep["environment"]
    assert env["cpu_model"] and env["cpu_count"] >= 1 and env["threads_requested"] == 1
    assert "onnxruntime" in env["libraries"] and "numpy" in env["libraries"]
    assert rep["machine_load"] is None or 0 <= rep["machine_load"]["own"] <= 1
    assert rep["baseline"]["fps"] == PAPER_FPS and rep["baseline"]["latency_s"] == 0.244
    assert rep["data"]["images"] == 4

    ref = _result(rep, "ref.onnx")
    assert ref["is_reference"] and ref["precision"] == "fp32" and ref["status"] == "ok"
    e2e = ref["end_to_end"]
    assert e2e["images"] == 4 and e2e["failed_images"] == 0
    lat = e2e["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert e2e["fps"] == pytest.approx(1000.0 / lat["mean"], rel=1e-9)
    assert e2e["speedup_vs_paper"] == pytest.approx(e2e["fps"] / 4.1, rel=1e-9)
    assert set(e2e["stages_ms"]) == {"decode", "preprocess", "model", "postprocess", "cdr"}
    # per-image total = sum of the stages, so the stage means add up to the total mean
    assert sum(s["mean"] for s in e2e["stages_ms"].values()) == pytest.approx(lat["mean"], rel=1e-6)
    for b in ("1", "2"):
        mo = ref["model_only"][b]
        assert mo["status"] == "ok" and mo["batch_size"] == int(b) and mo["iterations"] == 3
        assert mo["latency_ms"]["n"] == 3 and mo["latency_ms"]["p50"] > 0
        assert mo["latency_ms_per_image"]["mean"] == pytest.approx(mo["latency_ms"]["mean"] / int(b), rel=1e-9)
        assert mo["throughput_fps"] == pytest.approx(int(b) * 1000.0 / mo["latency_ms"]["mean"], rel=1e-9)
        assert mo["speedup_vs_paper"] == pytest.approx(mo["throughput_fps"] / 4.1, rel=1e-9)
        pipe = ref["pipeline"][b]
        assert pipe["status"] == "ok" and pipe["images"] == 4 and pipe["failed_images"] == 0
        assert pipe["throughput_fps"] == pytest.approx(4 / pipe["wall_s"], rel=1e-9) and pipe["outputs"] == "none"
        written = ref["pipeline_outputs"][b]  # the same with the runtime's default files written
        assert written["status"] == "ok" and written["images"] == 4 and written["failed_images"] == 0
        assert written["outputs"] == "refuge,overlay,csv" and written["throughput_fps"] > 0
    mem = ref["memory"]
    assert mem["peak_rss_mb"] > 10 and mem["peak_rss_mb"] >= mem["rss_before_mb"] - 1.0
    assert mem["gpu_peak_mb"] is None or mem["gpu_peak_mb"] >= 0

    # The generated ground truth is what the contract model draws: high Dice.
    acc = ref["accuracy"]
    assert acc["dice_disc"] > 0.95 and acc["dice_cup"] > 0.9 and acc["images_scored"] == 4

    int8 = _result(rep, "ref_int8.onnx")
    assert int8["precision"] == "int8"  # from the rfnet.precision metadata
    assert int8["accuracy"]["dice_disc"] == pytest.approx(acc["dice_disc"], abs=1e-12)
    assert int8["accuracy"]["dice_difference_vs_reference"] == {"disc": 0.0, "cup": 0.0}
    assert int8["accuracy"]["agreement_vs_reference"]["disc"] == 1.0
    assert int8["accuracy"]["agreement_vs_reference"]["cup"] == 1.0
    assert int8["parity"] == {**int8["parity"], "checked": True, "passed": True, "max_abs_dice_difference": 0.01}
    assert rep["parity"]["passed"] is True

    # No CUDA provider here: the CUDA runner is listed as not run, with a reason and no numbers.
    cuda = _result(rep, "ref.onnx", "onnxruntime-cuda")
    if cuda["status"] == "not run":
        assert "CUDAExecutionProvider" in cuda["reason"]
        assert "end_to_end" not in cuda and "model_only" not in cuda
        assert cuda["id"] in rep["parity"]["not_run"]


@pytest.mark.parametrize("broken", ["zero", "shift"])
def test_broken_model_fails_parity(tmp_path: Path, bench_models, bench_data: Path, broken: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = getattr(bench_models, broken)
    rc, rep = _run(tmp_path, bench_data, model, extra=["--reference", str(bench_models.ref),
                                                      "--backends", "onnxruntime-cpu"])
    assert rc == 1
    res = _result(rep, model.name)
    assert res["parity"]["passed"] is False and res["parity"]["failures"]
    assert rep["parity"]["passed"] is False and rep["parity"]["failed"][0]["id"] == res["id"]
    ref_dice = rep["reference"]["dice_disc"]
    assert ref_dice > 0.95
    assert res["accuracy"]["dice_disc"] < ref_dice - 0.05
    if broken == "zero":  # empty masks: Dice 0 against the ground truth, agreement 0
        assert res["accuracy"]["dice_disc"] == 0.0 and res["accuracy"]["agreement_vs_reference"]["disc"] == 0.0
    assert "parity FAILED" in capsys.readouterr().err
    assert "**Parity FAILED:**" in (tmp_path / "out" / "report.md").read_text()


def test_copy_of_reference_passes(tmp_path: Path, bench_models, bench_data: Path) -> None:
    rc, rep = _run(tmp_path, bench_data, bench_models.copy, extra=["--reference", str(bench_models.ref),
                                                                  "--backends", "onnxruntime-cpu"])
    assert rc == 0
    res = _result(rep, "copy.onnx")
    assert res["parity"]["passed"] is True and not res.get("is_reference")
    assert rep["reference"]["in_results"] is False


def test_agreement_threshold_is_enforced(tmp_path: Path, bench_models, bench_data: Path) -> None:
    # A tiny Dice tolerance cannot be met by a shifted model whose Dice is far off; but an
    # agreement floor alone must also fail it when the Dice tolerance is wide open.
    rc, rep = _run(tmp_path, bench_data, bench_models.shift,
                   extra=["--reference", str(bench_models.ref), "--backends", "onnxruntime-cpu",
                          "--max-dice-drop-fp32", "1.0", "--min-agreement-fp32", "0.9"])
    assert rc == 1
    fails = _result(rep, "broken_shift.onnx")["parity"]["failures"]
    assert any("agreement" in f for f in fails) and not any("|difference|" in f for f in fails)


def test_fixed_batch_model_reports_batch_not_run(tmp_path: Path, bench_models, bench_data: Path) -> None:
    rc, rep = _run(tmp_path, bench_data, bench_models.fixed1,
                   extra=["--batch-sizes", "1,4", "--backends", "onnxruntime-cpu"])
    assert rc == 0
    mo = _result(rep, "fixed1.onnx")["model_only"]
    assert mo["1"]["status"] == "ok"
    assert mo["4"] == {"status": "not run", "reason": "the model has a fixed batch size of 1"}
    assert _result(rep, "fixed1.onnx")["pipeline"]["4"]["status"] == "not run"


def test_usage_errors(tmp_path: Path, bench_models, bench_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data", str(bench_data), "--no-progress"]
    assert main(["--model", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o1")] + base) == 2
    assert "missing.onnx: model file not found" in capsys.readouterr().err
    bad = tmp_path / "model.xyz"
    bad.write_bytes(b"x")
    assert main(["--model", str(bad), "--out", str(tmp_path / "o2")] + base) == 2
    assert "cannot tell the model type" in capsys.readouterr().err
    assert main(["--model", str(bench_models.ref), "--out", str(tmp_path / "o3"), "--backends", "cuda-magic"] + base) == 2
    assert main(["--model", str(bench_models.ref), "--out", str(tmp_path / "o4"), "--batch-sizes", "0"] + base) == 2
    assert main(["--model", str(bench_models.ref), "--out", str(tmp_path / "o5"), "--data", str(tmp_path / "nodata")]) == 2
    assert "cannot read the folder data set" in capsys.readouterr().err
    # a non-empty --out is refused without --overwrite, and nothing in it is touched
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["--model", str(bench_models.ref), "--out", str(out), "--backends", "onnxruntime-cpu"] + base + FAST
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err and not (out / "report.json").exists()
    assert main(argv + ["--overwrite"]) == 0
    assert (out / "report.json").is_file() and (out / "keep.txt").read_text() == "mine"
