"""RoIAlign plugin check, graph precision, TensorRT feature detection, stubs/mypy, and a GPU build.

Without TensorRT the plugin check runs on a stand-in for the parsed network built from a real
ONNX graph (two RoiAlign nodes + Max, as Fusion Feature Pooling exports), named the way
onnx-tensorrt names layers. The test marked ``tensorrt`` builds a real engine on a GPU machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from export import trt_builder
from export.graph_checks import (
    LayerInfo,
    check_roialign_plugins,
    graph_precision,
    precision_problem,
    roialign_attribute_issues,
    roialign_nodes,
    sibling_candidates,
    tensorrt_node_name,
)
from export.trt_typing_stubs import fix_def_line

from tests.support import trt_onnx as fx

REPO = Path(__file__).resolve().parents[2]
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
    assert precision_problem("int8", g8, strongly_typed=True) is None
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


def _real_tensorrt() -> bool:
    try:
        trt_builder.import_tensorrt()
        return True
    except trt_builder.TensorRTUnavailableError:
        return False


@pytest.mark.skipif(_real_tensorrt(), reason="TensorRT is installed here")
def test_import_tensorrt_explains_what_to_install() -> None:
    with pytest.raises(trt_builder.TensorRTUnavailableError, match=r'pip install "\.\[tensorrt\]"'):
        trt_builder.import_tensorrt()


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
    from export.trt_typing_stubs import generate

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
    ok = subprocess.run(cmd + ["export/trt_builder.py", "runtime/backends/trt_pycuda.py"], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(cmd + [str(probe)], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and '"Builder" has no attribute "build_engine"' in bad.stdout, bad.stdout


def test_gpu_info_without_gpu_says_why() -> None:
    from export import cuda_device

    try:
        info = cuda_device.gpu_info()
    except cuda_device.CudaUnavailableError as exc:
        assert str(exc)
    else:  # a GPU machine
        assert info.name and len(info.compute_capability.split(".")) == 2


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
    from export import build
    from runtime.manifest import check_compatible, load_manifest
    from export.cuda_device import gpu_info

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
