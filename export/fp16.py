"""FP16 variant of an RF-Net ONNX model: fp32 inputs and outputs, fp16 inside.

    python export/fp16.py --onnx model.onnx --output model_fp16.onnx

For strongly-typed TensorRT builds (TensorRT 11 has no FP16 builder flag: the precision is
the ONNX tensors' own, field notes section 1). Made with onnxconverter-common's maintained
``float16.convert_float_to_float16(keep_io_types=True)``, so the runtime feeds and reads
float32 exactly as with the FP32 model.

Which nodes run in fp16 is decided structurally (:func:`fp16_nodes`), not by op type alone:
the convolution trunk -- conv-like layers, and the activation / elementwise / reshaping ops
whose float inputs all come from that trunk -- runs in fp16 (that is where the time goes).
Everything else stays fp32 through ``node_block_list``: anchor generation, box decoding
(fp16 has ~0.25-px resolution at 512 and overflows ``exp`` of large deltas), softmax and
sigmoid scores, NMS, TopK, RoiAlign + Max pooling and all index arithmetic. Casts are
inserted at the boundaries by the converter. Three defects of onnxconverter-common 1.16 are
worked around: original ``Cast`` nodes stay fp32 (it retypes their outputs without
retargeting them), graph outputs of fp32 nodes are cast back to float32 (``keep_io_types``
misses them), and the fp32 -> fp16 -> fp32 cast round trips it leaves between fp32 nodes
are removed (they would round box coordinates to fp16).

Torch-free: needs only onnx + onnxconverter-common (+ onnxruntime for the check).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx

from rfnet.export.onnx_tools import onnx_inspect
from rfnet.export.onnx_tools.fp16_selection import FP32_OPS, fp16_nodes
from rfnet.export.onnx_tools.onnx_meta import derived_metadata, get_metadata, load_fp32_model, model_metadata, set_metadata
from rfnet.export.onnx_tools.compare import mask_agreement, max_abs_diffs, run_onnx, synthetic_images
from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.contract import KEY_FP16
from rfnet.common.fileio import atomic_write_bytes, check_can_write
from rfnet.errors import RFNetError

log = logging.getLogger(__name__)

def _prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of ``model`` with every node named and every graph output produced by an Identity.

    onnxconverter-common 1.16 mistypes a graph output that other nodes also consume (e.g.
    ``scores``, reused for the mask validity); giving each output its own final Identity
    keeps the converter's output casts away from internal consumers.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"rfnet_node_{i}"
    for out in model.graph.output:
        internal = out.name + "_internal"
        _rename_tensor(model, out.name, internal)
        model.graph.node.append(onnx.helper.make_node("Identity", [internal], [out.name], name=f"output_{out.name}"))
    return model


def _rename_tensor(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` wherever a node produces or consumes it."""
    for node in model.graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new


def _restore_fp32_outputs(model: onnx.ModelProto) -> None:
    """Make every graph output float32 again (``keep_io_types`` misses outputs of blocked nodes).

    An fp16 output ``y`` becomes ``y_fp16`` followed by ``Cast(to=float) -> y``; a resulting
    fp32 -> fp16 -> fp32 chain is then removed by :func:`remove_cast_round_trips`.
    """
    for out in model.graph.output:
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        inner = out.name + "_fp16"
        _rename_tensor(model, out.name, inner)
        model.graph.node.append(onnx.helper.make_node("Cast", [inner], [out.name], name=f"cast_fp32_{out.name}",
                                                      to=onnx.TensorProto.FLOAT))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {t.name: t.data_type for t in inferred.graph.initializer}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    return types


def remove_cast_round_trips(model: onnx.ModelProto) -> int:
    """Remove ``Cast(fp32->fp16) -> Cast(fp16->fp32)`` chains left between fp32 nodes.

    onnxconverter-common casts the output of every blocked node to fp16 and back before the
    next blocked node and does not remove all of these pairs; each one would round fp32
    box coordinates to fp16 (and TensorRT honours casts under strong typing). Consumers of
    the second cast are rewired to the first cast's fp32 input. Returns pairs removed.
    """
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = _tensor_types(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    rewire: dict[str, str] = {}
    dead: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "Cast" or node.attribute[0].i != f32:
            continue
        first = producers.get(node.input[0])
        if first is None or first.op_type != "Cast" or first.attribute[0].i != f16:
            continue
        if types.get(first.input[0]) != f32:
            continue
        if node.output[0] in outputs:  # a graph output keeps its name: the pair becomes an Identity
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = first.input[0]
            continue
        rewire[node.output[0]] = first.input[0]
        dead.add(node.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in rewire:
                node.input[i] = rewire[name]
    keep = [n for n in model.graph.node if n.name not in dead]
    used = {i for n in keep for i in n.input} | outputs
    keep = [n for n in keep if not (n.op_type == "Cast" and all(o not in used for o in n.output))]
    removed = len(model.graph.node) - len(keep)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return removed


def _convert(model: onnx.ModelProto, block_nodes: list[str]) -> onnx.ModelProto:
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(FP32_OPS),
        node_block_list=block_nodes,
        # Weights beyond fp16's range are clamped to +-max_finite_val instead of becoming inf.
        max_finite_val=65504.0,
    )


def convert_fp16(model: onnx.ModelProto, keep_fp32_nodes: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Return an fp16 copy of ``model`` with fp32 I/O (see the module docstring for what stays fp32).

    ``keep_fp32_nodes`` keeps further nodes in fp32. The ``rfnet.*`` metadata is carried over
    with ``rfnet.precision = fp16``.
    """

    model = _prepare(model)
    half = fp16_nodes(model) - set(keep_fp32_nodes)
    block_nodes = sorted(n.name for n in model.graph.node if n.name not in half)
    with warnings.catch_warnings():
        # The converter warns once per weight below fp16's smallest normal value (~1e-7); those
        # tiny weights are flushed to +-1e-7, which is harmless.
        warnings.simplefilter("ignore", UserWarning)
        out = _convert(model, block_nodes)
    _restore_fp32_outputs(out)
    removed = remove_cast_round_trips(out)
    log.debug("removed %d redundant Cast nodes", removed)
    how = {"tool": "onnxconverter_common.float16.convert_float_to_float16", "keep_io_types": True,
           "fp16_nodes": len(half), "fp32_nodes": len(block_nodes)}
    meta = derived_metadata(model_metadata(model), precision="fp16", extra={KEY_FP16: json.dumps(how, sort_keys=True)})
    del out.metadata_props[:]
    set_metadata(out, {**get_metadata(model), **meta.to_strings()})
    onnx.checker.check_model(out)
    return out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, type=Path, help="FP32 RF-Net ONNX model (from export_onnx.py)")
    p.add_argument("--output", required=True, type=Path, help="FP16 ONNX model to write")
    p.add_argument("--keep-fp32-nodes", nargs="*", default=[], help="node names kept in fp32")
    p.add_argument("--check-images", type=int, default=4,
                   help="synthetic images for the FP16 vs FP32 check with ONNX Runtime (0 = skip)")
    p.add_argument("--max-dice-drop", type=float, default=0.01,
                   help="fail (exit 1) when FP16 vs FP32 mask agreement Dice is below 1 - this (default: 0.01)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(args.verbose)
    try:
        check_can_write(args.output, args.overwrite)
        model, _ = load_fp32_model(args.onnx)
    except RFNetError as exc:  # an existing output, a missing / foreign / non-fp32 model
        log.error("%s", exc)
        return ExitCode.USAGE
    fp16 = convert_fp16(model, tuple(args.keep_fp32_nodes))
    atomic_write_bytes(args.output, fp16.SerializeToString())
    log.info("wrote %s", args.output)
    print(onnx_inspect.tensorrt_view(fp16))
    return _check(args) if args.check_images > 0 else ExitCode.OK


def _check(args: argparse.Namespace) -> int:
    """FP16 vs FP32 on synthetic images through the runtime's ONNX Runtime backend; FAILED when
    the masks disagree by more than ``--max-dice-drop``."""
    images = [it.image for it in synthetic_images(args.check_images, seed=0, size=512)]
    r32, r16 = (run_onnx(path, images, fps_iters=5) for path in (args.onnx, args.output))
    diffs = max_abs_diffs(r32.outputs, r16.outputs)
    agree = mask_agreement(r16.segmentations, r32.segmentations)
    print(f"FP16 vs FP32 (ONNX Runtime CPU, {len(images)} synthetic images): max abs diff "
          + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
          + f"; mask agreement Dice disc {agree.disc_mean:.4f} cup {agree.cup_mean:.4f}")
    print(f"ONNX Runtime CPU FPS: fp32 {r32.fps or 0:.2f}  fp16 {r16.fps or 0:.2f}"
          " (CPU fp16 kernels are few: this is a correctness check, not a speed one)")
    worst = max(1 - agree.disc_mean, 1 - agree.cup_mean)
    if not np.isfinite(worst) or worst > args.max_dice_drop:
        log.error("FP16 masks disagree with FP32 (Dice drop %.4f > %.4f)", worst, args.max_dice_drop)
        return ExitCode.FAILED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
