"""Graph clean-up after ``torch.onnx.export``: onnxsim in a child process, constant ``If`` inlining.

Torch-free. Why the care:

* torchvision's ``batched_nms`` is ``@torch.jit._script_if_tracing``; it exports as an ONNX
  ``If`` (``boxes.numel() == 0``) with ``NonMaxSuppression`` inside the else-branch. With
  static shapes the condition is a constant, but onnxsim 0.8's ``eliminate_if_with_const_cond``
  pass crashes the interpreter on it (segfault; cf. onnxsim issue #452). We skip that pass
  and inline constant-condition ``If`` nodes ourselves, so ``NonMaxSuppression`` sits in the
  main graph where TensorRT's parser and Polygraphy see it.
* onnxsim is native code: a crash must not take the exporter down, so :func:`simplify`
  runs it in a child process (``python -m rfnet.export.onnx_tools.onnx_passes SRC DST``) and reports a
  crash as an error the caller can act on (``--no-simplify``).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from rfnet.export.errors import ExportError
from rfnet.common.cli import ExitCode

log = logging.getLogger(__name__)

#: onnxsim optimizer passes skipped: this one segfaults on constant-condition If nodes.
SKIPPED_OPTIMIZERS: tuple[str, ...] = ("eliminate_if_with_const_cond",)


class SimplifyError(ExportError, RuntimeError):
    """onnxsim failed or crashed; the message says how and what to do."""


def _constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def inline_constant_ifs(model: onnx.ModelProto) -> int:
    """Replace every top-level ``If`` whose condition is a constant by the taken branch.

    Tensors produced inside the branch are renamed ``<if-name>/<name>`` so they cannot clash
    with the main graph; the branch outputs are wired to the ``If``'s outputs by ``Identity``
    nodes (removed by the next simplification). Returns the number of ``If`` nodes inlined.
    """
    inlined = 0
    while True:
        nodes = list(model.graph.node)
        target = None
        for idx, node in enumerate(nodes):
            if node.op_type == "If":
                value = _constant_value(model, node.input[0])
                if value is not None and value.size == 1:
                    target = (idx, node, bool(value.reshape(-1)[0]))
                    break
        if target is None:
            return inlined
        idx, node, cond = target
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch"))
        prefix = (node.name or f"If_{idx}") + "/"
        local = {o for n in branch.node for o in n.output if o}
        local |= {t.name for t in branch.initializer}
        rename = {name: prefix + name for name in local}
        new_nodes = []
        for init in branch.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = rename[init.name]
            model.graph.initializer.append(copy)
        for n in branch.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = prefix + (n.name or n.op_type)
            for i, name in enumerate(c.input):
                if name in rename:
                    c.input[i] = rename[name]
            for i, name in enumerate(c.output):
                if name in rename:
                    c.output[i] = rename[name]
            new_nodes.append(c)
        for out_if, out_branch in zip(node.output, branch.output):
            src = rename.get(out_branch.name, out_branch.name)
            new_nodes.append(onnx.helper.make_node("Identity", [src], [out_if], name=prefix + "output_" + out_if))
        del model.graph.node[:]
        model.graph.node.extend(nodes[:idx] + new_nodes + nodes[idx + 1 :])
        inlined += 1


def simplify_in_process(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim + constant-If inlining + onnxsim again, in this process (may crash on bad graphs)."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model, skipped_optimizers=list(SKIPPED_OPTIMIZERS))
    if not ok:
        raise SimplifyError("onnxsim could not validate the simplified model")
    if inline_constant_ifs(simplified):
        simplified, ok = onnxsim.simplify(simplified, skipped_optimizers=list(SKIPPED_OPTIMIZERS))
        if not ok:
            raise SimplifyError("onnxsim could not validate the model after inlining constant If nodes")
    return simplified


def simplify(model: onnx.ModelProto, timeout_s: float = 900.0) -> onnx.ModelProto:
    """:func:`simplify_in_process` in a child Python process; raises :class:`SimplifyError`."""
    with tempfile.TemporaryDirectory(prefix="rfnet_onnxsim_") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "rfnet.export.onnx_tools.onnx_passes", str(src), str(dst)],
                capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ),
            )
        except subprocess.TimeoutExpired as exc:
            raise SimplifyError(f"onnxsim did not finish within {timeout_s:.0f} s; re-run with --no-simplify") from exc
        if proc.returncode != 0 or not dst.is_file():
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
            how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
            raise SimplifyError(f"onnxsim {how}; re-run with --no-simplify. Last output:\n{tail}")
        return onnx.load(str(dst))


def main(argv: list[str] | None = None) -> int:
    """Child-process entry point: simplify SRC into DST."""
    p = argparse.ArgumentParser(description="Simplify an ONNX model (onnxsim + constant If inlining).")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    args = p.parse_args(argv)
    model = simplify_in_process(onnx.load(str(args.src)))
    onnx.save(model, str(args.dst))
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
