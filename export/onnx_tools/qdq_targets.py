"""Where an INT8 Q/DQ model will run decides how it is quantized (``export/quantize.py --target``).

* ``tensorrt`` (the default): symmetric int8 activations (TensorRT takes only zero point 0),
  float consumers rerouted to the unrounded tensors (TensorRT's explicit quantization places
  Q/DQ only in front of the layers that run in INT8), the stem and MobileNet blocks 0-5 float
  (measured in docs/lab/results-log.md). These are :class:`rfnet.export.quantize.QuantizeOptions`' defaults.
* ``onnxruntime`` (its CPU provider): uint8 activations and float consumers reading the
  DequantizeLinear. ONNX Runtime's x86 integer kernels are U8S8; with int8 activations it
  converts a Q/DQ pair to uint8 only when the tensor has a single consumer, so a layer between
  a branching and a non-branching tensor gets an int8 input and a uint8 output, is not fused,
  and runs in float behind a DequantizeLinear. With uint8 activations and each quantized layer's
  output feeding only its QuantizeLinear, every quantized Conv/Gemm becomes QLinearConv/QGemm.
  Float stay what has no integer kernel or nothing to gain: layers with fewer than
  :data:`ORT_MIN_INT8_CHANNELS` output channels (the stem, the RPN's and the box head's logits
  and deltas), ConvTranspose, and the mask head's last layers. TensorRT cannot build that model.

Torch-free (onnx only).
"""
from __future__ import annotations

import onnx

#: ``QuantizeOptions.float_consumers``: "dequantized" -- a float consumer of a quantized layer's
#: output reads the DequantizeLinear of its (one, shared) QuantizeLinear, so the layer's output
#: feeds only the QuantizeLinear and ONNX Runtime fuses DQ -> Conv/Gemm -> Q into an integer
#: kernel. "rerouted" -- such consumers read the unrounded float output (one Q/DQ pair per
#: quantized consumer), as TensorRT's explicit quantization places them.
FLOAT_CONSUMERS: tuple[str, ...] = ("dequantized", "rerouted")
#: What gets Q/DQ for ONNX Runtime: conv-like layers and activations, not ConvTranspose (no
#: integer kernel on the CPU provider: it would run in float on rounded weights).
ORT_INTEGER_OP_TYPES: tuple[str, ...] = ("Conv", "Gemm", "MatMul", "Clip", "Relu")
#: Conv-like layers with fewer output channels stay float for ONNX Runtime.
ORT_MIN_INT8_CHANNELS = 16
#: ``QuantizeOptions`` fields per target (the rest are the dataclass defaults, TensorRT's).
TARGETS: dict[str, dict[str, object]] = {
    "tensorrt": {},
    "onnxruntime": {"activations": "uint8", "float_consumers": "dequantized", "float_input_layers": 0,
                    "min_int8_channels": ORT_MIN_INT8_CHANNELS, "op_types": ORT_INTEGER_OP_TYPES},
}
#: Layer types whose weights can be INT8 (as rfnet.export.onnx_tools.onnx_inspect.CONV_LIKE).
_CONV_LIKE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def narrow_layers(model: onnx.ModelProto, min_channels: int) -> list[str]:
    """Conv / ConvTranspose / Gemm / MatMul nodes with a constant weight of fewer than
    ``min_channels`` output channels (0 or 1: none)."""
    inits = {t.name: t for t in model.graph.initializer}
    out: list[str] = []
    for n in model.graph.node:
        if n.op_type not in _CONV_LIKE or len(n.input) < 2 or n.input[1] not in inits:
            continue
        dims = list(inits[n.input[1]].dims)
        if n.op_type == "Conv":
            channels = dims[0]
        elif n.op_type == "ConvTranspose":
            channels = dims[1] * max(1, _int_attr(n, "group", 1))
        elif n.op_type == "Gemm":
            channels = dims[0] if _int_attr(n, "transB", 0) else dims[-1]
        else:  # MatMul [K, N]
            channels = dims[-1]
        if channels < min_channels:
            out.append(n.name)
    return out
