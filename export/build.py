"""Build a TensorRT engine from an RF-Net ONNX model, with a manifest the runtime checks.

    python export/build.py --onnx model.onnx --precision fp16 --output engines/orin.engine \\
        [--target engines/targets/jetson-orin-nano.toml] [--batch N | --min S --opt S --max S] \\
        [--calib-dir DIR] [--calib-cache FILE] [--workspace-gb G] [--timing-cache FILE] [--dla-core N]

Everything that does not need TensorRT happens first (arguments, preset, ONNX file, RF-Net
metadata, RoiAlign attributes, shapes, calibration images), so mistakes surface on any
machine. Without TensorRT the command then prints the equivalent ``trtexec`` line, says what
to install and exits 2 -- no engine is built. With TensorRT it builds (see
``export/trt/trt_builder.py``), checks that every RoiAlign node became the ``ROIAlign_TRT`` plugin
layer, writes the engine atomically and ``X.engine.json`` beside it (``runtime/manifest.py``).

Exit codes (``rfnet.common.cli.ExitCode``): 0 built; 2 (USAGE) bad arguments or input, and
missing TensorRT / CUDA bindings / GPU -- the message says which; 1 (FAILED) TensorRT refused
to parse or build, or the engine could not be written. Never imports torch (nor PyCUDA
when cuda-python is installed: ``export/trt/cuda_device.py`` tries cuda-python first).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from rfnet.export.trt import build_plan as bp
from rfnet.export.calibration import CalibrationDataError, make_calibration_set
from rfnet.export.onnx_tools.fp16_selection import fp32_nodes
from rfnet.export.onnx_tools.graph_checks import GraphCheckError, GraphPrecision, graph_precision, precision_problem
from rfnet.export.onnx_tools.graph_checks import (batch_limit_issues, gridsample_attribute_issues, roialign_attribute_issues,
                                 roialign_nodes, sibling_candidates)
from rfnet.export.onnx_tools.onnx_meta import get_metadata
from rfnet.export.trt.targets import Target, TargetError, load_target
from rfnet.common.cli import ExitCode, new_parser, setup_logging
from rfnet.common.contract import PRECISIONS, MetadataError, ModelMetadata, parse_metadata
from rfnet.common.fileio import OutputExistsError, atomic_open, check_can_write
from rfnet.runtime.manifest import ManifestError, manifest_path, sha256_file, write_manifest

log = logging.getLogger("rfnet.export.build")

BAD_INPUT = (TargetError, GraphCheckError, MetadataError, bp.PlanError, CalibrationDataError, OutputExistsError)


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "export/build.py",
        description="Build a TensorRT engine (+ manifest JSON) from an RF-Net ONNX model. "
        "Needs TensorRT and an NVIDIA GPU; without them it validates everything, prints the "
        "equivalent trtexec command and exits 2.",
    )
    p.add_argument("--onnx", required=True, type=Path, help="RF-Net ONNX model (export/export_onnx.py)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="engine precision (default: the preset's, else fp16). TensorRT 11 (strongly typed) "
                   "takes it from the graph: fp16 needs the FP16 ONNX, int8 the Q/DQ ONNX")
    p.add_argument("--output", required=True, type=Path, help="engine to write, e.g. engines/NAME.engine")
    p.add_argument("--target", type=Path, help="preset TOML (engines/targets/*.toml); options given here win")
    shapes = p.add_mutually_exclusive_group()
    shapes.add_argument("--batch", type=int, help="static batch size N (min = opt = max = N)")
    shapes.add_argument("--min", dest="min_shape", metavar="SHAPE", help="profile min shape, e.g. 1x3x512x512")
    p.add_argument("--opt", dest="opt_shape", metavar="SHAPE", help="profile opt shape (with --min/--max)")
    p.add_argument("--max", dest="max_shape", metavar="SHAPE", help="profile max shape (with --min/--opt)")
    p.add_argument("--calib-dir", type=Path, help="INT8 calibration images (implicit INT8, TensorRT 8.6/10.x)")
    p.add_argument("--calib-cache", type=Path,
                   help="INT8 calibration cache: read when it exists and no --calib-dir is given, else written "
                   "(default: OUTPUT with suffix .calib.cache)")
    p.add_argument("--calib-method", choices=("minmax", "entropy"), default="minmax",
                   help="implicit INT8 calibrator: IInt8MinMaxCalibrator (default) or IInt8EntropyCalibrator2 "
                   "(always used with --dla-core, which requires it)")
    p.add_argument("--calib-batch", type=int,
                   help="images per calibration batch: a static-batch ONNX fixes it to its batch; otherwise the "
                   "preset's, else 8")
    p.add_argument("--calib-max-images", type=int, default=None, help="use at most this many calibration images")
    p.add_argument("--workspace-gb", type=float, help="builder workspace limit in GiB (default: preset's / TensorRT's)")
    p.add_argument("--timing-cache", type=Path, help="timing cache file, read if present and updated after the build")
    p.add_argument("--dla-core", type=int, help="Jetson DLA core; GPU fallback is always on (plugins never run on DLA)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing engine/manifest/calibration cache")
    p.add_argument("-v", "--verbose", action="store_true", help="TensorRT verbose log, every layer's placement")
    return p


@dataclass
class OnnxFacts:
    """What build.py needs from one ONNX file."""

    path: Path
    meta: ModelMetadata
    input_name: str
    input_dims: list[int | None]
    roialign: list[str]
    roialign_warnings: list[str]
    graph: GraphPrecision
    fp32_nodes: list[str]  # outside the FP16 trunk (rfnet.export.onnx_tools.fp16_selection.fp16_nodes)
    node_names: list[str]  # every named node: tells a node "X_1" from the parser's second layer of "X"


def analyse_onnx(path: Path) -> OnnxFacts:
    """Load ``path`` (without external weights) and extract metadata, input, RoiAlign nodes, precision.

    Raises:
        GraphCheckError / MetadataError naming the file and the problem.
    """
    if not path.is_file():
        raise GraphCheckError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise GraphCheckError(f"{path}: not a readable ONNX model ({exc})") from exc
    meta = parse_metadata(get_metadata(model), where=str(path))
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise GraphCheckError(f"{path}: expected one input (the image batch), found {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    errors, warnings = roialign_attribute_issues(model)
    errors += gridsample_attribute_issues(model)
    if errors:
        raise GraphCheckError(f"{path}: " + "; ".join(errors))
    return OnnxFacts(path, meta, inputs[0].name, dims, [r.name for r in roialign_nodes(model)], warnings,
                     graph_precision(model), fp32_nodes(model),  # the project's own FP32 selection
                     [n.name for n in model.graph.node if n.name])



def _shapes(args: argparse.Namespace, target: Target | None, facts: OnnxFacts) -> tuple[bp.Shape, bp.Shape, bp.Shape]:
    size = facts.meta.input_size
    tail = tuple(d if d is not None else size for d in facts.input_dims[1:])
    name = facts.input_name
    if args.min_shape or args.opt_shape or args.max_shape:
        if not (args.min_shape and args.opt_shape and args.max_shape):
            raise bp.PlanError("--min, --opt and --max must be given together")
        shapes = tuple(bp.parse_shape(s, name) for s in (args.min_shape, args.opt_shape, args.max_shape))
    elif args.batch is not None:
        if args.batch < 1:
            raise bp.PlanError(f"--batch must be >= 1, got {args.batch}")
        shapes = ((args.batch, *tail),) * 3
    elif target is not None and target.batch is not None:
        b = target.batch
        shapes = ((b.min, *tail), (b.opt, *tail), (b.max, *tail))
    else:
        shapes = ((1, *tail),) * 3
    mn, opt, mx = shapes
    bp.check_profile(facts.input_dims, mn, opt, mx, name)
    return mn, opt, mx


def _calib_batch(args: argparse.Namespace, target: Target | None, facts: OnnxFacts) -> int:
    """Images per calibration batch: the ONNX input's static batch, else --calib-batch / preset / 8.

    TensorRT calibrates at the network input's own shape when it is static (the calibration
    profile is for runtime dimensions only), so a different batch is refused, naming its source.
    """
    asked, source = args.calib_batch, "--calib-batch"
    if asked is None and target is not None and target.calib_batch:
        asked, source = target.calib_batch, f"calib_batch of preset {target.path}"
    static = facts.input_dims[0] if facts.input_dims else None
    if static is not None:
        if asked is not None and asked != static:
            raise bp.PlanError(
                f"{source} = {asked}, but {facts.path} has a static batch of {static} (input {facts.input_name!r}): "
                f"TensorRT calibrates at the input's own shape; use {static}, or export the ONNX with a dynamic batch"
            )
        return static
    return asked or 8


def _missing_calibration(plan: bp.BuildPlan, facts: OnnxFacts) -> str:
    return (f"INT8 from {facts.path} (no Q/DQ nodes) needs calibration on TensorRT 8.6/10.x: --calib-dir with real "
            f"fundus images, or an existing --calib-cache ({plan.calib_cache} not found), or the Q/DQ ONNX from "
            "export/quantize.py (TensorRT 11 accepts only that)")


def _qdq_sibling(facts: OnnxFacts) -> Path | None:
    for cand in sibling_candidates(str(facts.path), "int8"):
        if Path(cand).is_file():
            return Path(cand)
    return None


def make_plan(args: argparse.Namespace, target: Target | None, facts: OnnxFacts, *,
              strongly_typed: bool | None = None) -> bp.BuildPlan:
    """Merge command line > preset > defaults and check everything TensorRT-independent.

    ``strongly_typed``: None before TensorRT is imported (checks that hold for every version),
    else whether this TensorRT builds strongly typed networks (11.x).
    """
    precision = args.precision or (target.precision if target else "fp16")
    problem = precision_problem(precision, facts.graph, strongly_typed=bool(strongly_typed))
    if problem:
        raise bp.PlanError(f"{facts.path}: {problem}")
    mn, opt, mx = _shapes(args, target, facts)
    ws = args.workspace_gb if args.workspace_gb is not None else (target.workspace_gb if target else None)
    if ws is not None and not 0 < ws <= 1024:
        raise bp.PlanError(f"--workspace-gb must be in (0, 1024], got {ws}")
    dla = args.dla_core if args.dla_core is not None else (target.dla_core if target else None)
    if dla is not None:
        if dla < 0:
            raise bp.PlanError(f"--dla-core must be >= 0, got {dla}")
        if precision == "fp32":
            raise bp.PlanError("--dla-core: DLA runs only FP16 or INT8; use --precision fp16 or int8")
        if not mn == opt == mx:
            raise bp.PlanError("--dla-core: DLA needs static shapes; use --batch N")
    limits = batch_limit_issues(onnx.load(str(facts.path), load_external_data=False), mx[0])
    if limits:  # checked here, before TensorRT is imported: the engine would fail or drop boxes silently
        raise bp.PlanError(f"{facts.path}: " + "; ".join(limits))
    plan = bp.BuildPlan(
        onnx_path=facts.path, output=args.output, precision=precision, input_name=facts.input_name,
        min_shape=mn, opt_shape=opt, max_shape=mx, graph=facts.graph, roialign_nodes=list(facts.roialign),
        workspace_bytes=int(ws * (1 << 30)) if ws else None, timing_cache=args.timing_cache, dla_core=dla,
        target=str(target.path) if target else None,
        expected_compute_capability=target.compute_capability if target else None, verbose=args.verbose,
        onnx_input_dims=list(facts.input_dims), fp32_nodes=list(facts.fp32_nodes), node_names=list(facts.node_names),
    )
    if not plan.implicit_int8:
        if args.calib_dir is not None or args.calib_cache is not None:
            log.warning("--calib-dir/--calib-cache ignored: %s", "the ONNX is Q/DQ" if facts.graph.is_qdq else f"precision {precision}")
        return plan
    plan.calib_cache = args.calib_cache or args.output.with_suffix(".calib.cache")
    plan.calib_method = args.calib_method
    if args.calib_dir is not None:
        if plan.calib_cache.exists() and not args.overwrite:
            raise bp.PlanError(f"{plan.calib_cache}: calibration cache exists; pass --overwrite to recalibrate "
                               "from --calib-dir, or drop --calib-dir to reuse it")
        plan.calib_set = make_calibration_set(args.calib_dir, facts.meta.input_config(), _calib_batch(args, target, facts),
                                              max_images=args.calib_max_images)
    elif plan.calibration_missing and (strongly_typed is False or _qdq_sibling(facts) is None):
        raise bp.PlanError(_missing_calibration(plan, facts))  # no TensorRT version could build this
    return plan


def _pick_for_strong_typing(plan: bp.BuildPlan, facts: OnnxFacts) -> OnnxFacts:
    """TensorRT 11: return the ONNX whose graph carries ``plan.precision`` (this one or a sibling)."""
    problem = precision_problem(plan.precision, facts.graph, strongly_typed=True)
    if problem is None:
        log.info("strongly typed build: %s already carries %s (%s)", facts.path, plan.precision, facts.graph.describe())
        return facts
    for cand in sibling_candidates(str(facts.path), plan.precision):
        cp = Path(cand)
        if cp.is_file():
            other = analyse_onnx(cp)
            if precision_problem(plan.precision, other.graph, strongly_typed=True) is None:
                log.warning("strongly typed build: --precision %s needs a %s graph; using %s instead of %s",
                            plan.precision, plan.precision, cp, facts.path)
                return other
    raise bp.PlanError(f"{facts.path}: {problem}")


def manifest_for(plan: bp.BuildPlan, result: Any, facts: OnnxFacts, gpu: Any, engine_sha: str) -> dict[str, Any]:
    """The manifest dict (runtime/manifest.py fields) of a finished build."""
    calibration = None
    if plan.implicit_int8 and not result.strongly_typed and plan.calib_cache is not None:
        cs = plan.calib_set
        calibration = {
            "cache_sha256": sha256_file(plan.calib_cache) if plan.calib_cache.is_file() else None,
            "data_sha256": cs.data_sha256() if cs is not None else None,
            "num_images": cs.num_images if cs is not None else 0,
            "cache_file": str(plan.calib_cache),
        }
    return {
        **facts.meta.deploy_fields(),  # preset, input size, normalisation, K, M, ...; precision is the engine's
        "engine_file": plan.output.name, "engine_sha256": engine_sha,
        "tensorrt_version": result.tensorrt_version, "gpu_name": gpu.name, "compute_capability": gpu.compute_capability,
        "precision": plan.precision, "strongly_typed": bool(result.strongly_typed),
        "inputs": result.inputs, "outputs": result.outputs, "profiles": plan.profiles_json(),
        "onnx_file": str(plan.onnx_path), "onnx_sha256": sha256_file(plan.onnx_path),
        "calibration": calibration,
        "build_flags": {
            "builder": result.builder_flags, "network": result.network_flags,
            "workspace_bytes": plan.workspace_bytes,
            "timing_cache": str(plan.timing_cache) if plan.timing_cache else None,
            "target": plan.target, "trtexec": bp.trtexec_command(plan, strongly_typed=result.strongly_typed),
        },
        "dla_core": plan.dla_core, "layer_placement": result.layer_placement,
        "layer_placement_note": None if result.layer_placement is None else PLACEMENT_NOTE,
        "build_time_s": result.build_time_s,
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _unavailable(msg: str, plan: bp.BuildPlan) -> int:
    """TensorRT / CUDA missing: say so, print the trtexec equivalent, exit USAGE (2)."""
    print(f"error: {msg}", file=sys.stderr)
    print("No engine was built. Everything else checked out; the same build with trtexec "
          "(TensorRT 8.6/10.x syntax; TensorRT 11 takes --stronglyTyped and the FP16/Q/DQ ONNX):", file=sys.stderr)
    print("  " + bp.trtexec_command(plan, strongly_typed=False), file=sys.stderr)
    for note in bp.trtexec_notes(plan, strongly_typed=False):
        print(f"  note: {note}", file=sys.stderr)
    return ExitCode.USAGE


def _error(exc: BaseException, code: ExitCode) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return code


def _prepare(args: argparse.Namespace) -> tuple[Target | None, OnnxFacts, bp.BuildPlan]:
    """Everything TensorRT-independent: preset, output paths, the ONNX, the plan (raises BAD_INPUT)."""
    target = load_target(args.target) if args.target else None
    if target:
        log.info("preset %s: %s", target.name, target.description)
    check_can_write(args.output, args.overwrite)
    check_can_write(manifest_path(args.output), args.overwrite)
    facts = analyse_onnx(args.onnx)
    for w in facts.roialign_warnings:
        log.warning("%s", w)
    return target, facts, make_plan(args, target, facts)


def _for_this_tensorrt(args: argparse.Namespace, target: Target | None, facts: OnnxFacts, plan: bp.BuildPlan,
                       strongly_typed: bool) -> tuple[OnnxFacts, bp.BuildPlan]:
    """Re-plan for the installed TensorRT: 11.x takes the FP16 / Q/DQ sibling, 8.6/10.x need calibration."""
    if strongly_typed:
        facts = _pick_for_strong_typing(plan, facts)
        return facts, make_plan(args, target, facts, strongly_typed=True)
    if plan.calibration_missing:
        raise bp.PlanError(_missing_calibration(plan, facts))
    return facts, plan


def _report(args: argparse.Namespace, plan: bp.BuildPlan, result: Any, gpu: Any, written: Any) -> None:
    print(f"engine: {plan.output} ({result.engine.nbytes / 2**20:.1f} MiB, {result.build_time_s:.1f} s, "
          f"TensorRT {result.tensorrt_version}, {gpu.name})")
    print(f"manifest: {written}")
    print(f"RoiAlign -> ROIAlign_TRT: {len(result.plugin_check.matched)}/{len(plan.roialign_nodes)} nodes")
    if result.plugin_unverified:
        print(f"  NOT verified by plugin name: {', '.join(result.plugin_unverified)} -- this TensorRT's Python API "
              "returns no plugin name (10.1-10.3); they are plugin layers named after the nodes and ROIAlign_TRT "
              "is the registered creator, which is all that could be checked")
    if result.layer_placement is not None:
        lp = result.layer_placement
        print(f"layer placement (DLA core {plan.dla_core}), before the build: {lp['dla']} layers DLA can run, "
              f"{lp['gpu']} on GPU. {PLACEMENT_NOTE}")
        for name in result.gpu_fallback_layers if args.verbose else result.gpu_fallback_layers[:10]:
            print(f"  GPU fallback: {name}")
    print("equivalent trtexec command:\n  " + bp.trtexec_command(plan, strongly_typed=result.strongly_typed))


#: What the manifest's layer_placement counts are (trt_config.setup_dla): a prediction, not the engine's.
PLACEMENT_NOTE = ("counted with IBuilderConfig.can_run_on_DLA before the build: an upper bound for DLA, since "
                  "TensorRT builds at most 16 DLA loadables per engine and runs the layers beyond them on the GPU; "
                  "the built engine's inspector (trtexec --profilingVerbosity=detailed --exportLayerInfo) has the "
                  "real placement")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse exits 2 (USAGE) on bad arguments
    setup_logging(args.verbose)
    try:
        target, facts, plan = _prepare(args)
    except BAD_INPUT as exc:
        return _error(exc, ExitCode.USAGE)

    from rfnet.export.trt import cuda_device, trt_builder  # no TensorRT import happens here

    try:
        caps = trt_builder.capabilities(trt_builder.import_tensorrt())
    except trt_builder.TensorRTUnavailableError as exc:
        return _unavailable(str(exc), plan)
    try:
        facts, plan = _for_this_tensorrt(args, target, facts, plan, caps.strongly_typed_only)
        gpu = cuda_device.gpu_info()
    except BAD_INPUT as exc:
        return _error(exc, ExitCode.USAGE)
    except cuda_device.CudaUnavailableError as exc:
        return _unavailable(str(exc), plan)
    if plan.expected_compute_capability and plan.expected_compute_capability != gpu.compute_capability:
        log.warning("preset expects compute capability %s, this GPU (%s) is %s: the engine will only run here",
                    plan.expected_compute_capability, gpu.name, gpu.compute_capability)
    log.info("TensorRT %s on %s (sm %s)", caps.version, gpu.name, gpu.compute_capability)
    try:
        result = trt_builder.build_engine(plan)
        with atomic_open(plan.output, "wb") as fh:
            fh.write(result.engine)
        engine_sha = hashlib.sha256(result.engine).hexdigest()
        written = write_manifest(plan.output, manifest_for(plan, result, facts, gpu, engine_sha))
    except cuda_device.CudaUnavailableError as exc:  # calibration buffers need a CUDA binding
        return _error(exc, ExitCode.USAGE)
    except (trt_builder.BuildError, GraphCheckError, ManifestError, OSError) as exc:
        return _error(exc, ExitCode.FAILED)
    _report(args, plan, result, gpu, written)
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
