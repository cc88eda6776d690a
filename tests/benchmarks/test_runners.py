"""Runner selection, TensorRT / CUDA not-run reasons, and the PyTorch runner."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rfnet.benchmarks.bench import main
from rfnet.benchmarks.runners import (
    TORCH_RUNNERS,
    NotRunError,
    RunnerSpec,
    model_kind,
    open_runner,
    reference_runner,
    runners_for,
)


def test_model_kind_and_runners() -> None:
    assert model_kind("a/b.onnx") == "onnx" and model_kind("m.ENGINE") == "engine"
    assert model_kind("c.pt") == "torch" and model_kind("preset:light") == "torch"
    with pytest.raises(ValueError, match="cannot tell the model type"):
        model_kind("m.bin")
    assert [s.runner for s in runners_for("m.onnx")] == ["onnxruntime-cpu", "onnxruntime-cuda"]
    assert [s.runner for s in runners_for("m.engine")] == ["tensorrt", "tensorrt-graph"]
    assert [s.runner for s in runners_for("c.pt", ["pytorch-cpu", "onnxruntime-cpu"])] == ["pytorch-cpu"]
    assert reference_runner("m.onnx") == RunnerSpec("m.onnx", "onnxruntime-cpu")
    assert reference_runner("m.plan") == RunnerSpec("m.plan", "tensorrt")


def _tensorrt_usable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return hasattr(tensorrt, "Runtime") and importlib.util.find_spec("pycuda") is not None


@pytest.mark.skipif(_tensorrt_usable(), reason="TensorRT and PyCUDA are installed here")
def test_tensorrt_runner_not_run_without_tensorrt(tmp_path: Path, bench_models, bench_data: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")  # never opened: the libraries are checked first
    with pytest.raises(NotRunError) as info:
        open_runner(RunnerSpec(str(engine), "tensorrt"))
    reason = str(info.value)
    assert ("TensorRT" in reason or "tensorrt" in reason or "PyCUDA" in reason) and "pip install" in reason

    # In the report: "not run" with that reason, no numbers, not a parity failure.
    out = tmp_path / "out"
    rc = main(["--model", str(bench_models.ref), "--model", str(engine), "--data", str(bench_data), "--out", str(out),
               "--backends", "onnxruntime-cpu,tensorrt,tensorrt-graph", "--warmup", "0", "--iterations", "2",
               "--no-progress"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    trt = [r for r in rep["results"] if r["runner"].startswith("tensorrt")]
    assert len(trt) == 2
    for r in trt:
        assert r["status"] == "not run" and r["reason"] == reason
        assert not {"end_to_end", "model_only", "accuracy", "memory"} & set(r)
        assert r["parity"]["checked"] is False
    assert "m.engine | tensorrt | - | not run: " in (out / "report.md").read_text()


def test_cuda_torch_runner_not_run_without_gpu() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    for runner in ("pytorch-cuda", "pytorch-cuda-fp16", "pytorch-cuda-graph"):
        with pytest.raises(NotRunError, match="no CUDA GPU visible to PyTorch"):
            open_runner(RunnerSpec("preset:light", runner))


def test_benchmark_core_is_torch_free() -> None:
    """Only the PyTorch runner may import torch (docs/design.md), and only when it loads."""
    import subprocess
    import sys

    code = ("import sys, rfnet.benchmarks.bench, rfnet.benchmarks.runners, rfnet.benchmarks.report, rfnet.benchmarks.endtoend; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unrunnable_reference_is_a_usage_error(tmp_path: Path, bench_models, bench_data: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    rc = main(["--model", str(bench_models.ref), "--reference", str(garbage), "--data", str(bench_data),
               "--out", str(tmp_path / "out"), "--warmup", "0", "--iterations", "1", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "the reference garbage.onnx [onnxruntime-cpu] could not run" in err and "garbage.onnx" in err
    assert not (tmp_path / "out" / "report.json").exists()


def _tiny_checkpoint(path: Path) -> Path:
    """A tiny, untrained rfnet.checkpoint file (light preset at 128 x 128)."""
    torch = pytest.importorskip("torch")
    checkpoint = pytest.importorskip("rfnet.checkpoint")
    from rfnet.config import light_config
    from rfnet.model import build_model

    cfg = light_config()
    cfg.input.size = 128  # small and fast; the letterbox adapts the generated images to it
    cfg.mask_head.mask_size = 28
    cfg.rpn.pre_nms_top_n_test, cfg.rpn.post_nms_top_n_test = 100, 50
    torch.manual_seed(0)
    return checkpoint.save_checkpoint(path, build_model(cfg), cfg)


def _bench_checkpoint(tmp_path: Path, data: Path, backends: str) -> tuple[int, dict]:
    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    rc = main(["--model", str(ckpt), "--reference-runner", "pytorch-cpu", "--backends", backends,
               "--data", str(data), "--limit", "2", "--out", str(out), "--warmup", "0", "--iterations", "2",
               "--threads", "2", "--no-pipeline", "--no-progress"])
    return rc, json.loads((out / "report.json").read_text())


def test_pytorch_checkpoint_through_the_cli(tmp_path: Path, bench_data: Path) -> None:
    """A checkpoint benchmarked on the PyTorch CPU runner, as its own reference; CUDA runners
    are "not run" without a GPU."""
    torch = pytest.importorskip("torch")
    gpu = torch.cuda.is_available()
    rc, rep = _bench_checkpoint(tmp_path, bench_data, "pytorch-cpu" if gpu else ",".join(TORCH_RUNNERS))
    assert rc == 0
    res = {r["runner"]: r for r in rep["results"]}
    cpu = res["pytorch-cpu"]
    assert cpu["status"] == "ok" and cpu["is_reference"] and cpu["precision"] == "fp32"
    assert cpu["input_size"] == 128 and "PyTorch" in cpu["device"]
    assert cpu["end_to_end"]["images"] == 2 and cpu["model_only"]["1"]["latency_ms"]["n"] == 2
    assert cpu["accuracy"]["images_scored"] == 2
    if not gpu:
        for name in ("pytorch-cuda", "pytorch-cuda-fp16", "pytorch-cuda-graph"):
            assert res[name]["status"] == "not run" and res[name]["reason"] == "no CUDA GPU visible to PyTorch"


@pytest.mark.cuda
def test_pytorch_cuda_runners(tmp_path: Path, bench_data: Path) -> None:
    """On a GPU: FP32, FP16 autocast and CUDA-graph replay run (or, for the graph, say why not)."""
    rc, rep = _bench_checkpoint(tmp_path, bench_data, ",".join(TORCH_RUNNERS))
    res = {r["runner"]: r for r in rep["results"]}
    for name in ("pytorch-cuda", "pytorch-cuda-fp16"):
        assert res[name]["status"] == "ok", res[name].get("reason")
        assert res[name]["memory"]["torch_cuda_max_allocated_mb"] > 0
    assert res["pytorch-cuda-fp16"]["precision"] == "fp16"
    graph = res["pytorch-cuda-graph"]
    assert graph["status"] == "ok" or "CUDA-graph capture" in graph["reason"]
    assert rc in (0, 1)  # random weights: CUDA vs CPU masks may differ; the verdict is reported either way


def test_profile_groups_nodes_by_part_of_the_network(tmp_path) -> None:
    """benchmarks/profile_model.py: ONNX Runtime's per-node kernel times summed by part (exporter
    scopes, fused-node names, the selection / resampling ops apart) on a real small export."""
    import numpy as np
    import onnx

    from rfnet.benchmarks import profile_model
    from rfnet.export.export_onnx import export_model
    from tests.support.small_model import small_config, spread_heads
    import torch

    from rfnet.model import build_model

    assert profile_model.group_of("fused /head/fc6/Gemm", "FusedGemm") == "box head"
    assert profile_model.group_of("/rpn/NonMaxSuppression", "NonMaxSuppression") == "NMS / TopK"
    assert profile_model.group_of("/mask_head/GridSample", "GridSample") == "GridSample (polar resampling)"
    assert profile_model.group_of("/backbone/blocks.0/Clip_output_0_nchwc", "Conv") == "backbone"
    cfg = small_config()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    spread_heads(model)
    from rfnet.export.onnx_tools.onnx_meta import write_model_metadata
    from rfnet.metadata import metadata_from_config

    path = tmp_path / "m.onnx"
    proto = export_model(model, cfg, batch=1, opset=17, do_simplify=False)
    write_model_metadata(proto, metadata_from_config(cfg, precision="fp32", checkpoint_sha256="0" * 64))
    onnx.save(proto, str(path))
    rng = np.random.default_rng(0)
    result = profile_model.profile(path, [rng.integers(0, 255, (160, 200, 3), dtype=np.uint8) for _ in range(2)], 1)
    groups = result["groups_ms_per_image"]
    assert groups["backbone"] > 0 and groups["FPN"] > 0 and groups["RoiAlign"] > 0 and groups["NMS / TopK"] > 0
    assert sum(groups.values()) == pytest.approx(result["kernel_ms_per_image"])
    assert "| backbone |" in profile_model.markdown(result)
