"""Configure a TensorRT build: precision, profiles, calibration, timing cache, DLA (small steps).

Each function takes the builder objects and the :class:`~rfnet.export.trt.build_plan.BuildPlan` and
records what it set in ``flags`` (the manifest's ``build_flags.builder``); tests drive them
with stand-ins pinned to the TensorRT 10.x stubs (``tests/support/trt_stubs.py``).

TensorRT 8.6 / 10.x build weakly typed networks (builder flags pick FP16/INT8 kernels),
11.x strongly typed ones (the graph decides); see ``export/trt/trt_builder.py``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rfnet.export.trt.build_plan import BuildPlan
from rfnet.export.errors import ExportError
from rfnet.export.trt.trt_calibrator import make_calibrator
from rfnet.runtime.backends.trt_io import dims_tuple

if TYPE_CHECKING:  # the TensorRT 10.x stubs (tensorrt-stubs)
    import tensorrt as trt

log = logging.getLogger(__name__)

_SUFFIX = re.compile(r"_\d+$")


class BuildError(ExportError, RuntimeError):
    """TensorRT refused to parse, configure or build; the message names the file and the next step."""


def set_precision(config: "trt.IBuilderConfig", plan: BuildPlan, *, strongly_typed: bool, flags: list[str]) -> None:
    """FP16/INT8 builder flags (weakly typed only) and, for ``fp32``, TF32 off.

    TF32 is cleared whatever the typing: TensorRT 11 (strongly typed) still has
    ``BuilderFlag.TF32`` and would otherwise run an fp32 graph's convolutions in TF32.
    """
    import tensorrt as trt

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


def _fp32_layer(layer: "trt.ILayer", names: set[str], nodes: set[str]) -> bool:
    """Layer made from one of the ONNX nodes ``names`` (the parser names layers after nodes, ``_<n>``
    on a clash). A layer whose own name is another node's (``nodes``: all node names) is that node's:
    ``X_1`` belongs to a node ``X_1`` when there is one, not to ``X``."""
    import tensorrt as trt

    own = layer.name in names
    renamed = layer.name not in nodes and _SUFFIX.sub("", layer.name) in names
    if not (own or renamed):
        return False
    outs = [layer.get_output(i) for i in range(layer.num_outputs)]
    return bool(outs) and all(t.dtype in (trt.float32, trt.float16) for t in outs)  # float math only


def constrain_fp32_layers(network: "trt.INetworkDefinition", config: "trt.IBuilderConfig", plan: BuildPlan,
                          *, strongly_typed: bool, flags: list[str]) -> int:
    """Keep the non-trunk layers (box decoding, softmax, NMS, TopK, RoiAlign...) in FP32.

    Weakly typed FP16/INT8 builds otherwise let TensorRT pick FP16 for any layer; these are
    the layers ``export/fp16.py`` keeps fp32 for TensorRT 11 (``plan.fp32_nodes``, the same
    selection). ``PREFER_PRECISION_CONSTRAINTS``: TensorRT falls back (with a warning) where a
    layer has no FP32 kernel instead of failing. Returns the number of layers constrained.
    """
    import tensorrt as trt

    if strongly_typed or plan.precision == "fp32" or not plan.fp32_nodes:
        return 0
    names, nodes = set(plan.fp32_nodes), set(plan.node_names)
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not _fp32_layer(layer, names, nodes):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        count += 1
    if count:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        flags += ["PREFER_PRECISION_CONSTRAINTS", f"FP32_LAYERS={count}"]
    return count


def add_profile(builder: "trt.Builder", config: "trt.IBuilderConfig", plan: BuildPlan) -> None:
    """The optimisation profile (min/opt/max of the input); ``BuildError`` when TensorRT rejects it."""
    import tensorrt as trt

    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, trt.Dims(list(plan.min_shape)), trt.Dims(list(plan.opt_shape)),
                      trt.Dims(list(plan.max_shape)))
    if config.add_optimization_profile(profile) < 0:  # -1 = invalid profile (details in TensorRT's log)
        raise BuildError(f"TensorRT rejected the optimisation profile {plan.profiles_json()} for {plan.onnx_path}")


def calibration_shape(network_shape: tuple[int, ...], plan: BuildPlan) -> tuple[tuple[int, ...], bool]:
    """(shape of every calibration batch, whether a calibration profile is needed).

    A static input calibrates at its own shape (no profile: TensorRT's calibration profile is
    for networks with runtime dimensions only); a dynamic one at the calibration set's batch
    (else the profile's opt) with a calibration profile of that shape.

    Raises:
        BuildError: the calibration set's batch differs from a static input's batch.
    """
    batch = plan.calib_set.batch_size if plan.calib_set is not None else None
    if all(d >= 0 for d in network_shape):
        if batch is not None and batch != network_shape[0]:
            raise BuildError(
                f"{plan.onnx_path}: input {plan.input_name!r} is static {list(network_shape)}, so calibration batches "
                f"must hold {network_shape[0]} image(s), not {batch}: use --calib-batch {network_shape[0]}"
            )
        return network_shape, False
    return (batch or plan.opt_shape[0], *plan.opt_shape[1:]), True


def setup_calibration(builder: "trt.Builder", network: "trt.INetworkDefinition", config: "trt.IBuilderConfig",
                      plan: BuildPlan, flags: list[str]) -> Any:
    """Implicit INT8: attach the calibrator (and a calibration profile for a dynamic input).

    Returns the calibrator (the caller closes it after the build and checks its ``error``).
    """
    import tensorrt as trt

    assert plan.calib_cache is not None
    shape, needs_profile = calibration_shape(dims_tuple(network.get_input(0).shape), plan)
    try:
        calibrator = make_calibrator(plan.calibrator_algorithm, plan.calib_set, shape, plan.calib_cache)
    except ValueError as exc:
        raise BuildError(f"{plan.onnx_path}: {exc}") from exc
    config.int8_calibrator = cast("trt.IInt8Calibrator", calibrator)  # it subclasses the TensorRT base
    if needs_profile:
        dims = trt.Dims(list(shape))
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(plan.input_name, dims, dims, dims)
        if not config.set_calibration_profile(calib_profile):
            raise BuildError(f"TensorRT rejected the calibration profile {list(shape)} for input {plan.input_name!r}")
    flags.append(f"INT8_CALIBRATOR={plan.calibrator_algorithm}")
    return calibrator


def apply_timing_cache(config: "trt.IBuilderConfig", path: Path) -> None:
    """Load ``path`` (or start an empty cache) into ``config``; a foreign cache is replaced by a new one."""
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is None:
        raise BuildError(f"{path}: TensorRT could not read this timing cache (corrupt or truncated?); "
                         "delete it or pass another --timing-cache")
    if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: a foreign cache is refused
        log.warning("%s: timing cache from another TensorRT/GPU; starting a new one", path)
        fresh = config.create_timing_cache(b"")
        if fresh is None or not config.set_timing_cache(fresh, False):
            raise BuildError(f"{path}: TensorRT could not create an empty timing cache")


def setup_dla(builder: "trt.Builder", network: "trt.INetworkDefinition", config: "trt.IBuilderConfig",
              plan: BuildPlan, flags: list[str]) -> tuple[dict[str, int], list[str]]:
    """DLA core + GPU fallback; returns the per-layer placement TensorRT predicts and the GPU layers."""
    import tensorrt as trt

    assert plan.dla_core is not None
    cores = builder.num_DLA_cores
    if cores == 0 and not hasattr(trt.BuilderFlag, "FP16"):  # strongly typed only: TensorRT 11
        # NVIDIA, "Working with DLA" (TensorRT 11.4.1 / 11.5.0 docs): no DLA in 11.0-11.3; 11.4.1 has it on
        # Jetson AGX Orin under JetPack 7.2.2+ only; JetPack 6 stays on TensorRT 10.x (10.3)
        raise BuildError(f"--dla-core: TensorRT {getattr(trt, '__version__', '11')} sees no DLA: TensorRT 11.0-11.3 have "
                         "no DLA at all, 11.4.1 only on Jetson AGX Orin under JetPack 7.2.2+; on JetPack 6 build DLA "
                         "engines with its TensorRT 10.3 (or 8.6)")
    if cores == 0:
        raise BuildError("--dla-core: this GPU has no DLA cores (DLA exists on Jetson AGX/NX Orin and Xavier)")
    if plan.dla_core >= cores:
        raise BuildError(f"--dla-core {plan.dla_core}: only {cores} DLA cores (0..{cores - 1})")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = plan.dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # plugins, NMS, TopK never run on DLA
    flags += [f"DLA_CORE={plan.dla_core}", "GPU_FALLBACK"]
    placement = {"gpu": 0, "dla": 0}
    fallback: list[str] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if config.can_run_on_DLA(layer):
            placement["dla"] += 1
        else:
            placement["gpu"] += 1
            fallback.append(f"{layer.name} ({getattr(layer.type, 'name', layer.type)})")
    return placement, fallback
