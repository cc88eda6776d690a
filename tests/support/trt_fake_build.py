"""A stand-in TensorRT build world for ``rfnet.export.trt.trt_builder.build_engine`` (no TensorRT, no GPU).

Made from a real ONNX graph (``tests/support/trt_onnx.py``): one layer per node, named after
the node the way onnx-tensorrt does, RoiAlign nodes as ``ROIAlign_TRT`` plugin layers. Every
object is a :mod:`tests.support.trt_stubs` stand-in, so the builder can only call what the
TensorRT 10.x stubs declare (minus what the chosen line removes). The builder's
``build_serialized_network`` drives an attached INT8 calibrator the way TensorRT's Python
wrapper does: an exception raised in ``get_batch`` is printed and taken as "no more data".
"""
from __future__ import annotations

import traceback
from typing import Any

import onnx

from rfnet.export.onnx_tools.graph_checks import tensorrt_node_name
from tests.support.trt_stubs import FakeTensorRT, fake_tensorrt

LAYER_TYPES = {"Conv": "CONVOLUTION", "MaxPool": "POOLING", "Max": "ELEMENTWISE", "Cast": "CAST", "Relu": "ACTIVATION",
               "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "TopK": "TOPK",
               "NonMaxSuppression": "NMS", "Softmax": "SOFTMAX"}


class FakeBuildWorld:
    """``trt`` is the stand-in module; the attributes record what the builder did."""

    def __init__(self, model: onnx.ModelProto, line: str = "10", *, plugin_name: str | None = "ROIAlign_TRT",
                 profile_index: int = 0, calib_profile_ok: bool = True, timing_cache_readable: bool = True,
                 dla_cores: int = 0) -> None:
        self.line = line
        self.flags_set: list[str] = []
        self.flags_cleared: list[str] = []
        self.plugin_inits: list[Any] = []
        self.builder_loggers: list[Any] = []
        self.profiles: list[Any] = []
        self.calibration_profile: Any = None
        self.calib_batches: list[tuple[int, list[int]]] = []  # (batch size reported, pointers)
        self.calib_exceptions: list[str] = []
        self.layer_precision: dict[str, Any] = {}
        self.shapes_of: dict[int, dict[str, tuple[Any, Any, Any]]] = {}  # id(profile) -> {input: (min, opt, max)}
        self._profile_index, self._calib_ok, self._tc_ok = profile_index, calib_profile_ok, timing_cache_readable
        self.trt: FakeTensorRT = fake_tensorrt(
            line,
            functions={"init_libnvinfer_plugins": self._init_plugins, "get_plugin_registry": self._registry},
            constructors={"Logger": self._logger, "Builder": self._builder, "OnnxParser": self._parser,
                          "Dims": lambda shape=(): tuple(shape)},
        )
        self.network = self._network(model, plugin_name)
        self.config = self._config()
        self._dla_cores = dla_cores
        self.trt.used.clear()  # from here on: only what the code under test touches

    # -- module-level functions and constructors --------------------------------------------------
    def _init_plugins(self, logger: Any, namespace: str) -> bool:
        self.plugin_inits.append(logger)
        return True

    def _registry(self) -> Any:
        creator = self.trt.make("IPluginCreatorV3One", name="ROIAlign_TRT", plugin_version="2", plugin_namespace="")
        return self.trt.make("IPluginRegistry", all_creators=[creator], plugin_creator_list=[creator])

    def _logger(self, min_severity: Any = None) -> Any:
        return self.trt.make("Logger", min_severity=min_severity)

    def _builder(self, logger: Any) -> Any:
        self.builder_loggers.append(logger)
        t = self.trt
        return t.make("Builder", create_network=lambda flags=0: self.network, num_DLA_cores=self._dla_cores,
                      create_builder_config=lambda: self.config, create_optimization_profile=self._profile,
                      build_serialized_network=self._build)

    def _parser(self, network: Any, logger: Any) -> Any:
        return self.trt.make("OnnxParser", parse_from_file=lambda path: True, num_errors=0, get_error=lambda i: None)

    # -- network ------------------------------------------------------------------------------------
    def _tensor(self, name: str, shape: list[int], dtype: str = "float32") -> Any:
        return self.trt.make("ITensor", name=name, shape=tuple(shape), dtype=getattr(self.trt, dtype))

    def _layer(self, node: onnx.NodeProto, plugin_name: str | None) -> Any:
        t, name = self.trt, tensorrt_node_name(node)
        outs = [self._tensor(o, [1]) for o in node.output]

        def set_output_type(index: int, dtype: Any) -> None:
            self.layer_precision.setdefault(name, {})[f"out{index}"] = dtype

        common = dict(name=name, num_outputs=len(outs), get_output=lambda i: outs[i], set_output_type=set_output_type)
        if node.op_type != "RoiAlign":
            return t.make("ILayer", type=getattr(t.LayerType, LAYER_TYPES.get(node.op_type, "ELEMENTWISE")), **common)
        if self.line == "8.6":  # ROIAlign_TRT v1 = IPluginV2DynamicExt
            plugin = t.make("IPluginV2", plugin_type=plugin_name)
            return t.make("IPluginV2Layer", type=t.LayerType.PLUGIN_V2, plugin=plugin, **common)
        core = None if plugin_name is None else t.make("IPluginV3OneCore", plugin_name=plugin_name)
        plugin = t.make("IPluginV3", get_capability_interface=lambda kind: core)
        return t.make("IPluginV3Layer", type=t.LayerType.PLUGIN_V3, plugin=plugin, **common)

    def _network(self, model: onnx.ModelProto, plugin_name: str | None) -> Any:
        layers = [self._layer(n, plugin_name) for n in model.graph.node]
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in model.graph.input[0].type.tensor_type.shape.dim]
        inputs = [self._tensor(model.graph.input[0].name, dims)]
        outputs = [self._tensor(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in model.graph.output]
        return self.trt.make("INetworkDefinition", num_layers=len(layers), get_layer=lambda i: layers[i],
                             num_inputs=1, get_input=lambda i: inputs[i], num_outputs=len(outputs),
                             get_output=lambda i: outputs[i])

    # -- builder config -------------------------------------------------------------------------------
    def _profile(self) -> Any:
        shapes: dict[str, tuple[Any, Any, Any]] = {}
        profile = self.trt.make("IOptimizationProfile",
                                set_shape=lambda input, min, opt, max: shapes.__setitem__(input, (min, opt, max)))
        self.shapes_of[id(profile)] = shapes
        return profile

    def _config(self) -> Any:
        t = self.trt

        def set_calibration_profile(profile: Any) -> bool:
            self.calibration_profile = profile
            return self._calib_ok

        def add_profile(profile: Any) -> int:
            self.profiles.append(profile)
            return self._profile_index

        cache = t.make("ITimingCache", serialize=lambda: b"timing-cache")
        return t.make(
            "IBuilderConfig",
            set_flag=lambda flag: self.flags_set.append(flag.name), clear_flag=lambda f: self.flags_cleared.append(f.name),
            set_memory_pool_limit=lambda pool, size: None, add_optimization_profile=add_profile,
            set_calibration_profile=set_calibration_profile,
            create_timing_cache=lambda blob: cache if self._tc_ok else None, set_timing_cache=lambda c, ignore: True,
            get_timing_cache=lambda: cache, can_run_on_DLA=lambda layer: layer.type.name == "CONVOLUTION",
        )

    def _build(self, network: Any, config: Any) -> bytes:
        calibrator = config._members.get("int8_calibrator")
        if calibrator is not None:
            size = calibrator.get_batch_size()
            for _ in range(100):
                try:
                    ptrs = calibrator.get_batch(["image"])
                except Exception:  # TensorRT's wrapper prints it and ends calibration
                    self.calib_exceptions.append(traceback.format_exc())
                    ptrs = []
                if not ptrs:
                    break
                self.calib_batches.append((size, list(ptrs)))
            calibrator.write_calibration_cache(b"calib-cache")
        return b"serialized-engine"
