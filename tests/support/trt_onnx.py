"""Tiny RF-Net-like ONNX graphs with real RoiAlign nodes, for the engine-build tests (torch-free).

Fusion Feature Pooling in miniature: one RoiAlign per pyramid level (half_pixel, explicit
sampling_ratio) and an elementwise ``Max`` -- the same node pattern export_onnx.py emits,
plus the RF-Net ``rfnet.*`` metadata. Loaded by the tests with importlib (not a package).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rfnet.export.onnx_tools.onnx_meta import write_model_metadata
from rfnet.config import light_config
from rfnet.metadata import metadata_from_config

SIZE = 64


def make_model(
    *,
    opset: int = 17,
    sampling_ratio: int | None = 2,
    ctm: str | None = "half_pixel",
    names: tuple[str, str] = ("/roi_heads/pool/RoiAlign_p2", "/roi_heads/pool/RoiAlign_p3"),
    fp16: bool = False,
    qdq: bool = False,
    metadata: bool = True,
    batch_dim: str | int = "batch",
    precision_meta: str | None = None,
    gridsample: dict[str, object] | None = None,
    conv_name: str = "/fpn/conv",
    nms: str | None = None,
) -> onnx.ModelProto:
    """A tiny graph with two RoiAlign nodes (and, with ``gridsample``, a GridSample of the pooled
    features with those attributes, as the polar mask branch has)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.array([[2, 2, 30, 30], [10, 5, 60, 40], [0, 0, 63, 63]], np.float32), "rois"),
        numpy_helper.from_array(np.zeros(3, np.int64), "batch_indices"),
    ]
    nodes = []
    x = "image"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "zp")]
        nodes += [helper.make_node("QuantizeLinear", [x, "s", "zp"], ["xq"], name="q_in"),
                  helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xdq"], name="dq_in")]
        x = "xdq"
    nodes.append(helper.make_node("Conv", [x, "conv_w"], ["p2"], name=conv_name))
    feat = "p2"
    if nms is not None:  # an RPN-like NMS over the conv's cells: 4096 boxes per image
        shape = [0, -1, 4] if nms == "per_image" else [1, -1, 4]  # per image, or the batch merged into one list
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), "nms_shape"))
        inits += [numpy_helper.from_array(np.array([100], np.int64), "nms_max"),
                  numpy_helper.from_array(np.array([0.7], np.float32), "nms_iou")]
        nodes += [helper.make_node("Reshape", ["p2", "nms_shape"], ["nms_boxes"], name="/rpn/Reshape"),
                  helper.make_node("ReduceMax", ["nms_boxes"], ["nms_s"], axes=[2], keepdims=1, name="/rpn/ReduceMax"),
                  helper.make_node("Transpose", ["nms_s"], ["nms_scores"], perm=[0, 2, 1], name="/rpn/Transpose"),
                  helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", "nms_max", "nms_iou"], ["nms_sel"],
                                   name="/rpn/NonMaxSuppression")]
    if fp16:
        nodes += [helper.make_node("Cast", ["p2"], ["p2_h"], to=TensorProto.FLOAT16, name="cast_h"),
                  helper.make_node("Relu", ["p2_h"], ["p2_hr"], name="relu_h"),
                  helper.make_node("Cast", ["p2_hr"], ["p2f"], to=TensorProto.FLOAT, name="cast_f")]
        feat = "p2f"
    nodes.append(helper.make_node("MaxPool", [feat], ["p3"], kernel_shape=[2, 2], strides=[2, 2], name="/fpn/pool"))
    attrs: dict[str, object] = {"output_height": 7, "output_width": 7, "mode": "avg"}
    if sampling_ratio is not None:
        attrs["sampling_ratio"] = sampling_ratio
    if ctm is not None and opset >= 16:
        attrs["coordinate_transformation_mode"] = ctm
    nodes.append(helper.make_node("RoiAlign", [feat, "rois", "batch_indices"], ["r2"], name=names[0],
                                  spatial_scale=1.0, **attrs))
    nodes.append(helper.make_node("RoiAlign", ["p3", "rois", "batch_indices"], ["r3"], name=names[1],
                                  spatial_scale=0.5, **attrs))
    nodes.append(helper.make_node("Max", ["r2", "r3"], ["pooled" if gridsample is None else "maxed"],
                                  name="/roi_heads/pool/Max"))
    if gridsample is not None:
        inits.append(numpy_helper.from_array(np.zeros((3, 7, 7, 2), np.float32), "grid"))
        nodes.append(helper.make_node("GridSample", ["maxed", "grid"], ["pooled"], name="/mask_head/GridSample",
                                      **gridsample))
    outputs = [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [3, 4, 7, 7])]
    if nms is not None:
        outputs.append(helper.make_tensor_value_info("nms_sel", TensorProto.INT64, [None, 3]))
    graph = helper.make_graph(
        nodes, "tiny_rfnet_pooling",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch_dim, 3, SIZE, SIZE])], outputs, inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if metadata:
        cfg = light_config()
        cfg.input.size = SIZE
        prec = precision_meta or ("int8" if qdq else "fp16" if fp16 else "fp32")
        write_model_metadata(model, metadata_from_config(cfg, precision=prec, checkpoint_sha256="0" * 64,
                                                              exporter={"test": "1"}))
    return model


def write_model(path: Path, **kwargs: object) -> Path:
    model = make_model(**kwargs)  # type: ignore[arg-type]
    onnx.save(model, str(path))
    return path
