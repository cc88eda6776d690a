"""TensorRT-free checks of an ONNX graph before and after TensorRT parses it (onnx only, no torch).

Three things ``export/build.py`` must know about the ONNX file, none of which needs TensorRT:

* its ``RoiAlign`` nodes and whether their attributes survive TensorRT's ``ROIAlign_TRT``
  plugin unchanged (:func:`roialign_nodes`, :func:`roialign_attribute_issues`);
* whether every ``RoiAlign`` node became a ``ROIAlign_TRT`` plugin layer after parsing
  (:func:`check_roialign_plugins`, fed with ``(layer name, layer type, plugin type)`` triples
  that ``export/trt/trt_builder.py`` reads from the parsed network);
* which precision the graph itself carries (:func:`graph_precision`): FP16 tensors,
  Q/DQ (explicit INT8) nodes, the ``rfnet.precision`` metadata. TensorRT 11 builds only
  strongly typed networks, where this -- not a builder flag -- decides the precision.

Layer naming (onnx-tensorrt ``ImporterContext::registerLayer`` / ``getNodeName``): a layer is
named after its ONNX node (``node.name``, or ``"node_of_" + first output`` when the node has
no name); a name already taken gets ``"_<counter>"`` appended.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Collection, Iterable, NamedTuple, Sequence

import onnx

from rfnet.export.errors import ExportError
from rfnet.common.contract import KEY_PRECISION

log = logging.getLogger(__name__)

ROIALIGN_PLUGIN = "ROIAlign_TRT"
#: ``trt.LayerType`` member names of plugin layers (V2: TensorRT 8.6/10.0, V3: ROIAlign_TRT v2 from 10.1).
PLUGIN_LAYER_TYPES: frozenset[str] = frozenset({"PLUGIN", "PLUGIN_V2", "PLUGIN_V3"})
QDQ_OPS: frozenset[str] = frozenset({"QuantizeLinear", "DequantizeLinear"})
_INT_TYPES: dict[int, str] = {int(onnx.TensorProto.INT32): "int32", int(onnx.TensorProto.INT64): "int64"}


def _type_name(elem_type: int | None) -> str | None:
    if elem_type is None:
        return None
    return _INT_TYPES.get(elem_type) or onnx.TensorProto.DataType.Name(elem_type)  # type: ignore[arg-type]


class GraphCheckError(ExportError, ValueError):
    """The ONNX graph cannot be built as asked; the message names the file/node and the fix."""


class PluginCheckError(GraphCheckError):
    """A RoiAlign node did not become the ROIAlign_TRT plugin layer."""


def tensorrt_node_name(node: onnx.NodeProto) -> str:
    """The name TensorRT's ONNX parser gives the layer(s) of ``node`` (onnx-tensorrt ``getNodeName``)."""
    if not node.name and len(node.output) > 0:
        return "node_of_" + node.output[0]
    return node.name


def _attr(node: onnx.NodeProto, name: str) -> object | None:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return None


def _attr_str(node: onnx.NodeProto, name: str) -> str | None:
    v = _attr(node, name)
    return v if isinstance(v, str) else None


def _attr_int(node: onnx.NodeProto, name: str) -> int | None:
    v = _attr(node, name)
    return v if isinstance(v, int) else None


def _attr_float(node: onnx.NodeProto, name: str) -> float | None:
    v = _attr(node, name)
    return float(v) if isinstance(v, (int, float)) else None


def opset_version(model: onnx.ModelProto) -> int:
    """The ai.onnx opset the model imports (0 when it imports none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


@dataclass(frozen=True)
class RoiAlignInfo:
    """One ONNX ``RoiAlign`` node and the attributes TensorRT maps onto ``ROIAlign_TRT``.

    ``None`` means "attribute not written in the file" (the parser then uses its own default).
    """

    name: str  # the TensorRT layer name (see tensorrt_node_name)
    coordinate_transformation_mode: str | None
    mode: str | None
    output_height: int | None
    output_width: int | None
    sampling_ratio: int | None
    spatial_scale: float | None
    batch_indices_dtype: str | None  # "int64" (ONNX spec), "int32" or None when unknown


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX elem_type for graph inputs/outputs/value_info/initializers/Cast outputs."""
    types: dict[str, int] = {}
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Cast" and node.output:
            to = _attr_int(node, "to")
            if to is not None:
                types[node.output[0]] = to
        elif node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            if isinstance(value, onnx.TensorProto):
                types[node.output[0]] = value.data_type
    return types


def roialign_nodes(model: onnx.ModelProto) -> list[RoiAlignInfo]:
    """Every ``RoiAlign`` node of the main graph, in graph order."""
    types = _elem_types(model)
    out = []
    for node in model.graph.node:
        if node.op_type != "RoiAlign" or node.domain not in ("", "ai.onnx"):
            continue
        bi = types.get(node.input[2]) if len(node.input) > 2 else None
        out.append(
            RoiAlignInfo(
                name=tensorrt_node_name(node),
                coordinate_transformation_mode=_attr_str(node, "coordinate_transformation_mode"),
                mode=_attr_str(node, "mode"),
                output_height=_attr_int(node, "output_height"),
                output_width=_attr_int(node, "output_width"),
                sampling_ratio=_attr_int(node, "sampling_ratio"),
                spatial_scale=_attr_float(node, "spatial_scale"),
                batch_indices_dtype=_type_name(bi),
            )
        )
    return out


def roialign_attribute_issues(model: onnx.ModelProto,
                              sampling_ratios: Collection[int] | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the RoiAlign nodes: the one RoiAlign check, run by
    ``export/export_onnx.py`` on every export and by ``export/build.py`` before a build, so an
    export cannot pass what the engine builder later rejects.

    Errors: ``coordinate_transformation_mode`` not ``half_pixel`` (or opset < 16, where the
    parser falls back to ``output_half_pixel``: results half a pixel off); ``sampling_ratio``
    not written (the parser's default is 1, ONNX's is 0), negative, or not one of
    ``sampling_ratios`` (the model config's, when the caller knows them); batch indices that
    are not integers.
    Warnings: ``sampling_ratio == 0`` (adaptive; supported by the plugin with the same rule
    ``ceil(roi_size / output_size)``, but slower and data-dependent).
    """
    errors: list[str] = []
    warnings: list[str] = []
    opset = opset_version(model)
    for info in roialign_nodes(model):
        if opset < 16:
            errors.append(
                f"RoiAlign node {info.name!r}: opset {opset} < 16 has no coordinate_transformation_mode; "
                "TensorRT then uses output_half_pixel (aligned=False), half a pixel off: re-export with opset >= 16"
            )
        elif (info.coordinate_transformation_mode or "half_pixel") != "half_pixel":
            errors.append(
                f"RoiAlign node {info.name!r}: coordinate_transformation_mode="
                f"{info.coordinate_transformation_mode!r}, expected 'half_pixel' (torchvision aligned=True)"
            )
        if info.sampling_ratio is None:
            errors.append(
                f"RoiAlign node {info.name!r}: sampling_ratio is not written explicitly; TensorRT's parser "
                "defaults it to 1 where ONNX defaults to 0 (adaptive): re-export with an explicit sampling_ratio"
            )
        elif info.sampling_ratio == 0:
            warnings.append(
                f"RoiAlign node {info.name!r}: sampling_ratio=0 (adaptive grid); ROIAlign_TRT supports it "
                "but a fixed ratio (e.g. 2) is faster and shape-independent"
            )
        elif info.sampling_ratio < 0:
            errors.append(f"RoiAlign node {info.name!r}: sampling_ratio={info.sampling_ratio} must be >= 0")
        if info.sampling_ratio is not None and sampling_ratios is not None and info.sampling_ratio not in sampling_ratios:
            errors.append(f"RoiAlign node {info.name!r}: sampling_ratio={info.sampling_ratio}, the model config "
                          f"uses {sorted(sampling_ratios)}")
        if info.batch_indices_dtype not in (None, "int32", "int64"):
            errors.append(
                f"RoiAlign node {info.name!r}: batch_indices has type {info.batch_indices_dtype}; "
                "it must be an integer tensor (int64 per ONNX; TensorRT casts it to the plugin's int32)"
            )
    return errors, warnings


class LayerInfo(NamedTuple):
    """What the plugin check needs from one parsed TensorRT layer."""

    name: str
    layer_type: str  # trt.LayerType member name, e.g. "PLUGIN_V3", "ELEMENTWISE"
    plugin_type: str | None  # plugin name for plugin layers when readable, else None


@dataclass
class PluginCheckResult:
    matched: dict[str, str] = field(default_factory=dict)  # ONNX node -> TensorRT layer
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _layers_of(node_name: str, layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    pattern = re.compile(re.escape(node_name) + r"(_\d+)?")
    return [layer for layer in layers if pattern.fullmatch(layer.name)]


def check_roialign_plugins(node_names: Iterable[str], layers: Sequence[LayerInfo]) -> PluginCheckResult:
    """Check that every RoiAlign node (by TensorRT layer name) became a ``ROIAlign_TRT`` plugin layer.

    Args:
        node_names: :attr:`RoiAlignInfo.name` of each RoiAlign node.
        layers: every layer of the parsed network, in network order.
    """
    result = PluginCheckResult()
    plugin_layers = [f"{l.name} ({l.plugin_type})" for l in layers if l.plugin_type == ROIALIGN_PLUGIN]
    for node in node_names:
        mine = _layers_of(node, layers)
        plugins = [l for l in mine if l.layer_type in PLUGIN_LAYER_TYPES]
        roi = [l for l in plugins if l.plugin_type == ROIALIGN_PLUGIN]
        unknown = [l for l in plugins if l.plugin_type is None]
        if roi:
            result.matched[node] = roi[0].name
        elif unknown:
            result.matched[node] = unknown[0].name
            result.warnings.append(
                f"RoiAlign node {node!r} became plugin layer {unknown[0].name!r} ({unknown[0].layer_type}); "
                "this TensorRT's Python API does not expose the plugin name, assuming ROIAlign_TRT "
                "(the only plugin the parser creates for RoiAlign)"
            )
        elif plugins:
            names = ", ".join(f"{l.name} -> {l.plugin_type}" for l in plugins)
            result.errors.append(
                f"RoiAlign node {node!r} became plugin layer(s) [{names}], not {ROIALIGN_PLUGIN}: "
                "another plugin library registered a creator for RoiAlign; load only TensorRT's own plugins"
            )
        elif mine:
            names = ", ".join(f"{l.name} ({l.layer_type})" for l in mine)
            result.errors.append(
                f"RoiAlign node {node!r} became [{names}] instead of the {ROIALIGN_PLUGIN} plugin layer"
            )
        else:
            found = ", ".join(plugin_layers) or "none"
            result.errors.append(
                f"RoiAlign node {node!r}: no TensorRT layer is named after it, so it did not become a "
                f"{ROIALIGN_PLUGIN} plugin layer ({ROIALIGN_PLUGIN} layers found: {found}); "
                "is trt.init_libnvinfer_plugins called and TensorRT >= 8.5?"
            )
    return result


@dataclass(frozen=True)
class GraphPrecision:
    """What precision an ONNX graph carries by itself (what a strongly typed build uses)."""

    float16_tensors: int  # initializers + typed tensors of dtype float16
    qdq_nodes: int  # QuantizeLinear + DequantizeLinear
    metadata_precision: str | None  # rfnet.precision, when present
    uint8_qdq: int = 0  # Q/DQ nodes with a uint8 zero point (export/quantize.py --target onnxruntime)

    @property
    def is_fp16(self) -> bool:
        return self.float16_tensors > 0 or self.metadata_precision == "fp16"

    @property
    def is_qdq(self) -> bool:
        return self.qdq_nodes > 0

    def describe(self) -> str:
        parts = []
        if self.qdq_nodes:
            parts.append(f"{self.qdq_nodes} Q/DQ nodes (explicit INT8)")
        if self.float16_tensors:
            parts.append(f"{self.float16_tensors} float16 tensors")
        if not parts:
            parts.append("float32 only")
        meta = f", metadata rfnet.precision={self.metadata_precision}" if self.metadata_precision else ""
        return "; ".join(parts) + meta


def graph_precision(model: onnx.ModelProto) -> GraphPrecision:
    """Count FP16 tensors and Q/DQ nodes of ``model`` and read its ``rfnet.precision``."""
    f16 = onnx.TensorProto.FLOAT16
    g = model.graph
    n16 = sum(1 for t in g.initializer if t.data_type == f16)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == f16:
            n16 += 1
    for node in g.node:
        if node.op_type == "Cast" and _attr(node, "to") == f16:
            n16 += 1
    qdq = sum(1 for node in g.node if node.op_type in QDQ_OPS)
    uint8_zp = {t.name for t in g.initializer if t.data_type == onnx.TensorProto.UINT8}
    u8 = sum(1 for node in g.node if node.op_type in QDQ_OPS and len(node.input) > 2 and node.input[2] in uint8_zp)
    meta = {p.key: p.value for p in model.metadata_props}.get(KEY_PRECISION)
    return GraphPrecision(float16_tensors=n16, qdq_nodes=qdq, metadata_precision=meta, uint8_qdq=u8)


def precision_problem(requested: str, gp: GraphPrecision, *, strongly_typed: bool) -> str | None:
    """Why ``requested`` cannot be built from a graph with precision ``gp`` (None = fine).

    Weakly typed (TensorRT 8.6/10.x): builder flags add FP16/INT8 kernels to an FP32 graph, so
    only contradictions are refused (Q/DQ graphs need ``int8``; FP16 graphs cannot be ``fp32``).
    Strongly typed (TensorRT 11.x): the graph decides, so ``fp16`` needs FP16 tensors and
    ``int8`` needs Q/DQ nodes.
    """
    if gp.uint8_qdq:
        return (f"the ONNX is quantized for ONNX Runtime's CPU ({gp.uint8_qdq} Q/DQ nodes with uint8 zero points); "
                "TensorRT takes only int8 Q/DQ with zero point 0: quantize with `python export/quantize.py "
                "--target tensorrt` (the default)")
    if gp.is_qdq and requested != "int8":
        return f"the ONNX is quantized ({gp.describe()}); build it with --precision int8 or pass the float ONNX"
    if requested == "fp32" and gp.is_fp16:
        return f"--precision fp32 but the ONNX is FP16 ({gp.describe()}); pass the FP32 ONNX"
    if not strongly_typed:
        return None
    if requested == "fp16" and not gp.is_fp16:
        return (
            "TensorRT builds a strongly typed network here: precision comes from the ONNX, and this ONNX is "
            f"{gp.describe()}; pass the FP16 ONNX made by `python export/fp16.py` (e.g. model_fp16.onnx)"
        )
    if requested == "int8" and not gp.is_qdq:
        return (
            "TensorRT builds a strongly typed network here (no calibrators): INT8 needs Q/DQ nodes, and this "
            f"ONNX is {gp.describe()}; pass the Q/DQ ONNX made by `python export/quantize.py` (e.g. model_int8.onnx)"
        )
    return None


def sibling_candidates(onnx_path: str, precision: str) -> list[str]:
    """File names next to ``onnx_path`` that conventionally hold its ``precision`` variant."""
    from pathlib import Path

    p = Path(onnx_path)
    stem = re.sub(r"[_.-](fp32|fp16|int8|qdq)$", "", p.stem)
    tags = {"fp16": ["fp16"], "int8": ["int8", "qdq", "int8_qdq"], "fp32": ["fp32", ""]}[precision]
    names = []
    for tag in tags:
        for sep in ("_", ".", "-"):
            names.append(f"{stem}{sep}{tag}.onnx" if tag else f"{stem}.onnx")
    out: list[str] = []
    for name in names:
        cand = str(p.with_name(name))
        if cand not in out and p.with_name(name) != p:
            out.append(cand)
    return out


#: GridSample modes onnx-tensorrt's importer knows (builtin_op_importers.cpp, GridSample: "bilinear",
#: "nearest", "bicubic"; any other string, such as opset 20's "linear", is read as nearest).
TRT_GRIDSAMPLE_MODES = ("bilinear", "nearest", "bicubic")
#: Padding modes TensorRT's IGridSampleLayer takes (SampleMode kFILL = zeros, kCLAMP = border, kREFLECT).
TRT_GRIDSAMPLE_PADDING = ("zeros", "border", "reflection")


def gridsample_attribute_issues(model: onnx.ModelProto) -> list[str]:
    """Errors about the GridSample nodes (the polar mask branch's resamplings) that TensorRT would
    read differently from ONNX Runtime: a mode its importer does not know (opset 20 renamed
    "bilinear" to "linear", which onnx-tensorrt maps to *nearest*, silently), a padding mode it has
    no kernel for, an ``align_corners`` that is not 0 or 1. Run by ``export/export_onnx.py`` and
    ``export/build.py``, as the RoiAlign check is."""
    errors = []
    opset = opset_version(model)
    for node in model.graph.node:
        if node.op_type != "GridSample" or node.domain not in ("", "ai.onnx"):
            continue
        name = tensorrt_node_name(node)
        mode = _attr_str(node, "mode") or "bilinear"  # the ONNX default before opset 20
        if mode not in TRT_GRIDSAMPLE_MODES:
            errors.append(f"GridSample node {name!r}: mode={mode!r} (opset {opset}); TensorRT's ONNX parser knows "
                          f"only {list(TRT_GRIDSAMPLE_MODES)} and samples anything else as nearest: re-export with "
                          "opset 16-19, where PyTorch writes mode='bilinear'")
        padding = _attr_str(node, "padding_mode") or "zeros"
        if padding not in TRT_GRIDSAMPLE_PADDING:
            errors.append(f"GridSample node {name!r}: padding_mode={padding!r}; TensorRT takes {list(TRT_GRIDSAMPLE_PADDING)}")
        align = _attr_int(node, "align_corners")
        if align not in (None, 0, 1):
            errors.append(f"GridSample node {name!r}: align_corners={align} must be 0 or 1")
    return errors


#: TensorRT's limits on data the selection layers see (NvInfer.h of 10.3 and 11.1, read in the second
#: review of the TensorRT path): ITopKLayer refuses K above 3840 at run time, and INMSLayer considers
#: at most its TopK box limit, 5000 boxes, per batch item (the rest are dropped without an error).
TRT_MAX_TOPK_K = 3840
TRT_NMS_BOXES_PER_ITEM = 5000


def batch_limit_issues(model: onnx.ModelProto, max_batch: int) -> list[str]:
    """Errors for the TopK and NonMaxSuppression nodes whose sizes at ``max_batch`` exceed what
    TensorRT runs correctly: the ONNX's batch axis is set to ``max_batch`` and the shapes (and
    constant-foldable values) are propagated with ONNX's shape inference. A graph that selects per
    image (boxes ``[B, N, 4]``, TopK along each image's row) passes at any batch; one that merges
    the batch into one list (boxes ``[1, B x N, 4]``) is refused from the batch where it overflows.
    Sizes that stay unknown after inference are not judged."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name for t in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name not in inits and inp.type.tensor_type.shape.dim:
            inp.type.tensor_type.shape.dim[0].dim_value = int(max_batch)
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception as exc:  # a graph ONNX cannot infer: say so rather than guess
        return [f"cannot check TensorRT's TopK / NMS limits at batch {max_batch}: ONNX shape inference failed ({exc})"]
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in (*m.graph.value_info, *m.graph.input, *m.graph.output)}
    consts = _constant_ints(m)
    errors = []
    for node in m.graph.node:
        name = tensorrt_node_name(node)
        if node.op_type == "TopK":
            dims = shapes.get(node.input[0], [])
            axis = _attr_int(node, "axis")
            axis = -1 if axis is None else axis
            length = dims[axis] if dims and -len(dims) <= axis < len(dims) else None
            k = consts.get(node.input[1])
            worst = k if k is not None else length
            if worst is not None and worst > TRT_MAX_TOPK_K:
                errors.append(f"TopK node {name!r} takes K = {worst} at batch {max_batch} "
                              f"({'its constant K' if k is not None else 'up to its axis length, K is data-dependent'}); "
                              f"TensorRT's TopK refuses K > {TRT_MAX_TOPK_K}: export the per-image graph of this "
                              "version, or build a smaller --batch")
        elif node.op_type == "NonMaxSuppression":
            dims = shapes.get(node.input[0], [])
            if len(dims) == 3 and dims[1] is not None and dims[1] > TRT_NMS_BOXES_PER_ITEM:
                errors.append(f"NonMaxSuppression node {name!r} gets {dims[1]} boxes per batch item at batch "
                              f"{max_batch} (boxes {dims}); TensorRT's NMS considers at most "
                              f"{TRT_NMS_BOXES_PER_ITEM} per batch item and drops the rest without an error: export the "
                              "per-image graph of this version (boxes [B, N, 4]), or build a smaller --batch")
    return errors


def _constant_ints(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> value of the single-integer constants (initializers, Constant nodes)."""
    from onnx import numpy_helper

    out: dict[str, int] = {}
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            tensors.append(t)
    for t in tensors:
        try:
            arr = numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - an odd constant is simply not a K
            continue
        if arr.size == 1 and arr.dtype.kind in "iu":
            out[t.name] = int(arr.reshape(-1)[0])
    return out
