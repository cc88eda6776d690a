"""Every TensorRT name the builder, the calibrator and the runtime backend use, pinned to tensorrt-stubs 10.x.

:data:`USED` lists each attribute, enum member, function and method the code touches, with
the positional-argument count it calls methods with. The tests check that

* each exists in the installed TensorRT 10.x stubs and accepts that call (signature binding);
* the names that only some TensorRT lines have (:data:`VERSION_SPECIFIC`: 8.6 lacks them, or
  11 removed them) are feature-detected with ``hasattr`` in the source;
* no name outside the stubs is used at all (:data:`NOT_IN_10X_STUBS`, empty on purpose: the
  code uses no 8.6-only or 11-only API);
* the list is complete: every ``trt.X.Y`` in the source, and everything the build and runtime
  steps touch on stub-pinned stand-ins (``tests/support/trt_stubs.py``), is in it;
* the calibrator overrides only methods ``IInt8Calibrator`` has.

A misspelled name in the code therefore fails here (the stand-in has no such member, the scan
finds a name the stubs lack) and in mypy. None of this proves TensorRT's behaviour: only the
``tensorrt``-marked tests on a GPU machine run the real library.
"""
from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import onnx
import pytest

from tests.support import trt_onnx as fx
from tests.support.trt_fake_build import FakeBuildWorld
from tests.support.trt_stubs import fake_tensorrt, stub_index

REPO = Path(__file__).resolve().parents[3]
SOURCES = ["export/trt/trt_builder.py", "export/trt/trt_config.py", "export/trt/trt_calibrator.py",
           "runtime/backends/trt_loader.py", "runtime/backends/trt_pycuda.py", "runtime/backends/trt_io.py"]

#: "Owner.member" (or a module-level "name") -> positional arguments the code calls it with (None: not called).
USED: dict[str, int | None] = {
    # module level
    "Builder.__init__": 1, "Logger.__init__": 1, "OnnxParser.__init__": 2, "Runtime.__init__": 1, "Dims.__init__": 1,
    "init_libnvinfer_plugins": 2, "get_plugin_registry": 0, "nptype": 1, "__version__": None,
    "float32": None, "float16": None,
    # enums
    "Logger.WARNING": None, "Logger.VERBOSE": None, "Logger.min_severity": None,
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": None, "NetworkDefinitionCreationFlag.STRONGLY_TYPED": None,
    "BuilderFlag.FP16": None, "BuilderFlag.INT8": None, "BuilderFlag.TF32": None, "BuilderFlag.GPU_FALLBACK": None,
    "BuilderFlag.PREFER_PRECISION_CONSTRAINTS": None, "MemoryPoolType.WORKSPACE": None,
    "ProfilingVerbosity.DETAILED": None, "DeviceType.DLA": None, "LayerType.PLUGIN_V2": None,
    "LayerType.PLUGIN_V3": None, "PluginCapabilityType.CORE": None, "TensorIOMode.INPUT": None,
    # builder
    "Builder.create_network": 1, "Builder.create_builder_config": 0, "Builder.create_optimization_profile": 0,
    "Builder.build_serialized_network": 2, "Builder.num_DLA_cores": None,
    "OnnxParser.parse_from_file": 1, "OnnxParser.num_errors": None, "OnnxParser.get_error": 1,
    "INetworkDefinition.num_layers": None, "INetworkDefinition.get_layer": 1, "INetworkDefinition.num_inputs": None,
    "INetworkDefinition.get_input": 1, "INetworkDefinition.num_outputs": None, "INetworkDefinition.get_output": 1,
    "ILayer.name": None, "ILayer.type": None, "ILayer.num_outputs": None, "ILayer.get_output": 1,
    "ILayer.precision": None, "ILayer.set_output_type": 2, "ITensor.name": None, "ITensor.shape": None,
    "ITensor.dtype": None, "IPluginV2Layer": None, "IPluginV2Layer.plugin": None, "IPluginV2.plugin_type": None,
    "IPluginV3Layer": None, "IPluginV3Layer.plugin": None, "IPluginV3.get_capability_interface": 1,
    "IPluginV3OneCore.plugin_name": None, "IPluginRegistry.all_creators": None,
    "IPluginRegistry.plugin_creator_list": None, "IPluginCreatorV3One.name": None,
    "IPluginCreatorV3One.plugin_version": None, "IPluginCreatorV3One.plugin_namespace": None,
    "IBuilderConfig.set_memory_pool_limit": 2, "IBuilderConfig.profiling_verbosity": None,
    "IBuilderConfig.set_flag": 1, "IBuilderConfig.clear_flag": 1, "IBuilderConfig.add_optimization_profile": 1,
    "IBuilderConfig.int8_calibrator": None, "IBuilderConfig.set_calibration_profile": 1,
    "IBuilderConfig.create_timing_cache": 1, "IBuilderConfig.set_timing_cache": 2,
    "IBuilderConfig.get_timing_cache": 0, "ITimingCache.serialize": 0, "IBuilderConfig.default_device_type": None,
    "IBuilderConfig.DLA_core": None, "IBuilderConfig.can_run_on_DLA": 1, "IOptimizationProfile.set_shape": 4,
    # calibrator (subclassed; TensorRT calls the overrides)
    "IInt8MinMaxCalibrator": None, "IInt8EntropyCalibrator2": None, "IInt8MinMaxCalibrator.__init__": 0,
    "IInt8EntropyCalibrator2.__init__": 0,
    # runtime backend
    "Runtime.DLA_core": None, "Runtime.deserialize_cuda_engine": 1, "ICudaEngine.num_io_tensors": None,
    "ICudaEngine.get_tensor_name": 1, "ICudaEngine.get_tensor_mode": 1, "ICudaEngine.get_tensor_dtype": 1,
    "ICudaEngine.get_tensor_shape": 1, "ICudaEngine.get_tensor_profile_shape": 2,
    "ICudaEngine.create_execution_context": 0, "IExecutionContext.set_input_shape": 2,
    "IExecutionContext.get_tensor_shape": 1, "IExecutionContext.set_tensor_address": 2,
    "IExecutionContext.execute_async_v3": 1,
}

#: In the 10.x stubs but not in every TensorRT line; the code feature-detects each with hasattr.
VERSION_SPECIFIC: dict[str, str] = {
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": "8.6 needs it; deprecated in 10, removed in 11",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": "absent from 8.6 (added in 9.x); 11 is strongly typed only",
    "BuilderFlag.FP16": "removed in 11 (strong typing: precision comes from the graph)",
    "BuilderFlag.INT8": "removed in 11 (Q/DQ ONNX only)",
    "IInt8MinMaxCalibrator": "calibrators deprecated in 10.1, removed in 11",
    "BuilderFlag.TF32": "11.1 still has it; guarded in case a later release drops it",
    "LayerType.PLUGIN_V2": "IPluginV2 layers: 8.6/10.0 ROIAlign_TRT v1; deprecated in 11",
    "LayerType.PLUGIN_V3": "absent from 8.6 (IPluginV3 arrived in 10.0)",
    "IPluginRegistry.all_creators": "absent from 8.6 (plugin_creator_list there, deprecated in 10)",
}
#: Names the code would use that the 10.x stubs lack (8.6-only or 11-only API): none.
NOT_IN_10X_STUBS: dict[str, str] = {}


def _split(entry: str) -> tuple[str | None, str]:
    owner, _, name = entry.rpartition(".")
    return (owner or None), name


def test_every_used_name_exists_in_the_stubs_with_a_compatible_call() -> None:
    index = stub_index()
    for entry, nargs in USED.items():
        if entry in NOT_IN_10X_STUBS:
            continue
        owner, name = _split(entry)
        if owner is None:
            assert name in index.classes or name in index.functions or name in index.module_attrs, entry
            if nargs is not None:
                index.check_call(None, name, (object(),) * nargs, {})
            continue
        if name == "__init__":
            index.check_call(owner, "__init__", (object(),) * (nargs or 0), {})
            continue
        kind = index.member_kind(owner, name)
        assert kind is not None, f"tensorrt.{entry} does not exist in tensorrt-stubs {index.version}"
        if nargs is not None:
            assert kind == "method", f"tensorrt.{entry} is a {kind}, the code calls it"
            index.check_call(owner, name, (object(),) * nargs, {})


def test_version_specific_names_are_feature_detected() -> None:
    guarded: set[str] = set()  # second arguments of every hasattr(...) call in the sources
    for f in SOURCES:
        for node in ast.walk(ast.parse((REPO / f).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr" and len(node.args) == 2 \
                    and isinstance(node.args[1], ast.Constant):
                guarded.add(str(node.args[1].value))
    for entry, why in VERSION_SPECIFIC.items():
        assert entry in USED, entry
        assert entry.rsplit(".", 1)[-1] in guarded, f"{entry} ({why}) is used without a hasattr guard"


def _trt_chains(path: Path) -> set[str]:
    """``trt.X`` / ``trt.X.Y`` (receiver named trt / trt_mod) and ``hasattr(<trt chain>, "Y")`` in ``path``."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    aliases: dict[str, list[str]] = {}  # lt = trt.LayerType -> {"lt": ["LayerType"]}

    def chain(node: ast.AST) -> list[str] | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in ("trt", "trt_mod") and parts:
            return list(reversed(parts))
        if isinstance(node, ast.Name) and node.id in aliases:
            return aliases[node.id] + list(reversed(parts))
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = chain(node.value) if isinstance(node.value, ast.Attribute) else None
            if target:
                aliases[node.targets[0].id] = target

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = chain(node)
            if parts:
                found.add(".".join(parts[:2]))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr" and len(node.args) == 2:
            target, name = node.args
            parts = chain(target) if isinstance(target, (ast.Attribute, ast.Name)) else None
            if isinstance(target, ast.Name) and target.id in ("trt", "trt_mod"):
                parts = []
            if parts is not None and isinstance(name, ast.Constant):
                found.add(".".join([*parts[:1], str(name.value)]))
    return found


def test_every_tensorrt_name_in_the_source_is_listed_and_exists() -> None:
    index = stub_index()
    listed = set(USED) | {e.split(".")[0] for e in USED}
    for f in SOURCES:
        for entry in sorted(_trt_chains(REPO / f)):
            if entry in ("Logger.Severity",):
                continue
            owner, name = _split(entry)
            exists = (name in index.classes or name in index.functions or name in index.module_attrs) if owner is None \
                else index.member_kind(owner, name) is not None
            assert exists or entry in NOT_IN_10X_STUBS, f"{f}: tensorrt.{entry} does not exist in tensorrt-stubs {index.version}"
            assert entry in listed or f"{index.owner_of(owner, name)}.{name}" in listed if owner else entry in listed, \
                f"{f}: tensorrt.{entry} is used but not in USED"


def _record_build_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Run the build steps on stub-pinned stand-ins for 8.6, 10 and 11 (and the runtime's); return the names touched."""
    from rfnet.export import build
    from rfnet.export.trt import cuda_device, trt_builder

    import cv2
    import numpy as np

    class Buf:
        def __init__(self, n: int) -> None:
            self.ptr = 1

        def copy_from_host(self, a: object) -> None: ...

        def free(self) -> None: ...

    monkeypatch.setattr(cuda_device, "DeviceBuffer", Buf)
    cal = tmp_path / "cal"
    cal.mkdir()
    cv2.imwrite(str(cal / "a.png"), np.zeros((8, 8, 3), np.uint8))
    used: set[str] = set()
    runs = [("10", ["--precision", "int8", "--calib-dir", str(cal), "--calib-batch", "1", "--workspace-gb", "1",
                    "--timing-cache", str(tmp_path / "t.timing"), "-v"]),
            ("10", ["--precision", "fp16", "--dla-core", "0", "--calib-method", "entropy"]),
            ("10", ["--precision", "int8", "--calib-dir", str(cal), "--calib-method", "entropy", "--calib-batch", "1",
                    "--overwrite"]),
            ("11", ["--precision", "fp32"]), ("8.6", ["--precision", "fp16"])]
    onnx_path = fx.write_model(tmp_path / "model.onnx")
    for i, (line, cli) in enumerate(runs):
        args = build.build_parser().parse_args(["--onnx", str(onnx_path), "--output", str(tmp_path / f"{i}.engine"), *cli])
        plan = build.make_plan(args, None, build.analyse_onnx(onnx_path))
        world = FakeBuildWorld(onnx.load(str(onnx_path)), line, dla_cores=1)
        monkeypatch.setitem(sys.modules, "tensorrt", world.trt)
        trt_builder.build_engine(plan)
        used |= world.trt.used
    return used | _record_runtime_steps(tmp_path, monkeypatch)


def _record_runtime_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Deserialise on a DLA core, describe the engine's I/O, run one call; return the names touched."""
    import numpy as np

    from rfnet.runtime.backends import trt_pycuda

    trt = fake_tensorrt("10", functions={"init_libnvinfer_plugins": lambda lg, ns: True, "nptype": lambda d: np.float32})
    io, float_type = trt.TensorIOMode, trt.DataType.FLOAT
    inp, out = io.INPUT, io.OUTPUT
    context = trt.make("IExecutionContext", set_input_shape=lambda n, s: True, get_tensor_shape=lambda n: (1, 3, 8, 8),
                       set_tensor_address=lambda n, a: True, execute_async_v3=lambda h: True)
    engine = trt.make("ICudaEngine", num_io_tensors=2, get_tensor_name=lambda i: ["image", "out"][i],
                      get_tensor_mode=lambda n: inp if n == "image" else out,
                      get_tensor_dtype=lambda n: float_type, get_tensor_shape=lambda n: (-1, 3, 8, 8),
                      get_tensor_profile_shape=lambda n, p: [(1, 3, 8, 8)] * 3, create_execution_context=lambda: context)
    trt.constructors.update(Logger=lambda s=None: trt.make("Logger", min_severity=s),
                            Runtime=lambda lg: trt.make("Runtime", deserialize_cuda_engine=lambda b: engine))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    trt.used.clear()  # from here on: only what the code under test touches
    (tmp_path / "r.engine").write_bytes(b"x")
    trt_pycuda.deserialize_engine(tmp_path / "r.engine", {"dla_core": 0})
    backend = trt_pycuda.TensorRTBackend(tmp_path / "r.engine")

    class Cuda:
        Stream = type("Stream", (), {"handle": 7, "synchronize": lambda self: None})

        @staticmethod
        def pagelocked_empty(n: int, dt: object) -> np.ndarray:
            return np.zeros(n, np.float32)

        @staticmethod
        def mem_alloc(n: int) -> object:
            return type("A", (), {"__int__": lambda self: 16, "free": lambda self: None})()

        memcpy_htod_async = memcpy_dtoh_async = staticmethod(lambda *a: None)

    backend._bind(trt, Cuda(), engine)
    backend._loaded = True
    backend.infer({"image": np.zeros((1, 3, 8, 8), np.float32)})
    return set(trt.used)


def test_the_list_covers_everything_the_steps_touch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = stub_index()
    touched = _record_build_steps(tmp_path, monkeypatch)
    missing = []
    for entry in sorted(touched):
        owner, name = _split(entry)
        key = f"{index.owner_of(owner, name)}.{name}" if owner and name != "__init__" else entry
        if entry not in USED and key not in USED and entry not in {e.split(".")[0] for e in USED}:
            missing.append(entry)
    assert not missing, f"used by the code but not listed in USED: {missing}"


def test_calibrator_overrides_only_iint8calibrator_methods() -> None:
    """A misspelled override (``get_bacth``) would never be called by TensorRT: refuse it."""
    from rfnet.export.trt.trt_calibrator import _CalibratorBody

    index = stub_index()
    own_helpers = {"close"}  # called by the builder, not by TensorRT
    for name, member in vars(_CalibratorBody).items():
        if name.startswith("_") or not callable(member) or name in own_helpers:
            continue
        assert index.member_kind("IInt8Calibrator", name) == "method", f"IInt8Calibrator has no {name!r} to override"
        params = list(inspect.signature(member).parameters.values())[1:]
        index.check_call("IInt8Calibrator", name, tuple(object() for _ in params), {})
