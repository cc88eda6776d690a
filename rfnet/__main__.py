"""``rfnet VERB ...``: one command for every job (installed as the ``rfnet`` console script).

Each verb runs the ``main(argv)`` of the module that owns the job, with the rest of the command
line, so ``rfnet infer --model M --input D --output O`` is ``python -m rfnet.runtime.infer --model M
--input D --output O`` and every ``python -m ...`` / ``python runtime/infer.py`` form keeps
working. The modules are imported only when their verb runs (``rfnet infer`` needs no torch;
``rfnet train`` does), so this dispatcher adds no dependency between the layers.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable

from rfnet.common.cli import ExitCode

#: verb -> (module whose main(argv) runs it, one line of help)
VERBS: dict[str, tuple[str, str]] = {
    "train": ("rfnet.train", "train a model on one dataset or several mixed by weight"),
    "evaluate": ("rfnet.evaluate", "score a checkpoint on a dataset split: Dice, CDR errors, gradability, report"),
    "crossval": ("rfnet.crossval", "pool the evaluations of cross-validation folds into tables, per dataset"),
    "calibrate": ("rfnet.screening_calibration", "choose the verdict's limits and the referral threshold on folds"),
    "summary": ("rfnet.summary", "parameters and GFLOPs of the presets"),
    "export": ("rfnet.export.export_onnx", "PyTorch checkpoint -> ONNX, parity-checked against PyTorch"),
    "fp16": ("rfnet.export.fp16", "FP32 ONNX -> FP16 ONNX (strongly typed TensorRT)"),
    "quantize": ("rfnet.export.quantize", "FP32 ONNX -> INT8 Q/DQ ONNX (TensorRT or ONNX Runtime), accuracy-gated"),
    "build": ("rfnet.export.build", "ONNX -> TensorRT engine and manifest (on the GPU machine that runs it)"),
    "infer": ("rfnet.runtime.infer", "images -> masks, CDRs, referral, overlays, report.html (ONNX Runtime or TensorRT)"),
    "report": ("rfnet.runtime.report", "rebuild the screening report.html of an output folder"),
    "serve": ("rfnet.runtime.serve", "the model behind a Triton Inference Server (the [serve] extra)"),
    "client": ("rfnet.runtime.client", "send images to that server; writes what infer writes"),
    "bench": ("rfnet.benchmarks.bench", "speed and mask parity of the backends, against the paper's 4.1 FPS"),
    "profile": ("rfnet.benchmarks.profile_model", "where an ONNX model spends its time, by part of the network"),
    "demo": ("demo", "generated images -> brief training -> ONNX -> runtime (a source checkout)"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: rfnet VERB [options]    (rfnet VERB --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {text}" for verb, (_, text) in VERBS.items()]
    return "\n".join(lines)


def resolve(verb: str) -> Callable[[list[str]], int]:
    """The ``main`` of ``verb``'s module (ImportError with what to install when it cannot load)."""
    module = VERBS[verb][0]
    try:
        return importlib.import_module(module).main  # type: ignore[no-any-return]
    except ImportError as exc:
        hint = ("run it from a source checkout" if module == "demo" else
                "pip install '.[serve]'" if verb in ("serve", "client") else
                "pip install '.[train,export]'" if verb in ("train", "evaluate", "summary", "export", "bench") else
                "pip install '.[export]'")
        raise ImportError(f"rfnet {verb} cannot load {module} ({exc}); {hint}") from exc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return ExitCode.OK if args else ExitCode.USAGE
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"rfnet: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        run = resolve(verb)
    except ImportError as exc:
        print(f"rfnet: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return int(run(rest) or ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
