"""ONNX Runtime backend, backend selection, model metadata and batching (CPU only)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rfnet.runtime.backends import create_backend, resolve_backend
from rfnet.runtime.backends.base import BackendError, InputError, ModelLoadError, TensorSpec
from rfnet.runtime.backends.onnxrt import OnnxRuntimeBackend, choose_providers
from rfnet.runtime.backends.trt_pycuda import TensorRTBackend
from rfnet.runtime.infer import main
from rfnet.runtime.outputs import output_names, parse_save
from rfnet.common.contract import MetadataError, metadata_from_backend, metadata_from_manifest, parse_metadata
from rfnet.common.segment import model_info, plan_batch
from rfnet.runtime.pipeline import Pipeline


def test_resolve_backend() -> None:
    assert resolve_backend("m.engine") == "tensorrt"
    assert resolve_backend("M.ONNX") == "onnxruntime"
    assert resolve_backend("m.onnx", "onnxruntime") == "onnxruntime"
    with pytest.raises(ValueError, match="is an ONNX model; the tensorrt backend cannot run it"):
        resolve_backend("m.onnx", "tensorrt")
    with pytest.raises(ValueError, match="is a TensorRT engine"):
        resolve_backend("m.engine", "onnxruntime")
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("m.onnx", "openvino")
    assert isinstance(create_backend("m.engine"), TensorRTBackend)
    assert isinstance(create_backend("m.onnx"), OnnxRuntimeBackend)


def test_choose_providers() -> None:
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"])


def test_onnxruntime_backend_io_and_errors(contract_onnx: Path, contract: SimpleNamespace) -> None:
    backend = OnnxRuntimeBackend(contract_onnx)
    with pytest.raises(BackendError, match="call load"):
        backend.infer({"image": np.zeros((1, 3, 128, 128), np.float32)})
    with backend as b:
        assert b.loaded and b.device == "CPU"
        assert b.inputs == [TensorSpec("image", np.dtype(np.float32), (-1, 3, 128, 128))]
        assert [t.name for t in b.outputs] == ["boxes", "scores", "masks"]
        assert b.metadata["rfnet.input_size"] == "128"
        x = np.zeros((2, 3, 128, 128), np.float32)
        x[1] = 1.0
        out = b.infer({"image": x})
        assert out["boxes"].shape == (2, 3, 4) and out["scores"].shape == (2, 3)
        assert out["masks"].shape == (2, 3, 2, 28, 28)
        # slot-0 half-size r = R0 + R1 * max(image[b, 0]) (12 + 3 * {0, 1})
        np.testing.assert_allclose(out["boxes"][:, 0, 2] - 64, [12.0, 15.0], atol=1e-5)
        np.testing.assert_allclose(out["masks"][0], contract.masks(), atol=0)
        with pytest.raises(InputError, match="must be float32, got float64"):
            b.infer({"image": x.astype(np.float64)})
        with pytest.raises(InputError, match="fixed size 128 on axis 2"):
            b.infer({"image": np.zeros((1, 3, 64, 128), np.float32)})
        with pytest.raises(InputError, match=r"missing \['image'\]"):
            b.infer({"x": x})
    assert not backend.loaded


def test_model_info_from_metadata_and_manifest(contract: SimpleNamespace) -> None:
    info = parse_metadata(contract.metadata(), "m.onnx")
    assert info.input_size == 128 and info.mean == contract.MEAN and info.std == contract.STD
    assert info.mask_size == 28 and info.top_k == 3 and info.preset == "test" and info.precision == "fp32"
    assert info.input_config().size == 128 and info.mask_box_scale == 1.0  # absent key: an older export
    man = {"format": "rfnet-engine-manifest", "preset": "light", "input_size": 256, "mean": [0, 0, 0],
           "std": [1, 1, 1], "mask_size": 28, "top_k": 3, "class_names": ["disc", "cup"], "precision": "fp16"}
    got = metadata_from_backend(man, "x.engine")
    assert got.input_size == 256 and got.precision == "fp16" and got.mask_box_scale == 1.0
    assert metadata_from_manifest({**man, "mask_box_scale": 1.2}, "x.engine").mask_box_scale == 1.2
    with pytest.raises(MetadataError, match="mask channels are"):
        metadata_from_manifest({**man, "class_names": ["cup", "disc"]}, "x.engine")
    with pytest.raises(MetadataError, match="x.engine: metadata 'std' must be 3 positive numbers"):
        metadata_from_manifest({**man, "std": [1, 0, 1]}, "x.engine")
    with pytest.raises(MetadataError, match=r"x.engine: engine manifest lacks \['top_k'\]"):
        metadata_from_manifest({k: v for k, v in man.items() if k != "top_k"}, "x.engine")
    bad = {**contract.metadata(), "rfnet.mean": json.dumps([1, 2])}
    with pytest.raises(MetadataError, match="m.onnx: metadata 'rfnet.mean' must be a list of 3 numbers"):
        parse_metadata(bad, "m.onnx")


def test_input_size_mismatch_between_metadata_and_graph(tmp_path: Path, contract: SimpleNamespace) -> None:
    import onnx

    path = contract.make_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == "rfnet.input_size":
            p.value = "512"
    onnx.save(model, str(path))
    with OnnxRuntimeBackend(path) as b, pytest.raises(ModelLoadError, match="metadata says input_size 512"):
        model_info(b)


def test_plan_batch() -> None:
    dyn = TensorSpec("image", np.dtype(np.float32), (-1, 3, 8, 8))
    assert plan_batch(dyn, 6) == (6, 1)
    prof = TensorSpec("image", np.dtype(np.float32), (-1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
    assert plan_batch(prof, 8) == (4, 2)  # capped at the profile max; short batches padded to its min
    fixed = TensorSpec("image", np.dtype(np.float32), (2, 3, 8, 8))
    assert plan_batch(fixed, 1) == (2, 2)
    with pytest.raises(ValueError):
        plan_batch(dyn, 0)


@pytest.mark.parametrize("fixed_batch, requested", [(1, 3), (2, 2)])
def test_fixed_batch_model_pads_short_batches(
    tmp_path: Path, image_dir: Path, contract: SimpleNamespace, fixed_batch: int, requested: int
) -> None:
    """A model exported with a static batch still processes every image (3 images: padding needed)."""
    (image_dir / "d_big.png").unlink()
    model = contract.make_onnx(tmp_path / "static.onnx", batch=fixed_batch)
    with OnnxRuntimeBackend(model) as b:
        pipe = Pipeline(b, batch_size=requested)
        assert pipe.batch_size == fixed_batch
        outcomes = list(pipe.run(sorted(image_dir.iterdir())))
    assert [o.ok for o in outcomes] == [True] * 3
    for o, (name, h, w, value) in zip(sorted(outcomes, key=lambda o: o.index), contract.GOOD_IMAGES):
        assert o.path.name == name
        np.testing.assert_allclose(o.segmentation.box, contract.expected_box(value, h, w), atol=0.01)


def test_pipeline_stops_its_decode_thread_when_abandoned(contract_onnx: Path, image_dir: Path) -> None:
    import threading

    with OnnxRuntimeBackend(contract_onnx) as b:
        gen = Pipeline(b, prefetch=1).run(sorted(image_dir.iterdir()) * 5)
        first = next(gen)
        assert first.ok
        gen.close()
    assert not any(t.name == "rfnet-decode" and t.is_alive() for t in threading.enumerate())


def test_output_names_are_unique(tmp_path: Path) -> None:
    paths = [Path("a/x.png"), Path("b/x.png"), Path("a/x.jpg"), Path("c/y z.png")]
    names = output_names(paths)
    assert names == ["a_x_png", "b_x_png", "a_x_jpg", "y_z"]
    assert len(set(output_names([Path("a/x.png"), Path("a/x.png")]))) == 2


def test_parse_save() -> None:
    assert parse_save("masks, CSV") == {"masks", "csv"}
    assert parse_save("all") == {"masks", "refuge", "overlay", "csv"}
    with pytest.raises(ValueError, match="unknown"):
        parse_save("masks,heatmap")


def test_duplicate_stems_do_not_overwrite_each_other(contract_onnx: Path, tmp_path: Path, contract: SimpleNamespace) -> None:
    contract.write_images(tmp_path / "in" / "left", contract.GOOD_IMAGES[:1])
    contract.write_images(tmp_path / "in" / "right", contract.GOOD_IMAGES[:1])
    out = tmp_path / "out"
    assert main(["--model", str(contract_onnx), "--input", str(tmp_path / "in"), "--recursive",
                 "--output", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "refuge").iterdir()) == ["left_a_wide_png.bmp", "right_a_wide_png.bmp"]
