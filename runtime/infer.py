"""Segment optic disc and cup with a TensorRT engine or an ONNX model (torch-free).

    python runtime/infer.py --model rfnet.engine --input fundus/ --output results/
    python runtime/infer.py --model rfnet.onnx --input 'imgs/*.jpg' --output out --batch 4

Each image gets a gradability verdict (``rfnet.common.gradability``): an image that is not
gradable -- no confident, whole, plausible disc, or not a usable fundus photograph -- is listed
with its reason and empty CDR cells, and summary.json's CDR statistics use gradable images only.
``--min-score`` overrides the model's minimum disc score (``rfnet.min_disc_score``).

Interrupted or killed runs: ``progress.jsonl`` in the output folder lists every finished image;
rerun the same command with ``--resume`` to process only the rest (results.csv and summary.json
then cover all images, each once).

Exit status (``rfnet.common.cli.ExitCode``): 0 all images processed (gradable or not); 1 some
images failed (listed on stderr and in summary.json); 2 usage, model, input or output-folder
error, or a missing library (nothing written); 130 interrupted (the results so far are written;
``--resume`` finishes the rest).
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rfnet.common import cpustat
from rfnet.common.cli import ExitCode, images_run_epilog, new_parser, start
from rfnet.common.imageio import IMAGE_EXTENSIONS, list_images
from rfnet.common.progress import track
from rfnet.errors import RFNetError, UsageError
from rfnet.runtime.backends import BACKENDS, Backend, create_backend, resolve_backend
from rfnet.runtime.journal import Journal, Record, check_same_run, journal_path, read_journal
from rfnet.runtime.manifest import sha256_file
from rfnet.runtime.outputs import (DEFAULT_OVERLAY_SIDE, DEFAULT_SAVE, OVERLAY_FORMATS, SAVE_CHOICES, UNGRADABLE,
                                   OutputWriter, output_names, parse_save, prepare_output_dir, write_run_report)
from rfnet.runtime.pipeline import ImageFailure, Pipeline
from rfnet.runtime.writer import BackgroundWriter

log = logging.getLogger("rfnet.runtime.infer")


DESCRIPTION = ("Optic disc / cup segmentation and cup-to-disc ratios with TensorRT or ONNX Runtime "
               "(no PyTorch needed).")


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("rfnet infer", DESCRIPTION, images_run_epilog("usage/model/input/output error or missing library"))
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
        "masks = separate disc/cup PNGs (the REFUGE map already holds both). "
        f"Masks and REFUGE maps are written for gradable images only; add {UNGRADABLE} to write them for the others "
        "too (for review)",
    )
    p.add_argument("--overlay-size", type=int, default=DEFAULT_OVERLAY_SIDE,
                   help="long side of the overlay pictures in pixels, at most (a photograph decoded at reduced size "
                   "within 2%% of it is drawn as decoded), 0 for the photograph's own size (the measurements and the "
                   "REFUGE map always use the full-size masks)")
    p.add_argument("--overlay-format", choices=OVERLAY_FORMATS, default=OVERLAY_FORMATS[0],
                   help="overlay file format (PNG is lossless but costs more than the model to encode)")
    p.add_argument("--full-decode", action="store_true",
                   help="decode every photograph whole, the pixels rfnet evaluate sees (default: a JPEG at least "
                        "twice the model's input side is decoded at 1/2, 1/4 or 1/8 of its size, which is faster; "
                        "masks and measurements stay at the photograph's size)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    p.add_argument("--min-score", type=float, default=None,
                   help="minimum disc score of a gradable image (default: the model's rfnet.min_disc_score)")
    p.add_argument("--ellipse", action="store_true", help="fit ellipses to disc and cup")
    p.add_argument("--tta", action="store_true",
                   help="test-time flip: also run each image mirrored left-right and merge (twice the model time)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html (the screening report: counts, referrals first, thumbnails, "
                        "vCDR histogram; rebuild it later with rfnet report OUTPUT)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --output: skip the images its progress.jsonl lists "
                   "(same model, input and settings required)")
    p.add_argument("--recursive", action="store_true", help="search input folders recursively")
    p.add_argument("--prefetch", type=int, default=4, help="images decoded ahead of inference")
    p.add_argument("--cuda-graph", action="store_true",
                   help="TensorRT: replay a CUDA graph captured per input shape (needs cuda-python); falls back to "
                   "plain execution when capture fails, and summary.json says which ran")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime threads, all concurrent runs together (default: the machine's cores)")
    p.add_argument("--workers", type=int, default=None,
                   help="ONNX Runtime on the CPU: images inferred at once, each on threads/workers threads "
                   "(default: 2 when there are 2 threads or more; TensorRT and the CUDA provider: 1)")
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


def _cdr_stats(records: Sequence[Record]) -> dict[str, dict[str, float | None]]:
    """Mean and std of each CDR over the gradable images (the only ones with a CDR)."""
    cdr: dict[str, dict[str, float | None]] = {}
    for key in ("vcdr", "vcdr_extent", "hcdr", "area_cdr", "vcdr_expert"):
        vals = [r.cdr[key] for r in records if r.cdr is not None and key in r.cdr]  # vcdr_expert: some models
        cdr[key] = {"mean": _mean(vals), "std": float(np.std(vals)) if vals else None}
    return cdr


def _gradability(records: Sequence[Record], min_score: float) -> dict[str, Any]:
    reasons = Counter(r.reason for r in records if not r.gradable)
    return {"min_disc_score": min_score, "num_gradable": sum(1 for r in records if r.gradable),
            "num_not_gradable": sum(reasons.values()), "reasons": dict(sorted(reasons.items()))}


def _summary(
    args: argparse.Namespace,
    backend: Backend,
    kind: str,
    pipeline: Pipeline,
    records: Sequence[Record],
    failures: list[ImageFailure],
    n_images: int,
    wall_s: float,
    interrupted: bool,
    load: dict[str, float] | None = None,
) -> dict[str, Any]:
    """summary.json: settings, counts, gradability, CDR statistics (gradable images), timings of
    the images processed by this invocation (a resumed run's earlier images are counted, not timed)."""
    new = [r for r in records if not r.resumed]
    timing = {
        "decode_ms": _mean([r.timings["decode"] for r in new]),
        "preprocess_ms": _mean([r.timings["preprocess"] for r in new]),
        "inference_ms": _mean([r.latency_ms for r in new]),
        "postprocess_ms": _mean([r.timings["postprocess"] for r in new]),
        "cdr_ms": _mean([r.timings["cdr"] for r in new]),
    }
    return {
        "model": str(args.model),
        "backend": kind,
        "device": backend.device,
        "model_info": pipeline.info.deploy_fields(),
        "settings": {
            "batch_size": pipeline.batch_size,
            "workers": pipeline.workers,
            "threads": args.threads,
            "threshold": args.threshold,
            "min_disc_score": pipeline.min_score,
            "ellipse": bool(args.ellipse),
            "tta": bool(args.tta),
            "save": sorted(parse_save(args.save)),
            "overlay_format": args.overlay_format,
            "overlay_size": args.overlay_size,
            "full_decode": bool(args.full_decode),
            "cuda_graph_requested": bool(args.cuda_graph),  # what actually ran: "cuda_graph" below
        },
        "cuda_graph": backend.cuda_graph_report(),  # None, or {requested, used, replays, captured_shapes, note}
        "input": str(args.input),
        "num_images": n_images,
        "num_processed": len(records),
        "num_resumed": len(records) - len(new),
        "num_failed": len(failures),
        "num_no_disc": sum(1 for r in records if str(r.row.get("disc_found")) == "0"),
        "gradability": _gradability(records, pipeline.min_score),
        "failed": [{"file": str(f.path), "error": f.error} for f in sorted(failures, key=lambda f: f.index)],
        "interrupted": interrupted,
        "cdr": _cdr_stats(records),
        "timing_ms_per_image": timing,
        "wall_time_s": round(wall_s, 3),
        "images_per_s": round(len(new) / wall_s, 3) if wall_s > 0 else None,
        # shares of the machine's CPU time during the run (rfnet.common.cpustat): steal, others, own
        "machine_load": load,
        "versions": _versions(kind),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _plan_workers(args: argparse.Namespace, kind: str) -> tuple[int, int | None]:
    """(concurrent inferences, ONNX Runtime intra-op threads per inference) for this run."""
    if kind == "tensorrt":
        if args.workers not in (None, 1):
            raise ValueError("TensorRT runs one inference at a time (one execution context); use --workers 1")
        return 1, args.threads
    from rfnet.runtime.backends.onnxrt import plan_cpu_workers

    return plan_cpu_workers(args.threads, args.workers)


def main(argv: list[str] | None = None) -> int:
    args = start(build_parser(), argv)
    if isinstance(args, int):  # --help, or bad arguments
        return args

    try:
        kind, paths, save = _check_args(args)
    except (RFNetError, OSError) as exc:  # nothing loaded, nothing written
        return _error(str(exc))
    try:
        workers, intra = _plan_workers(args, kind)
    except ValueError as exc:
        return _error(f"--workers: {exc}")
    backend = create_backend(args.model, kind, cuda_graph=args.cuda_graph, intra_op_threads=intra, spinning=args.spin)
    try:
        backend.load()
        pipeline = Pipeline(backend, batch_size=args.batch, threshold=args.threshold, ellipse=args.ellipse,
                            prefetch=args.prefetch, min_score=args.min_score, tta=args.tta, workers=workers,
                            full_decode=args.full_decode)
    except RFNetError as exc:  # a missing library, a foreign or stale model, bad metadata
        backend.close()
        return _error(str(exc))
    with backend:
        log.info("backend %s on %s; model %s (input %d px, batch %d, min disc score %g); %d images",
                 kind, backend.device, args.model, pipeline.info.input_size, pipeline.batch_size,
                 pipeline.min_score, len(paths))
        header = _run_header(args, kind, pipeline)
        try:
            restored = _restore(args, header, paths)
            out_dir = prepare_output_dir(args.output, args.overwrite or bool(restored) or _resumable(args))
            with Journal(out_dir, header, restored) as journal:
                writer = OutputWriter(out_dir, save, journal, args.overlay_format, args.overlay_size)
                writer.restore(restored)
                return _run(args, backend, kind, pipeline, paths, writer)
        except (RFNetError, OSError) as exc:
            return _error(str(exc))


def _check_args(args: argparse.Namespace) -> tuple[str, list[Path], frozenset[str]]:
    """Cheap checks first, so a mistake costs no model loading and writes nothing:
    (backend kind, image paths, outputs to save)."""
    save = parse_save(args.save)
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.overlay_size < 0:
        raise UsageError(f"--overlay-size must be 0 (the photograph's own size) or a number of pixels, "
                         f"got {args.overlay_size}")
    if not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.min_score is not None and not 0.0 <= args.min_score < 1.0:
        raise UsageError(f"--min-score must be in [0, 1), got {args.min_score}")
    if not args.model.is_file():
        raise UsageError(f"{args.model}: model file not found")
    kind = resolve_backend(args.model, args.backend)
    paths = list_images(args.input, recursive=args.recursive)
    if not paths:
        raise UsageError(f"{args.input}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    # refuse before loading anything; the folder is created only after the model loads
    if args.output.exists() and not _resumable(args):
        prepare_output_dir(args.output, args.overwrite)
    return kind, paths, save


def _resumable(args: argparse.Namespace) -> bool:
    """--resume into a folder that holds a progress journal."""
    return bool(args.resume) and journal_path(args.output).is_file()


def _run_header(args: argparse.Namespace, kind: str, pipeline: Pipeline) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (the journal's first line)."""
    return {"model": str(args.model), "model_sha256": sha256_file(args.model), "backend": kind,
            "input": str(args.input), "recursive": bool(args.recursive), "threshold": args.threshold,
            "min_disc_score": pipeline.min_score, "ellipse": bool(args.ellipse), "tta": bool(args.tta),
            "save": sorted(parse_save(args.save)), "overlay_format": args.overlay_format,
            "overlay_size": args.overlay_size, "full_decode": bool(args.full_decode)}


def _restore(args: argparse.Namespace, header: dict[str, Any], paths: Sequence[Path]) -> list[Record]:
    """The finished images of the interrupted run in --output (``--resume``), indexed into ``paths``."""
    if not _resumable(args):
        if args.resume:
            log.info("%s: no progress journal; nothing to resume, starting afresh", args.output)
        return []
    old, records = read_journal(args.output)
    check_same_run(old, header, journal_path(args.output))
    index = {str(p): i for i, p in enumerate(paths)}
    by_file: dict[str, Record] = {}
    for rec in records:  # one record per file (the latest), for files still in the input
        if rec.file in index:
            rec.index = index[rec.file]
            by_file[rec.file] = rec
    if len(by_file) < len({r.file for r in records}):
        log.warning("%s: %d journalled image(s) are no longer in the input and are left out",
                    args.output, len({r.file for r in records}) - len(by_file))
    log.info("resuming: %d of %d images already done in %s", len(by_file), len(paths), args.output)
    return list(by_file.values())


def _run(
    args: argparse.Namespace,
    backend: Backend,
    kind: str,
    pipeline: Pipeline,
    paths: Sequence[Path],
    writer: OutputWriter,
) -> int:
    names = output_names(paths)
    done = {r.file for r in writer.records}
    todo = [(i, p) for i, p in enumerate(paths) if str(p) not in done]
    failures: list[ImageFailure] = []
    interrupted = False
    t0, cpu0 = time.perf_counter(), cpustat.snapshot()
    outcomes = pipeline.run([p for _, p in todo])
    background = BackgroundWriter(writer)  # files are written off this loop
    try:
        # a bar on a terminal; elsewhere the line logged below is the stage's one line
        for outcome in track(outcomes, desc="segment", total=len(todo), unit="img", enabled=not args.no_progress,
                             summary=False):
            outcome.index = todo[outcome.index][0]  # position in the whole input list
            if isinstance(outcome, ImageFailure):
                failures.append(outcome)
                log.warning("%s", outcome.error)
                continue
            background.submit(names[outcome.index], outcome)  # frees the pixels once written
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: writing the results of the %d images processed so far; rerun with --resume "
                    "to finish the rest", len(writer.records))
    finally:
        outcomes.close()  # type: ignore[attr-defined]  # stops the decode thread
        for unwritten in background.close():  # images whose files could not be written
            log.warning("%s", unwritten.error)
            failures.append(unwritten)
    wall = time.perf_counter() - t0
    load = cpustat.machine_load(cpu0, cpustat.snapshot())
    writer.write_csv()
    summary = _summary(args, backend, kind, pipeline, writer.records, failures, len(paths), wall, interrupted, load)
    writer.write_summary(summary)
    if not args.no_report:
        write_run_report(writer)
    grading = summary["gradability"]
    log.info("%d/%d images processed in %.2f s (%d gradable, %d not: %s); results in %s", len(writer.records),
             len(paths), wall, grading["num_gradable"], grading["num_not_gradable"],
             ", ".join(f"{k} {v}" for k, v in grading["reasons"].items()) or "-", writer.out_dir)
    if cpustat.is_shared(load):
        log.warning("machine's CPU time during the run: %s", cpustat.describe(load))
    if interrupted:
        return ExitCode.INTERRUPTED
    if failures:
        print(f"error: {len(failures)} of {len(paths)} images failed:", file=sys.stderr)
        for f in sorted(failures, key=lambda f: f.index):
            print(f"  {f.error}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
