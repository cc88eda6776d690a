"""Execute a :class:`~rfnet.export.trt.build_plan.BuildPlan` with TensorRT, in Polygraphy-style small steps.

:func:`build_engine` = :func:`network_flags` -> :func:`parse_onnx` -> :func:`check_plugins`
-> :func:`configure` (``export/trt/trt_config.py``) -> :func:`build_serialized`; each step takes
the TensorRT objects explicitly, so tests drive it with stand-ins pinned to the TensorRT 10.x
stubs (``tests/support/trt_stubs.py``). Written against three API generations and
feature-detected with ``hasattr`` (never the version string):

===================  =========================================  ===============================
                     TensorRT 8.6 / 10.x (weakly typed)          TensorRT 11.x (strongly typed)
===================  =========================================  ===============================
network flags        8.6: ``1 << EXPLICIT_BATCH``; 10.x: none    ``1 << STRONGLY_TYPED`` if present
precision            ``BuilderFlag.FP16`` / ``INT8`` (+FP16),    from the ONNX (FP16 / Q/DQ)
                     non-trunk layers constrained to FP32
implicit INT8        ``IInt8MinMaxCalibrator`` (DLA:             removed: Q/DQ ONNX only
                     ``IInt8EntropyCalibrator2``) + cache
fp32                 ``TF32`` cleared                            ``TF32`` cleared
RoiAlign             ``ROIAlign_TRT`` v1 (PLUGIN_V2), v2 from    ``ROIAlign_TRT`` v2 (PLUGIN_V3)
                     10.1 (PLUGIN_V3)
===================  =========================================  ===============================

TensorRT is imported through ``rfnet.runtime.backends.trt_loader`` (one ``import_tensorrt`` for the
builder and the runtime; one process-wide logger for ``init_libnvinfer_plugins``). Nothing
here has run against a real TensorRT: no machine of this project has one.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rfnet.export.trt import cuda_device, trt_config
from rfnet.export.trt.build_plan import BuildPlan
from rfnet.export.onnx_tools.graph_checks import LayerInfo, PluginCheckError, PluginCheckResult, check_roialign_plugins
from rfnet.export.trt.trt_config import BuildError
from rfnet.common.fileio import atomic_write_bytes
from rfnet.runtime.backends.trt_loader import INSTALL_HINT, TensorRTUnavailableError, import_tensorrt, process_logger

if TYPE_CHECKING:  # type-checked against the tensorrt-stubs package (10.x API)
    import tensorrt as trt

__all__ = ["BuildError", "BuildResult", "Capabilities", "INSTALL_HINT", "TensorRTUnavailableError", "build_engine",
           "capabilities", "check_plugins", "configure", "import_tensorrt", "network_flags", "network_layers",
           "parse_onnx"]

log = logging.getLogger(__name__)

ROIALIGN_CREATOR = "ROIAlign_TRT"
_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
           "INT32": "int32", "INT64": "int64", "BOOL": "bool", "FP8": "float8", "INT4": "int4"}


@dataclass(frozen=True)
class Capabilities:
    """What the installed TensorRT offers (feature-detected)."""

    version: str
    strongly_typed_only: bool  # 11.x: no BuilderFlag.FP16
    has_calibrators: bool  # IInt8MinMaxCalibrator / IInt8EntropyCalibrator2 and config.int8_calibrator
    plugin_v3_layers: bool  # LayerType.PLUGIN_V3 (10.0+)


def capabilities(trt_mod: Any) -> Capabilities:
    flags = trt_mod.BuilderFlag
    return Capabilities(
        version=str(getattr(trt_mod, "__version__", "?")),
        strongly_typed_only=not hasattr(flags, "FP16"),
        has_calibrators=hasattr(trt_mod, "IInt8MinMaxCalibrator") and hasattr(flags, "INT8"),
        plugin_v3_layers=hasattr(trt_mod.LayerType, "PLUGIN_V3"),
    )


def _enum_name(value: object) -> str:
    name = getattr(value, "name", None)
    return str(name) if name else str(value).rsplit(".", 1)[-1]


def dtype_name(dt: object) -> str:
    """``trt.DataType.HALF`` -> ``"float16"`` (numpy-style names in the manifest)."""
    n = _enum_name(dt)
    return _DTYPES.get(n, n.lower())


@dataclass
class BuildResult:
    """What :func:`build_engine` produced (the engine bytes are not written yet)."""

    engine: memoryview
    tensorrt_version: str
    strongly_typed: bool
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    builder_flags: list[str]
    network_flags: list[str]
    plugin_check: PluginCheckResult
    build_time_s: float
    layer_placement: dict[str, int] | None = None
    gpu_fallback_layers: list[str] = field(default_factory=list)
    calib_cache_written: Path | None = None
    plugin_unverified: list[str] = field(default_factory=list)  # RoiAlign nodes whose plugin name was unreadable


def network_flags(caps: Capabilities) -> tuple[int, list[str]]:
    """``create_network`` flags: STRONGLY_TYPED on 11.x, EXPLICIT_BATCH on 8.x, none on 10.x."""
    import tensorrt as trt

    nd = trt.NetworkDefinitionCreationFlag
    flags, names = 0, []
    if caps.strongly_typed_only and hasattr(nd, "STRONGLY_TYPED"):
        flags |= 1 << int(nd.STRONGLY_TYPED)  # enum values were renumbered in 11: never hard-code them
        names.append("STRONGLY_TYPED")
    if hasattr(nd, "EXPLICIT_BATCH") and not hasattr(nd, "STRONGLY_TYPED"):
        flags |= 1 << int(nd.EXPLICIT_BATCH)  # TensorRT 8.x; implicit (and deprecated) from 10.0
        names.append("EXPLICIT_BATCH")
    return flags, names


def parse_onnx(network: "trt.INetworkDefinition", logger: "trt.ILogger", path: Path, version: str) -> None:
    """Parse ``path`` into ``network``; ``BuildError`` with every parser error."""
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"{path}: TensorRT {version} cannot parse it:\n  " + "\n  ".join(errors))


def _plugin_name(layer: "trt.ILayer") -> str | None:
    """Plugin name of a plugin layer, read through the typed layer class (as Polygraphy does).

    ``IPluginV3.get_capability_interface`` is a stub returning None in the Python bindings of
    TensorRT 10.1-10.3 (JetPack 6.1/6.2), real from 10.4: the name is then unknown (None).
    """
    import tensorrt as trt

    lt = trt.LayerType
    try:
        if hasattr(lt, "PLUGIN_V2") and layer.type == lt.PLUGIN_V2:
            layer.__class__ = trt.IPluginV2Layer
            return str(cast("trt.IPluginV2Layer", layer).plugin.plugin_type)
        if hasattr(lt, "PLUGIN_V3") and layer.type == lt.PLUGIN_V3:
            layer.__class__ = trt.IPluginV3Layer
            core = cast("trt.IPluginV3Layer", layer).plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
            return None if core is None else str(cast("trt.IPluginV3OneCore", core).plugin_name)
    except Exception as exc:  # the name is a check aid; an unreadable one is reported, not fatal
        log.debug("cannot read the plugin name of layer %s: %s", layer.name, exc)
    return None


def network_layers(network: "trt.INetworkDefinition") -> list[LayerInfo]:
    """(name, type, plugin name or None) of every layer of the parsed network."""
    out: list[LayerInfo] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = _enum_name(layer.type)
        out.append(LayerInfo(layer.name, kind, _plugin_name(layer) if kind.startswith("PLUGIN") else None))
    return out


def _registered_roialign() -> list[str]:
    """Versions of the ``ROIAlign_TRT`` creators in TensorRT's plugin registry (namespace "")."""
    import tensorrt as trt

    registry = trt.get_plugin_registry()
    creators = registry.all_creators if hasattr(registry, "all_creators") else registry.plugin_creator_list
    # all_creators yields IPluginCreator (V2) and IPluginCreatorV3One objects; both carry these names.
    return sorted(str(getattr(c, "plugin_version", "?")) for c in creators
                  if getattr(c, "name", None) == ROIALIGN_CREATOR and getattr(c, "plugin_namespace", "") == "")


def check_plugins(network: "trt.INetworkDefinition", plan: BuildPlan) -> tuple[PluginCheckResult, list[str]]:
    """Every RoiAlign node must be a ``ROIAlign_TRT`` plugin layer; say plainly what could not be checked.

    Where the plugin name is unreadable (TensorRT 10.1-10.3), the registry check stands in:
    the layer is a plugin layer named after the node and ``ROIAlign_TRT`` is the registered
    creator (namespace ""), but the layer's own plugin name was not verified. Returns the
    check and the RoiAlign nodes whose plugin name could not be read (shown by build.py).
    """
    layers = network_layers(network)
    check = check_roialign_plugins(plan.roialign_nodes, layers)
    unreadable = {layer.name for layer in layers if layer.layer_type.startswith("PLUGIN") and layer.plugin_type is None}
    unverified = [node for node, layer_name in check.matched.items() if layer_name in unreadable]
    if unverified:
        versions = _registered_roialign()
        if not versions:
            check.errors.append(f"no {ROIALIGN_CREATOR} creator is registered with TensorRT "
                                "(trt.init_libnvinfer_plugins not called, or libnvinfer_plugin missing)")
        check.warnings = [f"{w}; NOT verified by name: this TensorRT's Python API returns no plugin name "
                          f"(TensorRT 10.1-10.3); registered {ROIALIGN_CREATOR} creator versions: {versions}"
                          for w in check.warnings]
    for w in check.warnings:
        log.warning("%s", w)
    if not check.ok:
        raise PluginCheckError(f"{plan.onnx_path}: " + "; ".join(check.errors))
    for node, layer_name in check.matched.items():
        log.info("RoiAlign %s -> ROIAlign_TRT layer %s", node, layer_name)
    return check, unverified


@dataclass
class Configured:
    """What :func:`configure` set up."""

    config: Any
    flags: list[str]
    calibrator: Any = None
    placement: dict[str, int] | None = None
    fallback: list[str] = field(default_factory=list)


def configure(builder: "trt.Builder", network: "trt.INetworkDefinition", plan: BuildPlan,
              caps: Capabilities) -> Configured:
    """Builder config: workspace, precision (+FP32 constraints), profile, calibration, timing cache, DLA."""
    import tensorrt as trt

    config = builder.create_builder_config()
    out = Configured(config, [])
    if plan.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if plan.verbose:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    strongly_typed = caps.strongly_typed_only
    trt_config.set_precision(config, plan, strongly_typed=strongly_typed, flags=out.flags)
    trt_config.constrain_fp32_layers(network, config, plan, strongly_typed=strongly_typed, flags=out.flags)
    trt_config.add_profile(builder, config, plan)
    if plan.implicit_int8 and not strongly_typed:
        if not caps.has_calibrators:
            raise BuildError(f"TensorRT {caps.version} has no INT8 calibrators: pass the Q/DQ ONNX (export/quantize.py)")
        out.calibrator = trt_config.setup_calibration(builder, network, config, plan, out.flags)
    if plan.timing_cache is not None:
        trt_config.apply_timing_cache(config, plan.timing_cache)
    if plan.dla_core is not None:
        out.placement, out.fallback = trt_config.setup_dla(builder, network, config, plan, out.flags)
    return out


def build_serialized(builder: "trt.Builder", network: "trt.INetworkDefinition", setup: Configured,
                     plan: BuildPlan, version: str) -> tuple[memoryview, float]:
    """``build_serialized_network``; raises the calibrator's error, saves the timing cache."""
    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, setup.config)
    finally:
        if setup.calibrator is not None:
            setup.calibrator.close()
    elapsed = time.perf_counter() - t0
    if setup.calibrator is not None and setup.calibrator.error is not None:
        err = setup.calibrator.error
        raise BuildError(f"INT8 calibration failed: {type(err).__name__}: {err}") from err
    if serialized is None:
        raise BuildError(f"TensorRT {version} failed to build {plan.onnx_path}; rerun with --verbose for its log")
    if plan.timing_cache is not None:
        cache = setup.config.get_timing_cache()
        if cache is None:
            raise BuildError(f"the engine was built but TensorRT returned no timing cache to save to {plan.timing_cache}")
        atomic_write_bytes(plan.timing_cache, bytes(memoryview(cache.serialize())))
        log.info("timing cache saved to %s", plan.timing_cache)
    return memoryview(serialized).cast("B"), elapsed  # plain bytes view of IHostMemory


def _tensor_specs(tensors: list["trt.ITensor"]) -> list[dict[str, Any]]:
    # Dims supports len() and indexing in every version (the stubs declare no __iter__).
    return [{"name": t.name, "shape": [int(t.shape[i]) for i in range(len(t.shape))], "dtype": dtype_name(t.dtype)}
            for t in tensors]


def make_builder(trt: Any, logger: Any) -> "trt.Builder":
    """``trt.Builder(logger)``; when CUDA cannot start (no GPU, a driver older than TensorRT's CUDA),
    TensorRT's pybind11 constructor returns a null pointer that surfaces as a TypeError: that
    becomes :class:`cuda_device.CudaUnavailableError` (exit 2) naming what to check."""
    try:
        builder = trt.Builder(logger)
    except TypeError as exc:
        raise cuda_device.CudaUnavailableError(
            f"TensorRT could not create a builder ({exc}): CUDA did not start. Check that a GPU is visible "
            "(nvidia-smi) and that the driver supports the CUDA of this TensorRT (engines/README.md, 'Install')") from exc
    if builder is None:
        raise cuda_device.CudaUnavailableError("TensorRT could not create a builder (CUDA did not start)")
    return builder


def build_engine(plan: BuildPlan) -> BuildResult:
    """Parse ``plan.onnx_path``, check the RoIAlign plugin layers, configure and build.

    Raises:
        TensorRTUnavailableError, BuildError, PluginCheckError, cuda_device.CudaUnavailableError.
    """
    import_tensorrt()  # clear message first
    import tensorrt as trt  # the real module from here on (typed by tensorrt-stubs)

    caps = capabilities(trt)
    logger = process_logger(plan.verbose)  # also registers ROIAlign_TRT, before parsing
    builder = make_builder(trt, logger)
    net_flags, net_flag_names = network_flags(caps)
    network = builder.create_network(net_flags)
    parse_onnx(network, logger, plan.onnx_path, caps.version)
    check, unverified = check_plugins(network, plan)
    setup = configure(builder, network, plan, caps)
    inputs = _tensor_specs([network.get_input(i) for i in range(network.num_inputs)])
    outputs = _tensor_specs([network.get_output(i) for i in range(network.num_outputs)])
    kind = "strongly typed" if caps.strongly_typed_only else "weakly typed"
    log.info("building the engine (TensorRT %s, %s)...", caps.version, kind)
    engine, elapsed = build_serialized(builder, network, setup, plan, caps.version)
    return BuildResult(
        engine=engine, tensorrt_version=caps.version, strongly_typed=caps.strongly_typed_only,
        inputs=inputs, outputs=outputs, builder_flags=setup.flags, network_flags=net_flag_names,
        plugin_check=check, build_time_s=round(elapsed, 3), layer_placement=setup.placement,
        gpu_fallback_layers=setup.fallback,
        calib_cache_written=plan.calib_cache if setup.calibrator is not None and plan.calib_set is not None else None,
        plugin_unverified=unverified,
    )
