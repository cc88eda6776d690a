"""RoIAlign plugin check, graph precision, the build steps on stub-pinned stand-ins, mypy, a GPU build.

Without TensorRT the build steps run on ``tests/support/trt_fake_build.py``: a parsed network
made from a real ONNX graph (two RoiAlign nodes + Max, as Fusion Feature Pooling exports),
named the way onnx-tensorrt names layers, every TensorRT object pinned to the 10.x stubs.
The tests marked ``tensorrt`` build a real engine on a GPU machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from rfnet.export import build
from rfnet.export.trt import trt_builder
from rfnet.export.trt.build_plan import BuildPlan
from rfnet.export.onnx_tools.graph_checks import (
    LayerInfo,
    check_roialign_plugins,
    graph_precision,
    precision_problem,
    roialign_attribute_issues,
    roialign_nodes,
    sibling_candidates,
    tensorrt_node_name,
)
from rfnet.export.trt.trt_typing_stubs import fix_def_line

from tests.support import trt_onnx as fx
from tests.support.layout import link_tree
from tests.support.trt_fake_build import FakeBuildWorld

REPO = Path(__file__).resolve().parents[3]
_PARSED_TYPES = {"Conv": "CONVOLUTION", "MaxPool": "POOLING", "Max": "ELEMENTWISE", "Cast": "CAST"}


def parsed_stand_in(model: onnx.ModelProto, *, roialign_as: tuple[str, str | None] = ("PLUGIN_V3", "ROIAlign_TRT"),
                    clash: bool = False) -> list[LayerInfo]:
    """What TensorRT's parser makes of ``model``: one layer per node, named after the node.

    ``clash``: an extra layer registered first under each RoiAlign node's name (the parser then
    names the plugin layer ``<node>_<n>``).
    """
    layers = []
    for i, node in enumerate(model.graph.node):
        name = tensorrt_node_name(node)
        if node.op_type == "RoiAlign":
            if clash:
                layers.append(LayerInfo(name, "CAST", None))
                name = f"{name}_{i}"
            layers.append(LayerInfo(name, roialign_as[0], roialign_as[1]))
        else:
            layers.append(LayerInfo(name, _PARSED_TYPES.get(node.op_type, node.op_type.upper()), None))
    return layers


def test_roialign_nodes_and_attributes_from_real_graph() -> None:
    model = fx.make_model()
    infos = roialign_nodes(model)
    assert [i.name for i in infos] == ["/roi_heads/pool/RoiAlign_p2", "/roi_heads/pool/RoiAlign_p3"]
    assert [i.spatial_scale for i in infos] == [1.0, 0.5]
    assert all(i.coordinate_transformation_mode == "half_pixel" and i.sampling_ratio == 2 for i in infos)
    assert all(i.output_height == 7 and i.mode == "avg" and i.batch_indices_dtype == "int64" for i in infos)
    assert roialign_attribute_issues(model) == ([], [])


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"sampling_ratio": None}, "sampling_ratio is not written explicitly"),
        ({"ctm": "output_half_pixel"}, "expected 'half_pixel'"),
        ({"opset": 11}, "opset 11 < 16"),
        ({"sampling_ratio": -1}, "must be >= 0"),
    ],
)
def test_roialign_attribute_errors(kwargs: dict, needle: str) -> None:
    errors, _ = roialign_attribute_issues(fx.make_model(**kwargs))
    assert len(errors) == 2 and all(needle in e for e in errors)
    assert "/roi_heads/pool/RoiAlign_p2" in errors[0]


def test_adaptive_sampling_ratio_is_a_warning() -> None:
    errors, warnings = roialign_attribute_issues(fx.make_model(sampling_ratio=0))
    assert errors == [] and len(warnings) == 2 and "adaptive" in warnings[0]


@pytest.mark.parametrize("plugin_layer", [("PLUGIN_V3", "ROIAlign_TRT"), ("PLUGIN_V2", "ROIAlign_TRT")])
def test_plugin_check_passes_on_parsed_stand_in(plugin_layer: tuple[str, str]) -> None:
    model = fx.make_model()
    nodes = [i.name for i in roialign_nodes(model)]
    res = check_roialign_plugins(nodes, parsed_stand_in(model, roialign_as=plugin_layer))
    assert res.ok and res.warnings == []
    assert res.matched == {n: n for n in nodes}


def test_plugin_check_follows_unique_name_suffix_and_unnamed_nodes() -> None:
    model = fx.make_model(names=("", ""))
    nodes = [i.name for i in roialign_nodes(model)]
    assert nodes == ["node_of_r2", "node_of_r3"]
    res = check_roialign_plugins(nodes, parsed_stand_in(model, clash=True))
    assert res.ok
    assert res.matched["node_of_r2"].startswith("node_of_r2_")


def test_plugin_check_names_the_node_that_did_not_become_the_plugin() -> None:
    model = fx.make_model()
    nodes = [i.name for i in roialign_nodes(model)]
    layers = parsed_stand_in(model)
    # p3's RoiAlign became something else; p2 is fine
    layers = [LayerInfo(l.name, "GATHER", None) if l.name.endswith("p3") else l for l in layers]
    res = check_roialign_plugins(nodes, layers)
    assert not res.ok and len(res.errors) == 1
    assert "'/roi_heads/pool/RoiAlign_p3'" in res.errors[0] and "GATHER" in res.errors[0]
    # missing entirely
    res = check_roialign_plugins(nodes, [l for l in parsed_stand_in(model) if "RoiAlign" not in l.name])
    assert len(res.errors) == 2 and "no TensorRT layer is named after it" in res.errors[0]
    # another plugin library hijacked the op
    res = check_roialign_plugins(nodes, parsed_stand_in(model, roialign_as=("PLUGIN_V2", "MMCVRoiAlign")))
    assert len(res.errors) == 2 and "MMCVRoiAlign" in res.errors[0]
    # a plugin layer whose name the Python API does not expose: accepted with a warning
    res = check_roialign_plugins(nodes, parsed_stand_in(model, roialign_as=("PLUGIN_V3", None)))
    assert res.ok and len(res.warnings) == 2


def test_graph_precision_and_problems(tmp_path: Path) -> None:
    g32, g16, g8 = (graph_precision(fx.make_model(**kw)) for kw in ({}, {"fp16": True}, {"qdq": True}))
    assert (g32.is_fp16, g32.is_qdq) == (False, False)
    assert g16.is_fp16 and g16.float16_tensors == 1 and not g16.is_qdq  # the Cast to float16
    assert graph_precision(fx.make_model(fp16=True, precision_meta="fp32")).is_fp16  # tensors alone suffice
    assert graph_precision(fx.make_model(precision_meta="fp16")).is_fp16  # metadata alone suffices
    assert g8.is_qdq and g8.qdq_nodes == 2
    # weakly typed: only contradictions
    assert precision_problem("fp16", g32, strongly_typed=False) is None
    assert precision_problem("int8", g32, strongly_typed=False) is None
    assert "--precision int8" in str(precision_problem("fp16", g8, strongly_typed=False))
    assert "FP32 ONNX" in str(precision_problem("fp32", g16, strongly_typed=False))
    # strongly typed: the graph must carry the precision
    assert "export/fp16.py" in str(precision_problem("fp16", g32, strongly_typed=True))
    assert "export/quantize.py" in str(precision_problem("int8", g32, strongly_typed=True))
    assert precision_problem("fp16", g16, strongly_typed=True) is None
    assert precision_problem("int8", g8, strongly_typed=True) is None and g8.uint8_qdq == 0
    # a model quantized for ONNX Runtime's CPU (uint8 activations) is refused, naming the fix
    u8 = fx.make_model(qdq=True)
    for t in u8.graph.initializer:
        if t.name == "zp":
            t.CopyFrom(onnx.helper.make_tensor("zp", onnx.TensorProto.UINT8, [], [128]))
    gu8 = graph_precision(u8)
    assert gu8.uint8_qdq == 2 and "--target tensorrt" in str(precision_problem("int8", gu8, strongly_typed=False))
    names = [Path(c).name for c in sibling_candidates(str(tmp_path / "model.onnx"), "fp16")]
    assert "model_fp16.onnx" in names
    assert "model_int8.onnx" in [Path(c).name for c in sibling_candidates(str(tmp_path / "model_fp32.onnx"), "int8")]


def _fake_trt(**flags: bool) -> SimpleNamespace:
    bf = SimpleNamespace(**{k: object() for k in ("FP16", "INT8") if flags.get(k.lower(), True)})
    lt = SimpleNamespace(PLUGIN_V2=1, **({"PLUGIN_V3": 2} if flags.get("v3", True) else {}))
    mod = SimpleNamespace(__version__="x", BuilderFlag=bf, LayerType=lt)
    if flags.get("calib", True):
        mod.IInt8EntropyCalibrator2 = object
        mod.IInt8MinMaxCalibrator = object
    return mod


def test_capabilities_feature_detection() -> None:
    trt86 = trt_builder.capabilities(_fake_trt(v3=False))
    assert not trt86.strongly_typed_only and trt86.has_calibrators and not trt86.plugin_v3_layers
    trt10 = trt_builder.capabilities(_fake_trt())
    assert not trt10.strongly_typed_only and trt10.plugin_v3_layers
    trt11 = trt_builder.capabilities(_fake_trt(fp16=False, int8=False, calib=False))
    assert trt11.strongly_typed_only and not trt11.has_calibrators


def test_dtype_names() -> None:
    assert trt_builder.dtype_name(SimpleNamespace(name="HALF")) == "float16"
    assert trt_builder.dtype_name(SimpleNamespace(name="FLOAT")) == "float32"
    assert trt_builder.dtype_name(SimpleNamespace(name="INT64")) == "int64"


def test_fix_def_line_repairs_generated_stubs() -> None:
    bad = "    def f(self: X, in: list[int], out: list[int]) -> int:\n"
    assert fix_def_line(bad) == "    def f(self: X, in_: list[int], out: list[int]) -> int:\n"
    bad2 = "    def g(self, a: int, b: W = None, c: int) -> None:\n"
    assert fix_def_line(bad2) == "    def g(self, a: int, b: W = None, c: int = ...) -> None:\n"
    assert fix_def_line("x = 1\n") == "x = 1\n"


def test_mypy_checks_tensorrt_calls_against_the_stubs(tmp_path: Path) -> None:
    """mypy with the repaired tensorrt-stubs: our TensorRT code passes, a removed API is caught."""
    pytest.importorskip("tensorrt_stubs", reason="pip install --no-deps tensorrt-stubs")
    pytest.importorskip("mypy")
    from rfnet.export.trt.trt_typing_stubs import generate

    generate(tmp_path / "typings")
    probe = tmp_path / "probe_removed_api.py"
    probe.write_text(
        "import tensorrt as trt\n"
        "b = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "b.build_engine(b.create_network(0), b.create_builder_config())  # removed in TensorRT 10\n"
    )
    cfg = tmp_path / "mypy.ini"
    cfg.write_text(
        f"[mypy]\npython_version = 3.11\nignore_missing_imports = True\nmypy_path = {tmp_path / 'typings'}\n"
        "[mypy-tensorrt.*,tensorrt_bindings.*]\nignore_errors = True\n"
    )
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "MYPYPATH": ""}
    tree = link_tree(tmp_path / "tree")  # laid out as installed: rfnet/export/trt/... (mypy cannot map package_dir)
    ok = subprocess.run(cmd + ["rfnet/export/trt/trt_builder.py", "rfnet/export/trt/trt_config.py",
                               "rfnet/export/trt/trt_calibrator.py", "rfnet/runtime/backends/trt_pycuda.py",
                               "rfnet/runtime/backends/trt_io.py"], cwd=tree,
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(cmd + [str(probe)], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and '"Builder" has no attribute "build_engine"' in bad.stdout, bad.stdout


def test_gpu_info_without_gpu_says_why() -> None:
    from rfnet.export.trt import cuda_device

    try:
        info = cuda_device.gpu_info()
    except cuda_device.CudaUnavailableError as exc:
        assert str(exc)
    else:  # a GPU machine
        assert info.name and len(info.compute_capability.split(".")) == 2


# -- the build steps on stand-ins pinned to the TensorRT 10.x stubs ------------------------------
class FakeDeviceBuffer:
    """rfnet.export.trt.cuda_device.DeviceBuffer's interface; ``fail`` makes the host->device copy raise."""

    fail = False
    made: list["FakeDeviceBuffer"] = []

    def __init__(self, nbytes: int) -> None:
        self.nbytes, self.ptr, self.copies, self.freed = nbytes, 0xDE0000 + len(self.made), 0, False
        self.made.append(self)

    def copy_from_host(self, array: object) -> None:
        if self.fail:
            raise RuntimeError("cudaMemcpy failed: an illegal memory access was encountered")
        self.copies += 1

    def free(self) -> None:
        self.freed = True


def _images(folder: Path, n: int) -> Path:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 60, 3), 30 * i, np.uint8))
    return folder


def _build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *cli: str, line: str = "10",
           onnx_kwargs: dict | None = None, **world_kw: object) -> tuple[FakeBuildWorld, BuildPlan, object]:
    """make_plan from ``cli`` and run build_engine on a FakeBuildWorld; returns (world, plan, result or error)."""
    from rfnet.export.trt import cuda_device

    onnx_path = fx.write_model(tmp_path / "model.onnx", **(onnx_kwargs or {}))
    args = build.build_parser().parse_args(["--onnx", str(onnx_path), "--output", str(tmp_path / "x.engine"), *cli])
    plan = build.make_plan(args, None, build.analyse_onnx(onnx_path))
    world = FakeBuildWorld(onnx.load(str(onnx_path)), line, **world_kw)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "tensorrt", world.trt)
    FakeDeviceBuffer.made = []
    monkeypatch.setattr(cuda_device, "DeviceBuffer", FakeDeviceBuffer)
    try:
        return world, plan, trt_builder.build_engine(plan)
    except Exception as exc:  # the caller asserts on it
        return world, plan, exc


def test_build_steps_on_tensorrt10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world, plan, res = _build(tmp_path, monkeypatch, "--precision", "fp16", "--min", "1x3x64x64", "--opt",
                              "2x3x64x64", "--max", "4x3x64x64", "--workspace-gb", "0.5")
    assert isinstance(res, trt_builder.BuildResult), res
    assert res.network_flags == [] and res.strongly_typed is False
    assert bytes(res.engine) == b"serialized-engine"
    assert res.inputs == [{"name": "image", "shape": [-1, 3, 64, 64], "dtype": "float32"}]
    assert res.plugin_check.ok and res.plugin_unverified == []
    (profile,) = world.profiles
    assert world.shapes_of[id(profile)] == {"image": ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))}
    assert world.flags_set[0] == "FP16" and world.calibration_profile is None


def test_fp16_build_keeps_the_non_trunk_layers_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weakly typed FP16: RoiAlign, Max (and in RF-Net box decoding, NMS, TopK) stay FP32, as in export/fp16.py."""
    world, plan, res = _build(tmp_path, monkeypatch, "--precision", "fp16")
    assert isinstance(res, trt_builder.BuildResult), res
    assert plan.fp32_nodes == ["/roi_heads/pool/RoiAlign_p2", "/roi_heads/pool/RoiAlign_p3", "/roi_heads/pool/Max"]
    assert sorted(world.layer_precision) == sorted(plan.fp32_nodes)  # not the Conv / MaxPool trunk
    precisions = [(c, v) for c, n, v in world.trt.writes if n == "precision"]
    assert len(precisions) == 3 and all(v.name == "FLOAT" for _, v in precisions)
    assert "PREFER_PRECISION_CONSTRAINTS" in world.flags_set and "FP32_LAYERS=3" in res.builder_flags
    world, _, res = _build(tmp_path, monkeypatch, "--precision", "fp32")
    assert world.layer_precision == {} and "PREFER_PRECISION_CONSTRAINTS" not in world.flags_set


def test_tf32_is_cleared_for_fp32_on_tensorrt11(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 6: TensorRT 11 still has BuilderFlag.TF32; an fp32 engine must not use it."""
    world, _, res = _build(tmp_path, monkeypatch, "--precision", "fp32", line="11")
    assert isinstance(res, trt_builder.BuildResult), res
    assert res.strongly_typed and res.network_flags == ["STRONGLY_TYPED"]
    assert world.flags_cleared == ["TF32"] and "NO_TF32" in res.builder_flags
    assert world.flags_set == []  # no precision flags exist there


def test_tensorrt86_flags_and_plugin_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, res = _build(tmp_path, monkeypatch, "--precision", "fp16", line="8.6")
    assert isinstance(res, trt_builder.BuildResult), res
    assert res.network_flags == ["EXPLICIT_BATCH"] and res.plugin_check.ok and res.plugin_unverified == []


def test_unreadable_plugin_name_is_reported_as_unverified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Defect 5: TensorRT 10.1-10.3's get_capability_interface returns None; say it was not checked."""
    world, plan, res = _build(tmp_path, monkeypatch, "--precision", "fp16", plugin_name=None)
    assert isinstance(res, trt_builder.BuildResult), res
    assert res.plugin_unverified == plan.roialign_nodes
    assert "NOT verified by name" in caplog.text and "registered ROIAlign_TRT creator versions: ['2']" in caplog.text
    _, _, err = _build(tmp_path, monkeypatch, "--precision", "fp16", plugin_name="MMCVRoiAlign")
    assert isinstance(err, trt_builder.PluginCheckError) and "MMCVRoiAlign" in str(err)


def test_static_batch_network_calibrates_at_its_own_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 1: static input -> batches of its shape, no calibration profile; dynamic -> a profile."""
    cal = _images(tmp_path / "cal", 3)
    world, plan, res = _build(tmp_path, monkeypatch, "--precision", "int8", "--calib-dir", str(cal),
                              onnx_kwargs={"batch_dim": 1})
    assert isinstance(res, trt_builder.BuildResult), res
    assert plan.calib_set is not None and plan.calib_set.batch_size == 1  # taken from the ONNX input
    assert world.calibration_profile is None  # the calibration profile is for runtime dimensions only
    assert world.calib_batches == [(1, [0xDE0000])] * 3 and not world.calib_exceptions
    assert FakeDeviceBuffer.made[0].nbytes == 4 * 3 * 64 * 64 and FakeDeviceBuffer.made[0].freed
    assert res.calib_cache_written == tmp_path / "x.calib.cache" and (tmp_path / "x.calib.cache").read_bytes()
    assert "INT8_CALIBRATOR=minmax" in res.builder_flags and world.flags_set[:2] == ["FP16", "INT8"]
    (tmp_path / "x.calib.cache").unlink()
    world, plan, res = _build(tmp_path, monkeypatch, "--precision", "int8", "--calib-dir", str(cal),
                              "--calib-batch", "2", "--batch", "4")
    assert isinstance(res, trt_builder.BuildResult), res
    assert world.shapes_of[id(world.calibration_profile)] == {"image": ((2, 3, 64, 64),) * 3}
    assert world.calib_batches == [(2, [0xDE0000])]  # 3 images = one batch of 2


def test_calibration_errors_are_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: a failing copy inside get_batch, and refused profiles, end the build with the reason."""
    cal = _images(tmp_path / "cal", 2)
    monkeypatch.setattr(FakeDeviceBuffer, "fail", True)
    world, _, err = _build(tmp_path, monkeypatch, "--precision", "int8", "--calib-dir", str(cal), "--calib-batch", "1")
    monkeypatch.setattr(FakeDeviceBuffer, "fail", False)
    assert isinstance(err, trt_builder.BuildError), err
    assert "INT8 calibration failed: RuntimeError: cudaMemcpy failed" in str(err)
    assert not world.calib_exceptions  # recorded by the calibrator, not swallowed by TensorRT's wrapper
    for name in ("x.calib.cache",):
        (tmp_path / name).unlink(missing_ok=True)
    _, _, err = _build(tmp_path, monkeypatch, "--precision", "int8", "--calib-dir", str(cal), "--calib-batch", "1",
                       calib_profile_ok=False)
    assert isinstance(err, trt_builder.BuildError) and "rejected the calibration profile [1, 3, 64, 64]" in str(err)
    _, _, err = _build(tmp_path, monkeypatch, "--precision", "fp16", profile_index=-1)
    assert isinstance(err, trt_builder.BuildError) and "rejected the optimisation profile" in str(err)


def test_unreadable_timing_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.timing").write_bytes(b"garbage")
    _, _, err = _build(tmp_path, monkeypatch, "--precision", "fp16", "--timing-cache", str(tmp_path / "t.timing"),
                       timing_cache_readable=False)
    assert isinstance(err, trt_builder.BuildError) and "t.timing: TensorRT could not read this timing cache" in str(err)
    _, _, res = _build(tmp_path, monkeypatch, "--precision", "fp16", "--timing-cache", str(tmp_path / "t.timing"))
    assert isinstance(res, trt_builder.BuildResult) and (tmp_path / "t.timing").read_bytes() == b"timing-cache"


def test_dla_placement_and_plugin_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, res = _build(tmp_path, monkeypatch, "--precision", "fp16", "--dla-core", "0", dla_cores=2)
    assert isinstance(res, trt_builder.BuildResult), res
    assert res.layer_placement == {"dla": 1, "gpu": 4} and "GPU_FALLBACK" in world.flags_set
    assert ("IBuilderConfig", "DLA_core", 0) in world.trt.writes
    # one logger for the process: plugins registered once, the same logger handed to the Builder
    trt_builder.build_engine(_plan_again(tmp_path))
    assert len(world.plugin_inits) == 1 and world.builder_loggers == [world.plugin_inits[0]] * 2


def _plan_again(tmp_path: Path) -> BuildPlan:
    args = build.build_parser().parse_args(["--onnx", str(tmp_path / "model.onnx"), "--output",
                                            str(tmp_path / "y.engine"), "--precision", "fp16"])
    return build.make_plan(args, None, build.analyse_onnx(tmp_path / "model.onnx"))


@pytest.mark.tensorrt
def test_parsed_network_has_roialign_plugin_layers(tmp_path: Path) -> None:
    """On a GPU machine with TensorRT: the real parser's layers pass the plugin check."""
    trt = trt_builder.import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    nd = trt.NetworkDefinitionCreationFlag
    flags = 1 << int(nd.EXPLICIT_BATCH) if hasattr(nd, "EXPLICIT_BATCH") and not hasattr(nd, "STRONGLY_TYPED") else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    path = fx.write_model(tmp_path / "model.onnx")
    assert parser.parse_from_file(str(path)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    layers = trt_builder.network_layers(network)
    nodes = [i.name for i in roialign_nodes(onnx.load(str(path)))]
    res = check_roialign_plugins(nodes, layers)
    assert res.ok, res.errors
    assert set(res.matched) == set(nodes)
    kinds = {l.layer_type for l in layers if l.name in res.matched.values()}
    assert kinds <= {"PLUGIN_V2", "PLUGIN_V3"}


@pytest.mark.tensorrt
def test_build_fp16_engine_with_roialign_plugin(tmp_path: Path) -> None:
    """On a GPU machine with TensorRT: build the tiny RoiAlign graph, check plugin + manifest."""
    from rfnet.export import build
    from rfnet.runtime.manifest import check_compatible, load_manifest
    from rfnet.export.trt.cuda_device import gpu_info

    trt = trt_builder.import_tensorrt()
    caps = trt_builder.capabilities(trt)
    onnx_path = fx.write_model(tmp_path / "model.onnx")
    if caps.strongly_typed_only:
        fx.write_model(tmp_path / "model_fp16.onnx", fp16=True)
    engine = tmp_path / "tiny.engine"
    rc = build.main(["--onnx", str(onnx_path), "--precision", "fp16", "--output", str(engine),
                     "--min", "1x3x64x64", "--opt", "2x3x64x64", "--max", "2x3x64x64",
                     "--workspace-gb", "0.5", "--timing-cache", str(tmp_path / "t.timing")])
    assert rc == 0 and engine.stat().st_size > 0
    m = load_manifest(engine)
    gpu = gpu_info()
    check_compatible(m, tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability)
    assert m["precision"] == "fp16" and m["strongly_typed"] == caps.strongly_typed_only
    assert m["inputs"][0]["name"] == "image" and m["inputs"][0]["shape"] == [-1, 3, 64, 64]
    assert m["profiles"]["image"]["max"] == [2, 3, 64, 64]
    assert m["input_size"] == 64 and m["class_names"] == ["disc", "cup"]
    assert (tmp_path / "t.timing").stat().st_size > 0


def test_a_node_named_like_a_renamed_layer_keeps_its_own_precision(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser names a clashing second layer of node X "X_1"; a *node* called X_1 (here a trunk
    Conv beside an FP32 RoiAlign called X) is its own layer and is not constrained to FP32."""
    kw = {"names": ("/pool/RoiAlign", "/pool/RoiAlign_p3"), "conv_name": "/pool/RoiAlign_1"}
    world, plan, res = _build(tmp_path, monkeypatch, "--precision", "fp16", onnx_kwargs=kw)
    assert isinstance(res, trt_builder.BuildResult), res
    assert "/pool/RoiAlign_1" in plan.node_names and "/pool/RoiAlign_1" not in plan.fp32_nodes
    assert "/pool/RoiAlign" in world.layer_precision and "/pool/RoiAlign_1" not in world.layer_precision


def test_dla_on_tensorrt_11_says_which_releases_have_dla(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, res = _build(tmp_path, monkeypatch, "--precision", "fp16", "--dla-core", "0", "--batch", "1", line="11",
                       dla_cores=0, onnx_kwargs={"fp16": True})
    assert isinstance(res, trt_builder.BuildError) and "11.0-11.3 have no DLA" in str(res)
    _, _, res = _build(tmp_path, monkeypatch, "--precision", "fp16", "--dla-core", "0", "--batch", "1", dla_cores=0)
    assert isinstance(res, trt_builder.BuildError) and "this GPU has no DLA cores" in str(res)


def test_a_builder_that_cannot_start_cuda_is_the_projects_error() -> None:
    """TensorRT's Builder constructor fails with a TypeError (a null pointer from pybind11) when CUDA
    cannot start: build.py reports it as CudaUnavailableError (exit 2), not a traceback."""
    from rfnet.export.trt import cuda_device

    def builder(logger: object) -> object:
        raise TypeError("__init__(): incompatible constructor arguments")

    with pytest.raises(cuda_device.CudaUnavailableError, match="CUDA did not start"):
        trt_builder.make_builder(SimpleNamespace(Builder=builder), object())
