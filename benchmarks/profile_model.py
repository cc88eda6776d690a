"""Where an exported RF-Net spends its time on ONNX Runtime, by part of the network.

    python benchmarks/profile_model.py --model model.onnx --images DIR [--limit 20] [--threads 2] [--json out.json]

Runs the model on the images (decoded and letterboxed outside the timing) with ONNX Runtime's
own profiler (``SessionOptions.enable_profiling``), then sums each node's kernel time by the
part it belongs to: the input pooling, backbone, FPN, RPN (head and box decoding), NMS / TopK,
RoiAlign, box head, GridSample (the polar resamplings) and the mask U-Net, plus the rest
(gathers, box arithmetic). Node names come from the exporter (``/backbone/...``); the op types
NonMaxSuppression, TopK, RoiAlign and GridSample count apart whatever module they sit in.
Prints a Markdown table (ms per image and share) and writes ``--json``. Torch-free.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.contract import parse_metadata
from rfnet.common.imageio import list_images, read_image
from rfnet.common.preprocess import preprocess

log = logging.getLogger(__name__)

#: Op types that form a group of their own, wherever they sit.
OP_GROUPS = {"NonMaxSuppression": "NMS / TopK", "TopK": "NMS / TopK", "RoiAlign": "RoiAlign",
             "GridSample": "GridSample (polar resampling)"}
#: Node-name prefixes (the exporter's module scopes) and their group.
PREFIX_GROUPS = (("/backbone/", "backbone"), ("/fpn/", "FPN"), ("/rpn/", "RPN head + proposals"),
                 ("/head/", "box head"), ("/mask_head/", "mask U-Net"), ("/AveragePool", "input pooling"))
ORDER = ("input pooling", "backbone", "FPN", "RPN head + proposals", "NMS / TopK", "box head", "RoiAlign",
         "GridSample (polar resampling)", "mask U-Net", "other (gathers, box arithmetic)")


def group_of(node: str, op: str) -> str:
    """The part of the network a profiled node belongs to (ONNX Runtime names fused nodes "fused X")."""
    node = node.removeprefix("fused ")
    if op in OP_GROUPS or op.removeprefix("Fused") in OP_GROUPS:
        return OP_GROUPS.get(op) or OP_GROUPS[op.removeprefix("Fused")]
    for prefix, group in PREFIX_GROUPS:
        if node.startswith(prefix):
            return group
    return ORDER[-1]


def profile(model: Path, images: list[np.ndarray], threads: int) -> dict[str, Any]:
    """Per-group kernel time (ms per image) of ``model`` on ``images`` (RGB uint8)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "rfnet")
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        meta = parse_metadata(sess.get_modelmeta().custom_metadata_map, str(model))
        name = sess.get_inputs()[0].name
        tensors = [preprocess(img, meta.input_config())[0][None].astype(np.float32) for img in images]
        sess.run(None, {name: tensors[0]})  # warm-up, left out below
        trace_path = sess.end_profiling()
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        for t in tensors:
            sess.run(None, {name: t})
        trace_path = sess.end_profiling()
        events = json.loads(Path(trace_path).read_text())
    per_group: dict[str, float] = defaultdict(float)
    total_run = 0.0
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            node = ev["name"][: -len("_kernel_time")]
            per_group[group_of(node, ev.get("args", {}).get("op_name", ""))] += ev["dur"] / 1000.0
        elif ev.get("cat") == "Session" and ev.get("name") == "model_run":
            total_run += ev["dur"] / 1000.0
    n = len(images)
    kernels = sum(per_group.values())
    return {"model": str(model), "images": n, "threads": threads,
            "model_run_ms_per_image": total_run / n, "kernel_ms_per_image": kernels / n,
            "groups_ms_per_image": {g: per_group.get(g, 0.0) / n for g in ORDER}}


def markdown(result: dict[str, Any]) -> str:
    k = result["kernel_ms_per_image"]
    lines = ["| part | ms per image | share of kernel time |", "|---|---|---|"]
    for g, ms in result["groups_ms_per_image"].items():
        lines.append(f"| {g} | {ms:.2f} | {ms / k:.1%} |" if k else f"| {g} | {ms:.2f} | - |")
    lines.append(f"| **kernels, all** | **{k:.2f}** | 100% |")
    lines.append(f"| session run (kernels + ONNX Runtime's own work) | {result['model_run_ms_per_image']:.2f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/profile_model.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="an exported RF-Net (.onnx)")
    p.add_argument("--images", type=Path, required=True, help="a folder of images")
    p.add_argument("--limit", type=int, default=20, help="images to run (default 20)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    setup_logging()
    try:
        paths = list_images(args.images)[: args.limit]
        if not paths:
            raise ValueError(f"{args.images}: no images")
        result = profile(args.model, [read_image(x) for x in paths], args.threads)
    except (OSError, ValueError) as exc:  # ImageReadError, MetadataError are ValueErrors
        log.error("%s", exc)
        return ExitCode.USAGE
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
