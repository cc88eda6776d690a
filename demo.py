"""The main job end to end on a machine without a GPU (``make demo``, or ``python -m demo`` from
the repository root).

generated fundus images -> brief training of the light preset (CPU) -> ONNX export with a
parity check against PyTorch -> the torch-free runtime on ONNX Runtime (CPU, in a separate
process) -> disc/cup masks (REFUGE BMPs), overlays, CDRs, FPS.

Every step is the project's own command-line tool, called in-process (``main(argv)``) except
the runtime, which runs in its own interpreter exactly as a clinic device would run it. This
orchestrator sits above every package it calls (``rfnet``, ``export``, ``runtime``), at the top
of the repository, so that none of them imports a layer above its own.

Exit status: 0 done; 1 some images failed in the runtime step; 2 bad arguments or a non-empty
``--out``; any other step's failure returns that step's own exit code; 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.errors import RFNetError

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__.split("\n\n")[0] + " Runs in a few minutes on a 2-core CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its results")
    p.add_argument("--checkpoint", type=Path, help="skip training and deploy this checkpoint instead")
    p.add_argument("--preset", default="light", help="model preset to train")
    p.add_argument("--n-train", type=int, default=120, help="generated training images")
    p.add_argument("--n-val", type=int, default=16, help="generated validation / inference images")
    p.add_argument("--epochs", type=int, default=4, help="training epochs (upper bound)")
    p.add_argument("--train-minutes", type=float, default=6.0, help="training time budget in minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of data generation and training")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _step(title: str) -> float:
    logger.info("=== %s", title)
    return time.perf_counter()


class StepFailed(RFNetError):
    """A step's tool exited non-zero; it has already logged why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _run_tool(name: str, main_fn: Callable[[list[str]], int], argv: list[str]) -> None:
    logger.info("$ %s %s", name, " ".join(argv))
    rc = main_fn(argv)
    if rc != ExitCode.OK:
        raise StepFailed(f"{name} failed with exit code {rc} (its messages are above)", rc)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except StepFailed as exc:
        logger.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        logger.error("interrupted")
        return ExitCode.INTERRUPTED


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"error: {out} is not empty; pass --overwrite (make demo DEMO_ARGS=--overwrite) to replace it",
              file=sys.stderr)
        return ExitCode.USAGE
    ow = ["--overwrite"] if args.overwrite else []
    t_all = time.perf_counter()
    data = _generate_data(args, out / "data", ow)
    checkpoint = _train(args, data, out / "run", ow) if args.checkpoint is None else args.checkpoint
    if args.checkpoint is not None:
        logger.info("=== 2/4 training skipped: using %s", checkpoint)

    from rfnet.export import export_onnx  # imported here so that --help stays fast

    t = _step("3/4 export to ONNX and check parity with PyTorch")
    onnx_path = out / "model.onnx"
    _run_tool("python export/export_onnx.py", export_onnx.main,
              ["--checkpoint", str(checkpoint), "--output", str(onnx_path), "--images", str(data / "val" / "images"),
               *ow])
    logger.info("exported in %.1f s", time.perf_counter() - t)

    t = _step("4/4 torch-free runtime on ONNX Runtime (separate process)")
    infer_dir = out / "inference"
    cmd = [sys.executable, "-m", "rfnet.runtime.infer", "--model", str(onnx_path), "--input", str(data / "val" / "images"),
           "--output", str(infer_dir), *ow]
    logger.info("$ %s", " ".join(cmd))
    rc = subprocess.run(cmd, check=False).returncode
    if rc not in (ExitCode.OK, ExitCode.FAILED):
        logger.error("runtime failed with exit code %d", rc)
        return rc
    summary = json.loads((infer_dir / "summary.json").read_text())
    logger.info("inference in %.1f s", time.perf_counter() - t)

    _print_summary(out, checkpoint, onnx_path, infer_dir, summary, time.perf_counter() - t_all)
    return rc


def _generate_data(args: argparse.Namespace, data: Path, ow: list[str]) -> Path:
    """Step 1: generated training and validation images under ``data``."""
    from rfnet.data import synthetic

    t = _step("1/4 generate synthetic fundus images")
    _run_tool("python -m rfnet.data.synthetic", synthetic.main,
              ["--out", str(data / "train"), "--n", str(args.n_train), "--seed", str(args.seed + 1), *ow])
    _run_tool("python -m rfnet.data.synthetic", synthetic.main,
              ["--out", str(data / "val"), "--n", str(args.n_val), "--seed", str(args.seed + 2), *ow])
    logger.info("data ready in %.1f s", time.perf_counter() - t)
    return data


def _train(args: argparse.Namespace, data: Path, run_dir: Path, ow: list[str]) -> Path:
    """Step 2: a brief training on the CPU; the best checkpoint."""
    from rfnet import train

    t = _step(f"2/4 train the {args.preset} preset on the CPU (at most {args.train_minutes:g} min)")
    _run_tool("python -m rfnet.train", train.main, [
        "--dataset", "folder", "--data-root", str(data / "train"), "--val-data-root", str(data / "val"),
        "--preset", args.preset, "--epochs", str(args.epochs), "--max-time-min", str(args.train_minutes),
        # A few hundred iterations at most: a short warm-up, and the x0.1 step for the last epoch.
        "--warmup-iters", "20", "--lr-step", str(max(1, args.epochs - 1)),
        "--seed", str(args.seed), "--out", str(run_dir), *ow,
    ])
    logger.info("trained in %.1f s", time.perf_counter() - t)
    return run_dir / "checkpoint_best.pt"


def _print_summary(out: Path, checkpoint: Path, onnx_path: Path, infer_dir: Path, summary: dict,
                   seconds: float) -> None:
    fps = summary.get("images_per_s")
    timing = summary.get("timing_ms_per_image", {})
    lines = [
        "",
        f"RF-Net demo finished in {seconds / 60:.1f} min. Results:",
        f"  checkpoint       {checkpoint}",
        f"  ONNX model       {onnx_path}",
        f"  per-image CSV    {infer_dir / 'results.csv'}  (gradable + reason, vCDR both definitions, hCDR, area CDR, "
        "box, score, latency)",
        f"  summary          {infer_dir / 'summary.json'}",
        f"  masks            {infer_dir}/refuge/ (REFUGE BMPs: disc and cup)   overlays {infer_dir}/overlay/",
    ]
    grading = summary.get("gradability")
    if grading:
        reasons = ", ".join(f"{k} {v}" for k, v in grading["reasons"].items())
        lines.append(f"  gradable         {grading['num_gradable']} of {summary.get('num_processed')} images"
                     + (f" (not gradable: {reasons}; their CDR cells are empty)" if reasons else ""))
    if (out / "run" / "curves.png").exists():
        lines.append(f"  training curves  {out / 'run' / 'curves.png'}")
    if fps:
        lines.append(f"  ONNX Runtime CPU: {fps:.2f} images/s end to end (paper: 4.1 FPS on an NVIDIA P100)")
    if timing:
        lines.append("  ms per image: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
