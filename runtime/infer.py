"""Segment optic disc and cup with a TensorRT engine or an ONNX model (torch-free).

    python runtime/infer.py --model rfnet.engine --input fundus/ --output results/
    python runtime/infer.py --model rfnet.onnx --input 'imgs/*.jpg' --output out --batch 4

Exit status (``rfnet.common.cli.ExitCode``): 0 all images processed; 1 some images failed
(listed on stderr and in summary.json); 2 usage, model, input or output-folder error, or a
missing library (nothing written); 130 interrupted (the results so far are written).
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.imageio import IMAGE_EXTENSIONS, list_images
from rfnet.common.progress import track
from rfnet.errors import RFNetError, UsageError
from runtime.backends import BACKENDS, Backend, create_backend, resolve_backend
from runtime.outputs import (DEFAULT_SAVE, OVERLAY_FORMATS, SAVE_CHOICES, OutputWriter, output_names, parse_save,
                             prepare_output_dir)
from runtime.writer import BackgroundWriter
from rfnet.common.contract import ModelMetadata
from runtime.pipeline import ImageFailure, ImageResult, Pipeline

log = logging.getLogger("runtime.infer")

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runtime/infer.py",
        description="Optic disc / cup segmentation and cup-to-disc ratios with TensorRT or ONNX Runtime "
        "(no PyTorch needed).",
        epilog="Exit status: 0 ok, 1 some images failed (listed), 2 usage/model/input/output error or a missing "
        "library, 130 interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, help="X.engine (with X.engine.json beside it) or X.onnx")
    p.add_argument("--input", required=True, help="an image file, a folder of images, or a quoted glob pattern")
    p.add_argument("--output", required=True, type=Path, help="output folder (must be empty unless --overwrite)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto: TensorRT for an engine (NVIDIA GPU), ONNX Runtime for an .onnx (CUDA provider if present, else CPU)",
    )
    p.add_argument("--batch", type=int, default=1, help="images per inference call")
    p.add_argument(
        "--save",
        default=",".join(DEFAULT_SAVE),
        help=f"comma-separated outputs to write: {','.join(SAVE_CHOICES)} (or all); summary.json is always written. "
        "masks = separate disc/cup PNGs (the REFUGE map already holds both)",
    )
    p.add_argument("--overlay-format", choices=OVERLAY_FORMATS, default=OVERLAY_FORMATS[0],
                   help="overlay file format (PNG is lossless but costs more than the model to encode)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    p.add_argument("--ellipse", action="store_true", help="fit ellipses to disc and cup")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--recursive", action="store_true", help="search input folders recursively")
    p.add_argument("--prefetch", type=int, default=4, help="images decoded ahead of inference")
    p.add_argument("--cuda-graph", action="store_true",
                   help="TensorRT: replay a CUDA graph captured per input shape (needs cuda-python); falls back to "
                   "plain execution when capture fails, and summary.json says which ran")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    p.add_argument("--spin", action="store_true",
                   help="ONNX Runtime: let idle intra-op threads spin-wait (off by default: they would take the "
                        "cores the decode and writer threads need)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return ExitCode.USAGE


def _versions(backend_kind: str) -> dict[str, str]:
    import cv2

    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    mod = "tensorrt" if backend_kind == "tensorrt" else "onnxruntime"
    lib = sys.modules.get(mod)
    if lib is not None:
        out[mod] = str(getattr(lib, "__version__", "?"))
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _summary(
    args: argparse.Namespace,
    backend: Backend,
    kind: str,
    info: ModelMetadata,
    pipeline: Pipeline,
    results: list[ImageResult],
    failures: list[ImageFailure],
    n_images: int,
    wall_s: float,
    interrupted: bool,
) -> dict[str, Any]:
    cdr: dict[str, dict[str, float | None]] = {}
    for key in ("vcdr", "vcdr_extent", "hcdr", "area_cdr"):
        vals = [r.cdr[key] for r in results]
        cdr[key] = {"mean": _mean(vals), "std": float(np.std(vals)) if vals else None}
    timing = {
        "decode_ms": _mean([r.timings["decode"] for r in results]),
        "preprocess_ms": _mean([r.timings["preprocess"] for r in results]),
        "inference_ms": _mean([r.latency_ms for r in results]),
        "postprocess_ms": _mean([r.timings["postprocess"] for r in results]),
        "cdr_ms": _mean([r.timings["cdr"] for r in results]),
    }
    return {
        "model": str(args.model),
        "backend": kind,
        "device": backend.device,
        "model_info": info.deploy_fields(),
        "settings": {
            "batch_size": pipeline.batch_size,
            "threshold": args.threshold,
            "ellipse": bool(args.ellipse),
            "save": sorted(parse_save(args.save)),
            "overlay_format": args.overlay_format,
            "cuda_graph_requested": bool(args.cuda_graph),  # what actually ran: "cuda_graph" below
        },
        "cuda_graph": backend.cuda_graph_report(),  # None, or {requested, used, replays, captured_shapes, note}
        "input": str(args.input),
        "num_images": n_images,
        "num_processed": len(results),
        "num_failed": len(failures),
        "num_no_disc": sum(1 for r in results if not r.segmentation.found),
        "failed": [{"file": str(f.path), "error": f.error} for f in sorted(failures, key=lambda f: f.index)],
        "interrupted": interrupted,
        "cdr": cdr,
        "timing_ms_per_image": timing,
        "wall_time_s": round(wall_s, 3),
        "images_per_s": round(len(results) / wall_s, 3) if wall_s > 0 else None,
        "versions": _versions(kind),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else ExitCode.USAGE
    setup_logging(args.verbose)

    try:
        kind, paths, save = _check_args(args)
    except (RFNetError, OSError) as exc:  # nothing loaded, nothing written
        return _error(str(exc))
    backend = create_backend(args.model, kind, cuda_graph=args.cuda_graph, intra_op_threads=args.threads,
                             spinning=args.spin)
    try:
        backend.load()
        pipeline = Pipeline(backend, batch_size=args.batch, threshold=args.threshold,
                            ellipse=args.ellipse, prefetch=args.prefetch)
    except RFNetError as exc:  # a missing library, a foreign or stale model, bad metadata
        backend.close()
        return _error(str(exc))
    with backend:
        log.info("backend %s on %s; model %s (input %d px, batch %d); %d images",
                 kind, backend.device, args.model, pipeline.info.input_size, pipeline.batch_size, len(paths))
        try:
            out_dir = prepare_output_dir(args.output, args.overwrite)
        except (RFNetError, OSError) as exc:
            return _error(str(exc))
        return _run(args, backend, kind, pipeline.info, pipeline, paths, OutputWriter(out_dir, save, args.overlay_format))


def _check_args(args: argparse.Namespace) -> tuple[str, list[Path], frozenset[str]]:
    """Cheap checks first, so a mistake costs no model loading and writes nothing:
    (backend kind, image paths, outputs to save)."""
    save = parse_save(args.save)
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {args.threshold}")
    if not args.model.is_file():
        raise UsageError(f"{args.model}: model file not found")
    kind = resolve_backend(args.model, args.backend)
    paths = list_images(args.input, recursive=args.recursive)
    if not paths:
        raise UsageError(f"{args.input}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    if args.output.exists():  # refuse before loading anything; the folder is created only after the model loads
        prepare_output_dir(args.output, args.overwrite)
    return kind, paths, save


def _run(
    args: argparse.Namespace,
    backend: Backend,
    kind: str,
    info: ModelMetadata,
    pipeline: Pipeline,
    paths: Sequence[Path],
    writer: OutputWriter,
) -> int:
    names = output_names(paths)
    results: list[ImageResult] = []
    failures: list[ImageFailure] = []
    interrupted = False
    t0 = time.perf_counter()
    outcomes = pipeline.run(paths)
    background = BackgroundWriter(writer)  # files are written off this loop
    try:
        # a bar on a terminal; elsewhere the line logged below is the stage's one line
        for outcome in track(outcomes, desc="segment", total=len(paths), unit="img", enabled=not args.no_progress,
                             summary=False):
            if isinstance(outcome, ImageFailure):
                failures.append(outcome)
                log.warning("%s", outcome.error)
                continue
            background.submit(names[outcome.index], outcome)
            results.append(outcome)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: writing the results of the %d images processed so far", len(results))
    finally:
        outcomes.close()  # type: ignore[attr-defined]  # stops the decode thread
        results, failures = _drop_unwritten(results, failures, background.close())
    wall = time.perf_counter() - t0
    writer.write_csv()
    summary = _summary(args, backend, kind, info, pipeline, results, failures, len(paths), wall, interrupted)
    writer.write_summary(summary)
    log.info("%d/%d images processed in %.2f s; results in %s", len(results), len(paths), wall, writer.out_dir)
    if interrupted:
        return ExitCode.INTERRUPTED
    if failures:
        print(f"error: {len(failures)} of {len(paths)} images failed:", file=sys.stderr)
        for f in sorted(failures, key=lambda f: f.index):
            print(f"  {f.error}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _drop_unwritten(results: list[ImageResult], failures: list[ImageFailure], unwritten: list[ImageFailure]
                    ) -> tuple[list[ImageResult], list[ImageFailure]]:
    """Images whose files could not be written move from the results to the failures."""
    for f in unwritten:
        log.warning("%s", f.error)
    bad = {f.index for f in unwritten}
    return [r for r in results if r.index not in bad], failures + unwritten


if __name__ == "__main__":
    raise SystemExit(main())
