"""Which ONNX nodes run in FP16 and which stay FP32: the project's own rule (onnx only).

``export/fp16.py`` converts the FP16 trunk it selects (for strongly typed TensorRT 11), and
``export/build.py`` keeps every other node FP32 in weakly typed FP16 / INT8 builds (TensorRT
8.6 / 10.x precision constraints). Both use :func:`fp16_nodes`, so what the two paths run in
FP32 is decided here, without any optional library: box decoding, the NMS group offsets
(group x 513 px, where FP16's spacing is 1 px above 1024), TopK, RoiAlign, the resamplings.
"""
from __future__ import annotations

import onnx

#: Layers that start the fp16 trunk.
CORE_OPS: frozenset[str] = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Ops that stay in fp16 when every float input comes from the fp16 trunk.
TRUNK_OPS: frozenset[str] = frozenset({
    "Relu", "Clip", "LeakyRelu", "Add", "Sub", "Mul", "Concat", "Reshape", "Flatten", "Transpose",
    "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Identity", "Squeeze", "Unsqueeze",
})
#: Ops never converted to fp16, whatever feeds them: onnxconverter-common 1.14-1.16's
#: ``float16.DEFAULT_OP_BLOCK_LIST`` (pinned by tests/export/test_fp16.py while that package is
#: installed), copied so no optional import decides what runs in FP32.
FP32_OPS: frozenset[str] = frozenset({
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "CumSum", "DictVectorizer",
    "FeatureVectorizer", "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Max", "Min",
    "NonMaxSuppression", "Normalizer", "OneHotEncoder", "RandomUniformLike", "Range", "Resize", "RoiAlign",
    "SVMClassifier", "SVMRegressor", "Scaler", "TopK", "TreeEnsembleClassifier", "TreeEnsembleRegressor",
    "Upsample", "ZipMap",
})


def fp16_nodes(model: onnx.ModelProto, trunk_ops: frozenset[str] = TRUNK_OPS) -> set[str]:
    """Names of the nodes to run in fp16: conv-like layers and the trunk ops fed only by them.

    Graph inputs count as trunk (the converter casts them to fp16 on entry); initializers and
    constants are neutral. Nodes must be in topological order (as exported).
    """
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    trunk_tensors = {i.name for i in model.graph.input}
    chosen: set[str] = set()
    for node in model.graph.node:
        if node.op_type in FP32_OPS or node.op_type in ("Cast", "Constant"):
            continue
        dynamic_inputs = [i for i in node.input if i and i not in consts]
        if node.op_type in CORE_OPS:
            ok = True
        elif node.op_type in trunk_ops:
            ok = bool(dynamic_inputs) and all(i in trunk_tensors for i in dynamic_inputs)
        else:
            ok = False
        if ok:
            chosen.add(node.name)
            trunk_tensors.update(node.output)
    return chosen


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Named nodes outside the fp16 trunk, in graph order (what weakly typed builds keep FP32)."""
    trunk = fp16_nodes(model)
    return [n.name for n in model.graph.node if n.name and n.name not in trunk]
