"""Static checks of an exported RF-Net ONNX graph and a summary of what TensorRT would get.

Torch-free (onnx + numpy; Polygraphy for the human-readable summary). Used by
``export_onnx.py`` (no custom-domain op), ``quantize.py`` (Q/DQ properties, which nodes stay
float) and ``fp16.py``. The RoiAlign attribute check is ``rfnet.export.onnx_tools.graph_checks``'s (shared
with ``build.py``).

Nothing here runs TensorRT: :data:`NOT_CHECKABLE_WITHOUT_TENSORRT` lists what only a
TensorRT build can confirm.
"""
from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from rfnet.export.onnx_tools.graph_checks import roialign_attribute_issues

log = logging.getLogger(__name__)

#: ONNX domains that every ONNX runtime and TensorRT's parser know ("" is ai.onnx).
STANDARD_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx"})
#: Layers whose weights are worth INT8 (TensorRT fuses Q/DQ into these).
CONV_LIKE: frozenset[str] = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

NOT_CHECKABLE_WITHOUT_TENSORRT: tuple[str, ...] = (
    "whether TensorRT's ONNX parser accepts every node (polygraphy inspect capability needs TensorRT)",
    "that RoiAlign maps onto ROIAlign_TRT with the same numerics (half_pixel, explicit sampling_ratio)",
    "which Q/DQ pairs TensorRT fuses into INT8 kernels and which layers it runs in FP16/FP32",
    "NonMaxSuppression/TopK speed and data-dependent-shape handling inside TensorRT",
    "engine accuracy (TensorRT vs ONNX Runtime) and engine latency on the target GPU/DLA",
)


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Op-type histogram of the main graph (``domain::op`` for non-standard domains)."""
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        key = node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"
        counts[key] += 1
    return counts


def custom_domain_nodes(model: onnx.ModelProto) -> list[str]:
    """Names (``name [domain::op]``) of nodes outside the standard ONNX domain."""
    return [
        f"{n.name or '<unnamed>'} [{n.domain}::{n.op_type}]"
        for n in model.graph.node
        if n.domain not in STANDARD_DOMAINS
    ]


def _attr(node: onnx.NodeProto, name: str) -> object | None:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: node for node in model.graph.node for o in node.output}


#: Ops whose outputs are control signals (masks of validity, shapes, indices), not features:
#: the walk back from an output does not follow them.
CONTROL_OPS: frozenset[str] = frozenset({
    "Cast", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal", "Not", "And", "Or", "Xor",
    "Shape", "Size", "NonZero", "ArgMax", "ArgMin", "NonMaxSuppression",
})
#: Ops at which the walk stops: the mask head starts at the RoI pooling.
BOUNDARY_OPS: frozenset[str] = frozenset({"RoiAlign", "MaxRoiPool"})


def head_compute_nodes(model: onnx.ModelProto, num_layers: int) -> list[str]:
    """Names of the first ``num_layers`` conv-like layers in execution order.

    ONNX graphs are stored topologically sorted and the exporter traces the backbone before
    anything else, so for RF-Net these are the stem and the first backbone blocks (13 = the
    stem plus MobileNet blocks 0-5: everything at strides 2-8 and the stride-16 downsampling).
    Independent of names.
    """
    if num_layers <= 0:
        return []
    return [n.name for n in model.graph.node if n.op_type in CONV_LIKE][:num_layers]


def tail_compute_nodes(model: onnx.ModelProto, output: str, num_layers: int) -> list[str]:
    """Names of the ``num_layers`` conv-like layers nearest to graph output ``output``.

    Walks the feature path backwards from ``output``: not into control signals
    (:data:`CONTROL_OPS`, ``Where`` conditions; e.g. the ``scores > 0`` validity factor of
    the masks) and not past RoI pooling (:data:`BOUNDARY_OPS`). A node's depth is the
    smallest number of conv-like nodes (itself included) on a path to the output; returns
    the conv-like nodes of depth <= ``num_layers`` -- for ``masks``, the mask predictor and
    the layers just before it (every stream when the head branches). Independent of names.
    """
    if num_layers <= 0:
        return []
    if output not in {o.name for o in model.graph.output}:
        raise ValueError(f"graph has no output named {output!r}")
    producers = _producers(model)
    start = producers.get(output)
    if start is None:
        return []
    best: dict[int, int] = {}
    selected: dict[str, int] = {}
    queue: deque[tuple[onnx.NodeProto, int]] = deque([(start, 0)])
    while queue:
        node, depth = queue.popleft()
        if node.op_type in CONV_LIKE:
            depth += 1
            if depth > num_layers:
                continue
            selected[node.name] = min(depth, selected.get(node.name, depth))
        if id(node) in best and best[id(node)] <= depth:
            continue
        best[id(node)] = depth
        if node.op_type in BOUNDARY_OPS:
            continue
        inputs = list(node.input)
        if node.op_type in CONV_LIKE:
            inputs = inputs[:1]  # weights and bias are not on the feature path
        elif node.op_type == "Where":
            inputs = inputs[1:]
        elif node.op_type in ("Reshape", "Expand", "Tile", "Slice", "Resize", "Pad"):
            inputs = inputs[:1]  # shape / index operands
        for name in inputs:
            parent = producers.get(name)
            if parent is not None and parent.op_type not in CONTROL_OPS:
                queue.append((parent, depth))
    return sorted(selected, key=lambda n: (selected[n], n))


def float_ops_nodes(model: onnx.ModelProto, op_types: Iterable[str]) -> list[str]:
    """Names of the nodes whose op type is in ``op_types``."""
    wanted = set(op_types)
    return [n.name for n in model.graph.node if n.op_type in wanted]


@dataclass
class QDQReport:
    """Properties of the Q/DQ nodes of a quantized model that TensorRT cares about."""

    num_quantize: int = 0
    num_dequantize: int = 0
    int8: bool = True  # every zero point is int8
    symmetric: bool = True  # every zero point is 0
    per_channel_weights: int = 0  # DequantizeLinear of a constant weight with a per-channel scale
    quantized_nodes: list[str] = field(default_factory=list)  # conv-like nodes fed by DQ weights
    float_conv_nodes: list[str] = field(default_factory=list)  # conv-like nodes without Q/DQ
    int32_bias: int = 0  # DequantizeLinear of int32 data (TensorRT has no INT32 dequantize)


def qdq_report(model: onnx.ModelProto) -> QDQReport:
    """Count and check the model's QuantizeLinear / DequantizeLinear nodes."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = _producers(model)
    rep = QDQReport()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type == "QuantizeLinear":
            rep.num_quantize += 1
        else:
            rep.num_dequantize += 1
        if len(node.input) >= 3 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            if zp.dtype == np.int32:
                rep.int32_bias += 1
                continue
            rep.int8 &= zp.dtype == np.int8
            rep.symmetric &= bool(np.all(zp == 0))
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and node.input[1] in inits:
            scale = numpy_helper.to_array(inits[node.input[1]])
            if scale.size > 1:
                rep.per_channel_weights += 1
    for node in model.graph.node:
        if node.op_type not in CONV_LIKE:
            continue
        weight_src = producers.get(node.input[1]) if len(node.input) > 1 else None
        if weight_src is not None and weight_src.op_type == "DequantizeLinear":
            rep.quantized_nodes.append(node.name)
        else:
            rep.float_conv_nodes.append(node.name)
    return rep


def is_fed_by_dequantize(model: onnx.ModelProto, node_name: str) -> bool:
    """Whether any input of node ``node_name`` comes straight from a DequantizeLinear."""
    producers = _producers(model)
    for node in model.graph.node:
        if node.name == node_name:
            return any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input
            )
    raise ValueError(f"no node named {node_name!r}")


def polygraphy_summary(model: onnx.ModelProto, show_layers: bool = False) -> str:
    """Polygraphy's ``inspect model`` text for ``model`` (inputs, outputs, nodes)."""
    from polygraphy.backend.onnx.util import str_from_onnx

    return str(str_from_onnx(model, show_layers=show_layers))


def tensorrt_view(model: onnx.ModelProto) -> str:
    """A short text report of what TensorRT's ONNX parser would be given.

    Polygraphy's I/O summary, the op histogram, custom-domain ops, RoiAlign attributes, the
    Q/DQ properties (int8, symmetric, per-channel, no int32 bias), and the list of things
    that need TensorRT itself to confirm.
    """
    blocks = polygraphy_summary(model).split("---- ")
    # Polygraphy's header (name, opset), then the graph inputs and outputs blocks.
    lines = [blocks[0].strip()] + ["---- " + b.strip() for b in blocks[1:3]]
    counts = op_counts(model)
    lines.append("op counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    custom = custom_domain_nodes(model)
    lines.append(f"custom-domain ops: {custom if custom else 'none'}")
    problems, warnings = roialign_attribute_issues(model)
    lines.append(f"RoiAlign nodes: {counts.get('RoiAlign', 0)}; problems: {problems + warnings or 'none'}")
    if counts.get("QuantizeLinear") or counts.get("DequantizeLinear"):
        rep = qdq_report(model)
        lines.append(
            f"Q/DQ: {rep.num_quantize} QuantizeLinear, {rep.num_dequantize} DequantizeLinear; int8={rep.int8} "
            f"symmetric={rep.symmetric} per-channel weight DQ={rep.per_channel_weights} int32-bias DQ={rep.int32_bias}; "
            f"conv-like layers INT8={len(rep.quantized_nodes)} float={len(rep.float_conv_nodes)}"
        )
    lines.append("not checkable without TensorRT:")
    lines.extend(f"  - {item}" for item in NOT_CHECKABLE_WITHOUT_TENSORRT)
    return "\n".join(lines)
