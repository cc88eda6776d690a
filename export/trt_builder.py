"""Execute a :class:`~export.build_plan.BuildPlan` with TensorRT: the only module importing ``tensorrt``.

Written against three API generations and feature-detected with ``hasattr`` (never the
version string), each call checked against NVIDIA's Python API documentation:

===================  =========================================  ===============================
                     TensorRT 8.6 / 10.x (weakly typed)          TensorRT 11.x (strongly typed)
===================  =========================================  ===============================
network flags        8.6: ``1 << EXPLICIT_BATCH``; 10.x: none    ``1 << STRONGLY_TYPED`` if present
precision            ``BuilderFlag.FP16`` / ``INT8`` (+FP16)     from the ONNX (FP16 / Q/DQ)
implicit INT8        ``IInt8MinMaxCalibrator`` (DLA:             removed: Q/DQ ONNX only
                     ``IInt8EntropyCalibrator2``) + cache
RoiAlign             ``ROIAlign_TRT`` v1 (PLUGIN_V2), v2 from    ``ROIAlign_TRT`` v2 (PLUGIN_V3)
                     10.1 (PLUGIN_V3)
===================  =========================================  ===============================

Common to all: ``init_libnvinfer_plugins``, ``OnnxParser.parse_from_file``, optimisation
profile, ``set_memory_pool_limit(MemoryPoolType.WORKSPACE)``, timing cache
(``create_timing_cache`` / ``set_timing_cache`` / ``serialize``), DLA
(``default_device_type``, ``DLA_core``, ``BuilderFlag.GPU_FALLBACK``, ``can_run_on_DLA``),
``build_serialized_network``. The module imports without TensorRT; :func:`import_tensorrt`
explains what to install.
"""
from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from export.build_plan import BuildPlan
from export.graph_checks import LayerInfo, PluginCheckError, PluginCheckResult, check_roialign_plugins
from rfnet.common.fileio import atomic_write_bytes

if TYPE_CHECKING:  # type-checked against the tensorrt-stubs package (10.x API)
    import tensorrt as trt
    from typing_extensions import Buffer

log = logging.getLogger(__name__)

INSTALL_HINT = (
    'on a machine with an NVIDIA GPU run `pip install ".[tensorrt]"` (x86: the tensorrt wheel; '
    "Jetson: TensorRT comes with JetPack, use the system python3 with python3-libnvinfer)"
)

_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8",
    "INT4": "int4",
}


class TensorRTUnavailableError(RuntimeError):
    """TensorRT's Python package is missing or unusable; the message says what to install."""


class BuildError(RuntimeError):
    """TensorRT refused to parse or build; the message names the file and the next step."""


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` or raise :class:`TensorRTUnavailableError` with the install command.

    The PyPI ``tensorrt`` placeholder raises on import without its libraries, and a stub-only
    install (``tensorrt-stubs``) leaves an empty namespace package: both count as missing.
    """
    try:
        mod = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or the placeholder's own exception
        raise TensorRTUnavailableError(f"TensorRT is not installed ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    if not hasattr(mod, "Builder"):
        where = ", ".join(getattr(mod, "__path__", [])) or getattr(mod, "__file__", "?")
        raise TensorRTUnavailableError(
            f"TensorRT is not installed (the importable 'tensorrt' at {where} has no Builder: "
            f"type stubs only?); {INSTALL_HINT}"
        )
    return mod


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


def network_layers(network: "trt.INetworkDefinition") -> list[LayerInfo]:
    """(name, type, plugin name) of every layer; plugin names read through the typed layer classes.

    Python exposes ILayer; the plugin is reached by re-classing it (as Polygraphy does):
    ``IPluginV2Layer.plugin.plugin_type`` (8.6/10.0) or
    ``IPluginV3Layer.plugin.get_capability_interface(CORE).plugin_name`` (10.1+).
    """
    import tensorrt as trt_mod  # only called once import_tensorrt() succeeded

    out: list[LayerInfo] = []
    lt = trt_mod.LayerType
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = _enum_name(layer.type)
        plugin: str | None = None
        try:
            if hasattr(lt, "PLUGIN_V2") and layer.type == lt.PLUGIN_V2:
                layer.__class__ = trt_mod.IPluginV2Layer
                plugin = str(cast("trt.IPluginV2Layer", layer).plugin.plugin_type)
            elif hasattr(lt, "PLUGIN_V3") and layer.type == lt.PLUGIN_V3:
                layer.__class__ = trt_mod.IPluginV3Layer
                v3 = cast("trt.IPluginV3Layer", layer).plugin
                core = v3.get_capability_interface(trt_mod.PluginCapabilityType.CORE)
                plugin = str(core.plugin_name)
        except Exception as exc:  # the name is a check aid; an unreadable one is reported, not fatal
            log.debug("cannot read the plugin name of layer %s: %s", layer.name, exc)
            plugin = None
        out.append(LayerInfo(layer.name, kind, plugin))
    return out


def _tensor_specs(tensors: list["trt.ITensor"]) -> list[dict[str, Any]]:
    # Dims supports len() and indexing in every version (the stubs declare no __iter__).
    return [
        {"name": t.name, "shape": [int(t.shape[i]) for i in range(len(t.shape))], "dtype": dtype_name(t.dtype)}
        for t in tensors
    ]


def _make_calibrator(plan: BuildPlan, cache_path: Path) -> Any:
    """A calibrator feeding ``plan.calib_set`` (or only the cache) to TensorRT.

    ``IInt8MinMaxCalibrator`` or ``IInt8EntropyCalibrator2`` by ``plan.calibrator_algorithm``.

    Defined here because it must subclass a TensorRT class. Python exceptions raised inside
    TensorRT's callbacks would be lost, so they are kept in ``error`` and re-raised after the build.
    """
    import tensorrt as trt_mod  # only called once import_tensorrt() succeeded

    from export.cuda_device import DeviceBuffer

    calib_set = plan.calib_set

    # Both documented bases share the IInt8Calibrator interface; chosen at run time as Polygraphy's
    # Calibrator(BaseClass=...) does.
    base: Any = (trt_mod.IInt8EntropyCalibrator2 if plan.calibrator_algorithm == "entropy2"
                 else trt_mod.IInt8MinMaxCalibrator)

    class Calibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # required by the pybind11 base
            self.error: BaseException | None = None
            self.batches_done = 0
            self._iter = calib_set.batches() if calib_set is not None else iter(())
            nbytes = 4 * calib_set.batch_size * 3 * calib_set.input_cfg.size**2 if calib_set is not None else 0
            self._buf = DeviceBuffer(nbytes) if nbytes else None

        def get_batch_size(self) -> int:
            return calib_set.batch_size if calib_set is not None else 1

        def get_batch(self, names: list[str]) -> list[int]:
            """Device pointers of the next batch, one per input name; ``[]`` = no more batches."""
            try:
                batch = next(self._iter)
            except StopIteration:
                return []
            except BaseException as exc:  # keep it; TensorRT would swallow it
                self.error = exc
                return []
            assert self._buf is not None
            self._buf.copy_from_host(batch)
            self.batches_done += 1
            if calib_set is not None:
                log.info("calibration batch %d/%d", self.batches_done, calib_set.num_batches)
            return [self._buf.ptr for _ in names]

        # The documented contract returns None when there is no cache (the stubs say Buffer).
        def read_calibration_cache(self) -> bytes | None:  # type: ignore[override]
            if calib_set is None and cache_path.is_file():
                log.info("using calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None  # calibrate from the images

        def write_calibration_cache(self, cache: "Buffer") -> None:
            try:
                atomic_write_bytes(cache_path, bytes(memoryview(cache)))
                log.info("wrote calibration cache %s", cache_path)
            except BaseException as exc:
                self.error = exc

        def close(self) -> None:
            if self._buf is not None:
                self._buf.free()
                self._buf = None

    return Calibrator()


def _apply_timing_cache(config: "trt.IBuilderConfig", path: Path) -> None:
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: a foreign cache is refused
        log.warning("%s: timing cache from another TensorRT/GPU; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def build_engine(plan: BuildPlan) -> BuildResult:
    """Parse ``plan.onnx_path``, check the RoIAlign plugin layers, configure and build.

    Raises:
        TensorRTUnavailableError, BuildError, PluginCheckError, cuda_device.CudaUnavailableError.
    """
    import_tensorrt()  # clear message first
    import tensorrt as trt  # the real module from here on (typed by tensorrt-stubs)

    caps = capabilities(trt)
    logger = trt.Logger(trt.Logger.VERBOSE if plan.verbose else trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # registers ROIAlign_TRT (before parsing)
    builder = trt.Builder(logger)

    nd = trt.NetworkDefinitionCreationFlag
    strongly_typed = caps.strongly_typed_only
    net_flags = 0
    net_flag_names: list[str] = []
    if strongly_typed and hasattr(nd, "STRONGLY_TYPED"):
        net_flags |= 1 << int(nd.STRONGLY_TYPED)
        net_flag_names.append("STRONGLY_TYPED")
    if hasattr(nd, "EXPLICIT_BATCH") and not hasattr(nd, "STRONGLY_TYPED"):
        net_flags |= 1 << int(nd.EXPLICIT_BATCH)  # TensorRT 8.x; implicit and deprecated from 10.0
        net_flag_names.append("EXPLICIT_BATCH")
    network = builder.create_network(net_flags)

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"{plan.onnx_path}: TensorRT {caps.version} cannot parse it:\n  " + "\n  ".join(errors))

    layers = network_layers(network)
    check = check_roialign_plugins(plan.roialign_nodes, layers)
    for w in check.warnings:
        log.warning("%s", w)
    if not check.ok:
        raise PluginCheckError(f"{plan.onnx_path}: " + "; ".join(check.errors))
    for node, layer_name in check.matched.items():
        log.info("RoiAlign %s -> ROIAlign_TRT layer %s", node, layer_name)

    config = builder.create_builder_config()
    flags: list[str] = []
    if plan.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if plan.verbose:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not strongly_typed:
        if plan.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
            flags.append("FP16")
        if plan.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            flags.append("INT8")
        if plan.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # a true FP32 reference engine
            flags.append("NO_TF32")

    profile = builder.create_optimization_profile()
    profile.set_shape(
        plan.input_name, trt.Dims(list(plan.min_shape)), trt.Dims(list(plan.opt_shape)), trt.Dims(list(plan.max_shape))
    )
    config.add_optimization_profile(profile)

    calibrator = None
    if plan.implicit_int8 and not strongly_typed:
        if not caps.has_calibrators:
            raise BuildError(f"TensorRT {caps.version} has no INT8 calibrators: pass the Q/DQ ONNX (export/quantize.py)")
        assert plan.calib_cache is not None
        calibrator = _make_calibrator(plan, plan.calib_cache)
        config.int8_calibrator = calibrator
        if plan.calib_set is not None and hasattr(config, "set_calibration_profile"):
            shape = trt.Dims(list(plan.calib_set.shape))
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(plan.input_name, shape, shape, shape)  # calibration runs at OPT
            config.set_calibration_profile(calib_profile)
        flags.append(f"INT8_CALIBRATOR={plan.calibrator_algorithm}")

    if plan.timing_cache is not None:
        _apply_timing_cache(config, plan.timing_cache)

    placement: dict[str, int] | None = None
    fallback: list[str] = []
    if plan.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise BuildError("--dla-core: this GPU has no DLA cores (DLA exists on Jetson AGX/NX Orin and Xavier)")
        if plan.dla_core >= builder.num_DLA_cores:
            raise BuildError(f"--dla-core {plan.dla_core}: only {builder.num_DLA_cores} DLA cores (0..{builder.num_DLA_cores - 1})")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # plugins, NMS, TopK never run on DLA
        flags += [f"DLA_CORE={plan.dla_core}", "GPU_FALLBACK"]
        placement = {"gpu": 0, "dla": 0}
        for i in range(network.num_layers):
            net_layer = network.get_layer(i)
            if config.can_run_on_DLA(net_layer):
                placement["dla"] += 1
            else:
                placement["gpu"] += 1
                fallback.append(f"{net_layer.name} ({_enum_name(net_layer.type)})")

    inputs = _tensor_specs([network.get_input(i) for i in range(network.num_inputs)])
    outputs = _tensor_specs([network.get_output(i) for i in range(network.num_outputs)])

    log.info("building the engine (TensorRT %s, %s)...", caps.version, "strongly typed" if strongly_typed else "weakly typed")
    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    build_time = time.perf_counter() - t0
    if calibrator is not None and calibrator.error is not None:
        raise BuildError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
    if serialized is None:
        raise BuildError(f"TensorRT {caps.version} failed to build {plan.onnx_path}; rerun with --verbose for its log")

    if plan.timing_cache is not None:
        atomic_write_bytes(plan.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
        log.info("timing cache saved to %s", plan.timing_cache)

    return BuildResult(
        engine=memoryview(serialized).cast("B"),  # plain bytes view of IHostMemory
        tensorrt_version=caps.version,
        strongly_typed=strongly_typed,
        inputs=inputs,
        outputs=outputs,
        builder_flags=flags,
        network_flags=net_flag_names,
        plugin_check=check,
        build_time_s=round(build_time, 3),
        layer_placement=placement,
        gpu_fallback_layers=fallback,
        calib_cache_written=plan.calib_cache if calibrator is not None and plan.calib_set is not None else None,
    )
