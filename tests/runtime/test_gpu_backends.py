"""Backends on a real NVIDIA GPU: TensorRT + PyCUDA, and ONNX Runtime's CUDA provider.

Skipped (with the reason) where TensorRT, PyCUDA, onnxruntime-gpu or a GPU is missing; on a
user's GPU machine they build a tiny engine from the contract ONNX model and compare the
TensorRT backend with ONNX Runtime.
"""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rfnet.runtime import manifest as mf
from rfnet.runtime.backends.onnxrt import OnnxRuntimeBackend
from rfnet.runtime.infer import main

S = 128


def _trt_and_device() -> tuple[Any, str, str]:
    trt = pytest.importorskip("tensorrt")
    if not hasattr(trt, "Builder"):
        pytest.skip("only TensorRT type stubs are installed")
    cuda = pytest.importorskip("pycuda.driver", reason="PyCUDA is not installed (pip install '.[tensorrt]')")
    import pycuda.autoprimaryctx  # noqa: F401

    dev = cuda.Context.get_device()
    major, minor = dev.compute_capability()
    return trt, str(dev.name()), f"{major}.{minor}"


def build_engine(onnx_path: Path, engine_path: Path) -> Path:
    """Build an fp32 engine with a batch profile 1..4 and write its manifest (TensorRT 8.6 / 10 / 11)."""
    trt, gpu_name, cc = _trt_and_device()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # removed in TensorRT 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, S, S), (2, 3, S, S), (4, 3, S, S))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed"
    engine_path.write_bytes(bytes(blob))
    mf.write_manifest(engine_path, {
        "engine_sha256": mf.sha256_file(engine_path),
        "tensorrt_version": trt.__version__,
        "gpu_name": gpu_name,
        "compute_capability": cc,
        "precision": "fp32",
        "strongly_typed": False,
        "inputs": [{"name": "image", "shape": [-1, 3, S, S], "dtype": "float32"}],
        "outputs": [{"name": n, "shape": s, "dtype": "float32"}
                    for n, s in (("boxes", [-1, 3, 4]), ("scores", [-1, 3]), ("masks", [-1, 3, 2, 28, 28]))],
        "profiles": {"image": {"min": [1, 3, S, S], "opt": [2, 3, S, S], "max": [4, 3, S, S]}},
        "onnx_file": onnx_path.name,
        "onnx_sha256": mf.sha256_file(onnx_path),
        "calibration": None,
        "build_flags": [],
        "dla_core": None,
        "layer_placement": None,
        "build_time_s": 0.0,
        "created_utc": "2025-01-01T00:00:00+00:00",
        "preset": "test",
        "input_size": S,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "mask_size": 28,
        "top_k": 3,
        "class_names": ["disc", "cup"],
    })
    return engine_path


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, contract_onnx: Path) -> Path:
    return build_engine(contract_onnx, tmp_path_factory.mktemp("engine") / "rfnet_test.engine")


@pytest.mark.tensorrt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_backend_matches_onnxruntime(engine: Path, contract_onnx: Path, cuda_graph: bool) -> None:
    from rfnet.runtime.backends import cuda_graphs
    from rfnet.runtime.backends.base import BackendUnavailableError
    from rfnet.runtime.backends.trt_pycuda import TensorRTBackend

    if cuda_graph:
        try:
            cuda_graphs.import_cudart()
        except BackendUnavailableError as exc:
            pytest.skip(str(exc))
    rng = np.random.default_rng(0)
    with TensorRTBackend(engine, cuda_graph=cuda_graph) as trt_b, OnnxRuntimeBackend(contract_onnx) as ort_b:
        assert "TensorRT" in trt_b.device
        assert trt_b.inputs[0].max_shape == (4, 3, S, S)
        for batch in (1, 3, 3, 4, 1):  # repeated shapes replay captured graphs
            x = rng.normal(size=(batch, 3, S, S)).astype(np.float32)
            got, want = trt_b.infer({"image": x}), ort_b.infer({"image": x})
            for name in ("boxes", "scores", "masks"):
                np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
        report = trt_b.cuda_graph_report()
        if cuda_graph:  # RF-Net's NMS is expected to prevent capture; either way the report must be true
            assert report is not None and report["used"] == (report["replays"] > 0)
            assert report["used"] or report["note"]
        else:
            assert report is None


@pytest.mark.tensorrt
def test_infer_cli_with_engine_matches_onnx(engine: Path, contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for tag, model in (("trt", engine), ("ort", contract_onnx)):
        out = tmp_path / tag
        assert main(["--model", str(model), "--input", str(image_dir), "--output", str(out), "--batch", "3",
                     "--no-progress"]) == 0
        with open(out / "results.csv", newline="") as fh:
            runs[tag] = {r["name"]: r for r in csv.DictReader(fh)}
    assert sorted(runs["trt"]) == sorted(runs["ort"])
    for name, row in runs["trt"].items():
        for key in ("vcdr", "hcdr", "area_cdr", "disc_x0", "disc_y1"):
            assert float(row[key]) == pytest.approx(float(runs["ort"][name][key]), abs=1e-3), (name, key)


@pytest.mark.tensorrt
def test_engine_for_another_tensorrt_is_refused_before_deserialising(
    engine: Path, tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = mf.load_manifest(engine)
    data["tensorrt_version"] = "8.6.1.6" if not str(data["tensorrt_version"]).startswith("8.") else "10.3.0.30"
    copy = tmp_path / "other.engine"
    copy.write_bytes(engine.read_bytes())
    data["engine_file"] = copy.name
    mf.write_manifest(copy, data)
    assert main(["--model", str(copy), "--input", str(image_dir), "--output", str(tmp_path / "o")]) == 2
    assert "does not match this machine" in capsys.readouterr().err


@pytest.mark.cuda
def test_onnxruntime_cuda_provider(contract_onnx: Path, contract: SimpleNamespace) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    with OnnxRuntimeBackend(contract_onnx) as b:
        assert b.device.startswith("CUDA")
        out = b.infer({"image": np.zeros((2, 3, S, S), np.float32)})
        np.testing.assert_allclose(out["masks"][1], contract.masks(), atol=1e-6)
