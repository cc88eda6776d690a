"""Benchmark RF-Net backends: speed against the paper's 4.1 FPS, and whether each faster path
keeps the reference's masks.

    python benchmarks/bench.py --model m.onnx --model m_int8.onnx [--model ckpt.pt ...] \
        [--reference ckpt.pt|m.onnx] --data DIR [--dataset folder] --out report/ \
        [--batch-sizes 1,4] [--warmup 10] [--iterations 100] [--threads N]

For every model file, every runner that applies (``benchmarks/runners.py``: PyTorch CPU /
CUDA / CUDA FP16 / CUDA graph, ONNX Runtime CPU / CUDA, TensorRT / TensorRT graph); a runner
whose library or GPU is missing here is reported as "not run: <reason>", never as a number.
Per runner:

* end to end (decode -> preprocess -> model -> postprocess -> CDR, batch 1, once over the
  data set after ``--warmup`` untimed images): latency p50/p90/p99 per image and per stage,
  FPS and speed-up against 4.1 FPS; Dice disc / cup against the ground truth; mean mask
  agreement Dice and Dice difference against the reference;
* model only (the backend call on a preprocessed batch; ``--warmup`` untimed calls, then
  ``--iterations`` timed calls, per batch size): latency p50/p90/p99 per call and per
  image, throughput and speed-up;
* peak resident memory (and GPU memory on a GPU).

Writes ``report.json``, ``report.md`` and ``report.png`` into ``--out``.
Exit status (``rfnet.common.cli.ExitCode``): 0 all parity checks held, 1 a parity check failed
(the report and the log say which), 2 bad arguments or inputs (including a reference that
cannot run).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rfnet.benchmarks.endtoend import GTImage, PackedMasks, end_to_end, load_ground_truth, pipeline_throughput
from rfnet.benchmarks.measure import MemoryProbe, time_model
from rfnet.benchmarks.parity import DEFAULT_MAX_DICE_DROP, ParityRules, check_result, overall
from rfnet.benchmarks.report import baseline, environment, now_utc, write_reports
from rfnet.benchmarks.runners import (
    ALL_RUNNERS,
    NotRunError,
    RunnerSpec,
    model_kind,
    open_runner,
    reference_runner,
    runners_for,
    versions,
)
from rfnet.common import cpustat
from rfnet.common.backend import Backend, BackendError, BackendUnavailableError
from rfnet.common.cli import ExitCode, start
from rfnet.common.contract import ModelMetadata
from rfnet.common.imageio import read_image
from rfnet.common.preprocess import preprocess
from rfnet.common.segment import model_info
from rfnet.data import DATASET_NAMES
from rfnet.errors import RFNetError, UsageError
from rfnet.runtime.backends.onnxrt import plan_cpu_workers
from rfnet.torch_backend import PRESET_PREFIX, TorchBackend

log = logging.getLogger("rfnet.benchmarks.bench")


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sorted(set(sizes))


def _unit(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (Dice units: 0.001 = 0.1 point), got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Latency, throughput, memory and mask parity of RF-Net backends (see docs/benchmarks.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", action="append", required=True, metavar="PATH",
                   help="model to benchmark (repeat): .onnx (FP32/FP16/INT8), .engine/.plan (TensorRT, with its "
                        f".engine.json), .pt checkpoint, or {PRESET_PREFIX}NAME (untrained: timing only)")
    p.add_argument("--reference", default=None, metavar="PATH",
                   help="model whose masks define parity (default: the first --model); run FP32 on "
                        "PyTorch / ONNX Runtime CPU / TensorRT")
    p.add_argument("--reference-runner", default=None, choices=ALL_RUNNERS,
                   help="runner of the reference (default: pytorch-cuda when a GPU is visible, else pytorch-cpu, "
                        "for a checkpoint; onnxruntime-cpu for an ONNX; tensorrt for an engine)")
    p.add_argument("--data", required=True, type=Path, help="data set root with ground-truth masks")
    p.add_argument("--dataset", default="folder", choices=DATASET_NAMES, help="data set layout")
    p.add_argument("--split", default=None, help="data set split (e.g. test, validation)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--fold", type=int, default=None,
                   help="use only the held-out images of this k-fold split (as rfnet.train/evaluate --fold)")
    p.add_argument("--folds", type=int, default=5, help="number of folds for --fold (default 5)")
    p.add_argument("--seed", type=int, default=0, help="split seed for --fold (default 0)")
    p.add_argument("--out", required=True, type=Path, help="report folder (must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1], help="model-only batch sizes, e.g. 1,4")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (end to end: images)")
    p.add_argument("--iterations", type=int, default=100, help="timed model-only calls per batch size")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for ONNX Runtime and PyTorch (default: each library's own)")
    p.add_argument("--backends", default=None,
                   help=f"comma-separated runners to try (default: all that apply): {','.join(ALL_RUNNERS)}")
    p.add_argument("--no-pipeline", action="store_true",
                   help="skip the pipelined end-to-end throughput pass per batch size (rfnet.runtime.pipeline)")
    p.add_argument("--workers", type=int, default=None,
                   help="pipelined passes on ONNX Runtime's CPU provider: inferences at once, each on "
                   "threads/workers threads, as rfnet infer runs them (default: its choice, 2 on 2+ threads)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    for prec in ("fp32", "fp16", "int8"):
        p.add_argument(f"--max-dice-drop-{prec}", type=_unit, default=DEFAULT_MAX_DICE_DROP[prec],
                       help=f"largest |Dice - reference Dice| (disc and cup) allowed for {prec} models")
        p.add_argument(f"--min-agreement-{prec}", type=_unit, default=None,
                       help=f"smallest mean mask agreement Dice with the reference for {prec} models (off by default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _check_args(args: argparse.Namespace) -> tuple[list[RunnerSpec], RunnerSpec]:
    """Validate inputs before the long run; ``(runners, reference runner)``; UsageError otherwise."""
    if args.warmup < 0 or args.iterations < 1:
        raise UsageError(f"need --warmup >= 0 and --iterations >= 1, got {args.warmup} and {args.iterations}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {args.threshold}")
    allowed = None
    if args.backends:
        allowed = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in allowed if b not in ALL_RUNNERS]
        if unknown:
            raise UsageError(f"--backends: unknown {unknown}; choose from {list(ALL_RUNNERS)}")
    for m in list(args.model) + ([args.reference] if args.reference else []):
        try:
            model_kind(m)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not m.startswith(PRESET_PREFIX) and not Path(m).is_file():
            raise UsageError(f"{m}: model file not found")
    specs: list[RunnerSpec] = []
    for m in args.model:
        for s in runners_for(m, allowed):
            if s not in specs:
                specs.append(s)
    if not specs:
        raise UsageError(f"--backends {args.backends!r} leaves no runner for the given models")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"{out}: folder is not empty; pass --overwrite to write the report there")
    ref_model = args.reference or args.model[0]
    if args.reference_runner is None:
        return specs, reference_runner(ref_model)
    if args.reference_runner not in [s.runner for s in runners_for(ref_model)]:
        raise UsageError(f"--reference-runner {args.reference_runner} cannot run {ref_model}")
    return specs, RunnerSpec(ref_model, args.reference_runner)


def _same(a: RunnerSpec, b: RunnerSpec) -> bool:
    key = lambda s: (s.model if s.model.startswith(PRESET_PREFIX) else str(Path(s.model).resolve()), s.runner)  # noqa: E731
    return key(a) == key(b)


def _feed(backend: Backend, info: ModelMetadata, images: Sequence[GTImage], batch: int) -> dict[str, np.ndarray]:
    """A preprocessed batch of the first images (cycled when there are fewer than ``batch``)."""
    spec = backend.input_spec()
    tensors = [preprocess(read_image(images[i % len(images)].path), info.input_config())[0] for i in range(min(batch, len(images)))]
    arr = np.stack([tensors[i % len(tensors)] for i in range(batch)]).astype(spec.dtype)
    return {spec.name: arr}


def _batch_not_run(backend: Backend, b: int) -> str | None:
    """Why batch size ``b`` cannot be fed to this model (None when it can)."""
    spec = backend.input_spec()
    if spec.shape[0] >= 0 and spec.shape[0] != b:
        return f"the model has a fixed batch size of {spec.shape[0]}"
    hi = spec.max_dim(0)
    if hi is not None and b > hi:
        return f"the engine profile allows at most {hi} images per batch"
    return None


def _pipeline_backend(spec: RunnerSpec, backend: Backend, args: argparse.Namespace) -> tuple[Backend, int]:
    """(backend, workers) of the pipelined passes: as ``rfnet infer`` runs the model (on ONNX
    Runtime's CPU provider, ``workers`` runs at once on threads/workers threads each: a second
    session set up so), else the benchmarked backend itself with one run at a time."""
    if spec.runner != "onnxruntime-cpu":
        return backend, 1
    workers, intra = plan_cpu_workers(args.threads, args.workers, ["CPUExecutionProvider"])
    if workers == 1:  # the benchmarked session, on args.threads
        return backend, 1
    return open_runner(spec, threads=intra), workers


def _throughput(backend: Backend, info: ModelMetadata, images: Sequence[GTImage], args: argparse.Namespace,
                label: str, probe: MemoryProbe, piped: tuple[Backend, int]
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per batch size: model-only timing and (unless --no-pipeline) pipelined end-to-end throughput,
    without and with the runtime's default output files (on ``piped``: :func:`_pipeline_backend`)."""
    model_only: dict[str, Any] = {}
    pipeline: dict[str, Any] = {}
    with_outputs: dict[str, Any] = {}
    for b in args.batch_sizes:
        reason = _batch_not_run(backend, b)
        if reason:
            for table in (model_only, pipeline, with_outputs):
                table[str(b)] = {"status": "not run", "reason": reason}
            continue
        for key, table in (("model", model_only), ("pipeline", pipeline), ("outputs", with_outputs)):
            if key != "model" and args.no_pipeline:
                continue
            try:
                if key == "model":
                    table[str(b)] = time_model(backend.infer, _feed(backend, info, images, b), b, warmup=args.warmup,
                                               iterations=args.iterations, label=label, progress=not args.no_progress)
                elif key == "pipeline":
                    table[str(b)] = pipeline_throughput(piped[0], info, images, b, threshold=args.threshold,
                                                        workers=piped[1])
                else:
                    with tempfile.TemporaryDirectory(prefix="rfnet_bench_outputs_") as tmp:
                        table[str(b)] = pipeline_throughput(piped[0], info, images, b, threshold=args.threshold,
                                                            outputs=Path(tmp), workers=piped[1])
            except BackendUnavailableError:
                raise
            except (BackendError, ValueError, RuntimeError, OSError) as exc:
                table[str(b)] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            probe.sample()
    return model_only, pipeline, with_outputs


def run_runner(spec: RunnerSpec, images: Sequence[GTImage], args: argparse.Namespace, *,
               reference: dict[str, PackedMasks] | None, keep_masks: bool, timing: bool = True
               ) -> tuple[dict[str, Any], dict[str, PackedMasks]]:
    """Benchmark one runner: ``(result entry, packed masks if keep_masks)``."""
    result: dict[str, Any] = {"id": spec.id, "model": spec.model, "model_name": spec.model_name, "runner": spec.runner}
    probe = MemoryProbe().start()
    log.info("%s: loading", spec.id)
    try:
        backend = open_runner(spec, threads=args.threads)
    except NotRunError as exc:
        log.warning("%s: not run: %s", spec.id, exc)
        return {**result, "status": "not run", "reason": str(exc)}, {}
    except (BackendError, ValueError, OSError) as exc:
        log.error("%s: failed to load: %s", spec.id, exc)
        return {**result, "status": "failed", "reason": str(exc)}, {}
    masks: dict[str, PackedMasks] = {}
    with backend:
        try:
            info = model_info(backend)
            result.update(device=backend.device, precision=info.precision,
                          input_size=info.input_size, preset=info.preset)
            t0 = time.perf_counter()
            e2e, acc, masks = end_to_end(backend, info, images, threshold=args.threshold, warmup=args.warmup,
                                         reference=reference, keep_masks=keep_masks, label=spec.id,
                                         progress=not args.no_progress)
            probe.sample()
            graphs = backend.cuda_graph_report()
            if graphs is not None and not graphs["used"]:  # never report a graph that did not run
                raise NotRunError(f"CUDA graph requested but not used: {graphs['note']}")
            result.update(status="ok", end_to_end=e2e, accuracy=acc)
            if timing:
                piped = _pipeline_backend(spec, backend, args) if not args.no_pipeline else (backend, 1)
                try:
                    result["model_only"], result["pipeline"], result["pipeline_outputs"] = _throughput(
                        backend, info, images, args, spec.id, probe, piped)
                finally:
                    if piped[0] is not backend:
                        piped[0].close()
            else:
                result["model_only"], result["pipeline"], result["pipeline_outputs"] = {}, {}, {}
            result["wall_s"] = round(time.perf_counter() - t0, 2)
        except NotRunError as exc:
            return {**result, "status": "not run", "reason": str(exc)}, {}
        except BackendUnavailableError as exc:  # e.g. a CUDA graph that cannot be captured
            log.warning("%s: not run: %s", spec.id, exc)
            return {**result, "status": "not run", "reason": str(exc)}, {}
        except (BackendError, ValueError, RuntimeError, OSError) as exc:
            log.error("%s: failed: %s", spec.id, exc)
            return {**result, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}, {}
        if isinstance(backend, TorchBackend):
            probe.torch_peak_mb = backend.torch_max_allocated_mb()
        result["memory"] = probe.result()
    return result, masks


def _add_differences(result: dict[str, Any], ref: dict[str, Any]) -> None:
    acc, racc = result.get("accuracy"), ref.get("accuracy") or {}
    if not acc:
        return
    diff = {}
    for part in ("disc", "cup"):
        a, b = acc.get(f"dice_{part}"), racc.get(f"dice_{part}")
        diff[part] = None if a is None or b is None else a - b
    acc["dice_difference_vs_reference"] = diff  # model - reference (negative: the model is worse)


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    specs, ref_spec = _check_args(args)
    cpu0 = cpustat.snapshot()
    env = environment(args.threads, versions())
    images, problems = _load_images(args)
    # The reference runs first: its masks are what every other runner is compared with.
    ref_in_list = any(_same(s, ref_spec) for s in specs)
    ref_result, ref_masks = run_runner(ref_spec, images, args, reference=None, keep_masks=True, timing=ref_in_list)
    if ref_result["status"] != "ok" or not ref_result["end_to_end"]["images"]:
        raise UsageError(f"the reference {ref_spec.id} could not run: "
                         f"{ref_result.get('reason') or 'every image failed: ' + str(ref_result['end_to_end']['failures'][:1])}")
    ref_result["is_reference"] = True
    results = [ref_result if _same(spec, ref_spec) else
               run_runner(spec, images, args, reference=ref_masks, keep_masks=False)[0] for spec in specs]
    # The reference agrees with itself by definition; record it for a complete table.
    ref_result["accuracy"]["agreement_vs_reference"] = {"disc": 1.0, "cup": 1.0, "disc_min": 1.0, "cup_min": 1.0,
                                                        "images": ref_result["end_to_end"]["images"]}
    rules = ParityRules(
        max_dice_drop={p: getattr(args, f"max_dice_drop_{p}") for p in ("fp32", "fp16", "int8")},
        min_agreement={p: getattr(args, f"min_agreement_{p}") for p in ("fp32", "fp16", "int8")},
    )
    for r in results:
        _add_differences(r, ref_result)
        r["parity"] = check_result(r, ref_result, rules)
    verdict = overall(results)
    load = cpustat.machine_load(cpu0, cpustat.snapshot())  # steal / others / own shares of the CPU time
    report = {
        "format": "rfnet-benchmark-report",
        "format_version": 1,
        "created_utc": now_utc(),
        "command": ["python", "benchmarks/bench.py", *argv],
        "environment": env,
        "load_average_end": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "machine_load": load,
        "baseline": baseline(),
        "data": {"dataset": args.dataset, "root": str(args.data), "split": args.split, "fold": args.fold,
                 "folds": args.folds, "seed": args.seed, "images": len(images), "problems": problems[:20]},
        "settings": {"batch_sizes": args.batch_sizes, "warmup": args.warmup, "iterations": args.iterations,
                     "pipeline": not args.no_pipeline, "threads": args.threads, "workers": args.workers,
                     "threshold": args.threshold},
        "reference": {"id": ref_spec.id, "model": ref_spec.model, "runner": ref_spec.runner,
                      "precision": ref_result.get("precision"), "in_results": ref_in_list,
                      "dice_disc": ref_result["accuracy"].get("dice_disc"),
                      "dice_cup": ref_result["accuracy"].get("dice_cup"),
                      "end_to_end": ref_result["end_to_end"]},
        "parity_rules": rules.as_dict(),
        "results": results,
        "parity": verdict,
    }
    paths = write_reports(args.out, report)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    print("machine's CPU time during the run: " + cpustat.describe(load))
    return _print_results(results, verdict)


def _load_images(args: argparse.Namespace) -> tuple[list[GTImage], list[str]]:
    """The evaluation images with ground truth, and the data set's problems (UsageError when none)."""
    try:
        images, problems = load_ground_truth(args.dataset, args.data, args.split, args.limit,
                                             progress=not args.no_progress, fold=args.fold, folds=args.folds,
                                             seed=args.seed)
    except (ValueError, OSError) as exc:
        raise UsageError(f"{args.data}: cannot read the {args.dataset} data set: {exc}") from None
    if not images:
        raise UsageError(f"{args.data}: no usable images with ground truth ({'; '.join(problems[:3])})")
    log.info("%d images from %s (%d problems)", len(images), args.data, len(problems))
    return images, problems


def _print_results(results: list[dict[str, Any]], verdict: dict[str, Any]) -> int:
    """One line per runner and the parity verdict; the exit code."""
    for r in results:
        if r["status"] == "ok":
            acc, e2e = r["accuracy"], r["end_to_end"]
            piped = (r.get("pipeline_outputs") or {}).get("1") or {}
            print(f"  {r['id']:<50} {r['precision']:>4}  e2e {_num(e2e['fps'], 2)} FPS "
                  f"(x{_num(e2e['speedup_vs_paper'], 2)} vs 4.1)  Dice disc {_num(acc.get('dice_disc'), 4)} "
                  f"cup {_num(acc.get('dice_cup'), 4)}  gradable {(acc.get('gradable') or {}).get('images', '-')}"
                  f"/{acc.get('images_scored', '-')}  pipelined with outputs {_num(piped.get('throughput_fps'), 2)} img/s")
        else:
            print(f"  {r['id']:<50} {r['status']}: {r.get('reason')}")
    if verdict["passed"]:
        print(f"parity: all {len(verdict['checked'])} checked runners held")
        return ExitCode.OK
    for f in verdict["failed"]:
        print(f"parity FAILED for {f['id']}: " + "; ".join(f["failures"]), file=sys.stderr)
    return ExitCode.FAILED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = start(build_parser(), argv)
    if isinstance(args, int):  # --help, or bad arguments
        return args
    try:
        return run(args, argv)
    except RFNetError as exc:  # bad arguments or inputs, a reference that cannot run
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE


if __name__ == "__main__":
    raise SystemExit(main())
