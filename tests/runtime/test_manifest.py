"""Engine manifest writer and checker (torch-free, TensorRT-free)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rfnet.runtime.manifest import (
    FORMAT,
    FORMAT_VERSION,
    ManifestError,
    ManifestMismatchError,
    check_compatible,
    check_engine_file,
    load_manifest,
    manifest_path,
    sha256_file,
    write_manifest,
)


def example_manifest(engine_bytes: bytes = b"engine-bytes") -> dict[str, Any]:
    import hashlib

    return {
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "precision": "fp16",
        "strongly_typed": False,
        "inputs": [{"name": "image", "shape": [-1, 3, 512, 512], "dtype": "float32"}],
        "outputs": [
            {"name": "boxes", "shape": [-1, 10, 4], "dtype": "float32"},
            {"name": "scores", "shape": [-1, 10], "dtype": "float32"},
            {"name": "masks", "shape": [-1, 10, 2, 56, 56], "dtype": "float32"},
        ],
        "profiles": {"image": {"min": [1, 3, 512, 512], "opt": [1, 3, 512, 512], "max": [4, 3, 512, 512]}},
        "onnx_file": "model.onnx",
        "onnx_sha256": "0" * 64,
        "calibration": None,
        "build_flags": ["FP16"],
        "dla_core": None,
        "layer_placement": None,
        "build_time_s": 12.5,
        "created_utc": "2025-01-01T00:00:00Z",
        "preset": "light",
        "input_size": 512,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "mask_size": 56,
        "top_k": 10,
        "class_names": ["disc", "cup"],
    }


def test_manifest_path_is_beside_engine() -> None:
    assert manifest_path("engines/orin.engine") == Path("engines/orin.engine.json")
    assert manifest_path(Path("/a/b/x.plan")) == Path("/a/b/x.plan.json")


def test_write_then_load_roundtrip(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine-bytes")
    written = write_manifest(engine, example_manifest())
    assert written == tmp_path / "m.engine.json"
    loaded = load_manifest(engine)
    assert loaded["format"] == FORMAT
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["engine_file"] == "m.engine"
    assert loaded["profiles"]["image"]["max"] == [4, 3, 512, 512]
    assert loaded["mean"] == pytest.approx([123.675, 116.28, 103.53], abs=1e-9)
    # no temporary files left behind by the atomic write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]
    check_engine_file(engine, loaded)


def test_write_rejects_invalid_and_leaves_nothing(tmp_path: Path) -> None:
    bad = example_manifest()
    del bad["gpu_name"]
    bad["precision"] = "bf16"
    with pytest.raises(ManifestError, match="gpu_name") as ei:
        write_manifest(tmp_path / "m.engine", bad)
    assert "bf16" in str(ei.value)
    assert not (tmp_path / "m.engine.json").exists()


def test_write_rejects_non_json_values(tmp_path: Path) -> None:
    bad = example_manifest()
    bad["build_time_s"] = float("nan")
    with pytest.raises(ManifestError, match="not plain JSON"):
        write_manifest(tmp_path / "m.engine", bad)


def test_atomic_write_keeps_old_manifest_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = tmp_path / "m.engine"
    write_manifest(engine, example_manifest())
    before = manifest_path(engine).read_text()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    changed = example_manifest()
    changed["gpu_name"] = "NVIDIA H100"
    with pytest.raises(OSError, match="disk full"):
        write_manifest(engine, changed)
    assert manifest_path(engine).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine.json"]


def test_load_missing_names_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"x\.engine\.json.*not found"):
        load_manifest(tmp_path / "x.engine")


def test_load_corrupt_names_file(tmp_path: Path) -> None:
    (tmp_path / "x.engine.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"x\.engine\.json: cannot read"):
        load_manifest(tmp_path / "x.engine")


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("format", "something-else", "'format'"),
        ("format_version", 99, "newer"),
        ("compute_capability", "sm87", "compute_capability"),
        ("inputs", [{"name": "image", "shape": "1x3", "dtype": "float32"}], "inputs[0].shape"),
        ("calibration", {"num_images": 3}, "calibration"),
        ("dla_core", -1, "dla_core"),
        ("layer_placement", {"gpu": 3}, "layer_placement"),
    ],
)
def test_load_invalid_field(tmp_path: Path, key: str, value: Any, needle: str) -> None:
    data = example_manifest()
    data.update(format=FORMAT, format_version=FORMAT_VERSION, engine_file="x.engine")
    data[key] = value
    (tmp_path / "x.engine.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError) as ei:
        load_manifest(tmp_path / "x.engine")
    assert needle in str(ei.value)
    assert "x.engine.json" in str(ei.value)


def test_check_compatible_accepts_same_machine() -> None:
    m = example_manifest()
    check_compatible(m, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")
    # build number present on one side only, case/whitespace of the GPU name
    check_compatible(m, tensorrt_version="10.3.0.30", gpu_name=" orin ", compute_capability="8.7")
    m["tensorrt_version"] = "8.6.1.post1"
    check_compatible(m, tensorrt_version="8.6.1", gpu_name="Orin", compute_capability="8.7")


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        ({"tensorrt_version": "10.7.0"}, ["TensorRT 10.3.0 (engine) vs 10.7.0"]),
        ({"tensorrt_version": "10.3.1"}, ["TensorRT 10.3.0"]),
        ({"compute_capability": "9.0", "gpu_name": "NVIDIA H100 80GB HBM3"}, ["compute capability 8.7", "H100"]),
        ({"gpu_name": "NVIDIA A100"}, ["GPU 'Orin'"]),
    ],
)
def test_check_compatible_refuses_mismatch(kwargs: dict[str, str], needles: list[str]) -> None:
    args = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
    args.update(kwargs)
    with pytest.raises(ManifestMismatchError) as ei:
        check_compatible(example_manifest(), engine="engines/orin.engine", **args)
    msg = str(ei.value)
    for n in needles:
        assert n in msg
    assert "engines/orin.engine" in msg
    assert "export/build.py" in msg and "rebuild" in msg


def test_mismatch_is_a_manifest_error() -> None:
    assert issubclass(ManifestMismatchError, ManifestError)


def test_check_engine_file_detects_stale_manifest(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"a different engine")
    with pytest.raises(ManifestMismatchError, match="does not match its manifest"):
        check_engine_file(engine, example_manifest())
    assert sha256_file(engine) == __import__("hashlib").sha256(b"a different engine").hexdigest()
