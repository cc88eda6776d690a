"""Export RF-Net's inference path to ONNX and check it against PyTorch.

    python export/export_onnx.py --checkpoint PATH --output model.onnx \
        [--opset 17] [--batch 1|N|dynamic] [--top-k K] [--proposals N] [--no-simplify] [--images DIR]

Graph: ``image`` float32 [B,3,S,S] (preprocessed, docs/design.md) -> ``boxes`` [B,K,4],
``scores`` [B,K], ``masks`` [B,K,2,M,M], all static. K is ``--top-k``, 1 by default
(:data:`SCREENING_TOP_K`). RoIAlign is the standard ONNX
``RoiAlign`` (``half_pixel``, explicit ``sampling_ratio``; needs opset >= 16), Fusion
Feature Pooling is RoiAlign per level + ``Max``, NMS is ONNX ``NonMaxSuppression``; no
custom-domain op. Exported with ``torch.onnx.export(dynamo=False)`` (TorchScript tracing:
the model's eval path is written for it), simplified with onnxsim, checked with
``onnx.checker``, ``rfnet.*`` metadata in ``metadata_props`` (export/onnx_tools/onnx_meta.py).

Then ONNX Runtime (CPU) vs PyTorch on a few images (synthetic unless ``--images``): max abs
difference of masks, scores and boxes and Dice of the binarised masks; exit 1 when beyond
``--atol`` / ``--min-dice`` (the model is then not written). ``--batch dynamic`` is checked
at batch 1 and 2; a model whose dynamic-batch graph does not reproduce PyTorch is refused
with exit 2. Exit 2 also for bad arguments or inputs, 1 for a graph that breaks the contract
(``rfnet.common.cli.ExitCode``).

Score ties: a briefly trained model gives many detections the same score, and which of them
NMS and the top K keep is decided by float noise, differently in PyTorch and ONNX Runtime. The
check therefore compares detections as matched sets (export/onnx_tools/detection_match.py): above the
score floor (``--box-min-score``), pairs matched by IoU at equal scores are compared value by
value, equally scored detections that swapped places with others of a tied score are counted as
tie swaps, and a detection without a counterpart fails the check.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch

from rfnet.export.onnx_tools import onnx_inspect
from rfnet.export.errors import ExportError
from rfnet.export.onnx_tools.compare import EvalImage, cpu_backend, folder_images, max_abs_diffs, synthetic_images
from rfnet.export.onnx_tools.detection_match import DetectionMatch, match_detections, matched_diffs, matched_mask_dice
from rfnet.export.onnx_tools.graph_checks import gridsample_attribute_issues, roialign_attribute_issues
from rfnet.export.onnx_tools.onnx_meta import exporter_versions, write_model_metadata
from rfnet.export.onnx_tools.onnx_passes import simplify
from rfnet.checkpoint import checkpoint_sha256, load_model
from rfnet.common.cli import ExitCode, add_test_settings_arguments, setup_logging
from rfnet.common.contract import INPUT_NAME, OUTPUT_NAMES
from rfnet.common.fileio import atomic_write_bytes, check_can_write
from rfnet.common.gradability import apply_grading_file
from rfnet.common.segment import Segmenter
from rfnet.config import ModelConfig
from rfnet.metadata import metadata_from_config
from rfnet.errors import RFNetError, UsageError
from rfnet.torch_backend import TorchBackend

log = logging.getLogger(__name__)

MIN_OPSET = 16  # RoiAlign coordinate_transformation_mode (half_pixel) exists from opset 16
#: K of an export unless ``--top-k`` says otherwise. The runtime post-processes only the top
#: detection (one optic disc per eye), and each detection's mask is computed on its own, so K=1
#: gives the same final masks as the paper's K=10 for about half the model time (docs/lab/benchmarks-log.md).
#: Export K=10 (``--top-k 10``) to reproduce the paper's inference, to look at the other detections
#: (e.g. a second, rejected disc candidate), or for a consumer of the ONNX that reads all K.
SCREENING_TOP_K = 1


class ExportContractError(ExportError, RuntimeError):
    """The export produced a graph that breaks the contract; the message says what."""


class DynamicBatchUnsupported(ExportContractError):
    """The model does not give correct results with a dynamic batch axis."""


def parse_batch(text: str) -> int | None:
    """``"1"``/``"N"`` -> N, ``"dynamic"`` -> None."""
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch must be a positive integer or 'dynamic', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch must be >= 1, got {value}")
    return value


def expected_output_shapes(cfg: ModelConfig, batch: int | None) -> dict[str, list[int | None]]:
    """Output shapes of the contract (None = dynamic batch)."""
    k, m = cfg.roi_heads.detections_per_img, cfg.mask_head.mask_size
    return {"boxes": [batch, k, 4], "scores": [batch, k], "masks": [batch, k, 2, m, m]}


def _shape(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def contract_problems(model: onnx.ModelProto, cfg: ModelConfig, batch: int | None) -> list[str]:
    """Everything about ``model`` that breaks docs/design.md's I/O contract or TensorRT needs."""
    problems: list[str] = []
    s = cfg.input.size
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs are {[i.name for i in inputs]}, expected ['{INPUT_NAME}']")
    else:
        got = _shape(inputs[0])
        if got[1:] != [3, s, s] or (batch is not None and got[0] != batch) or (batch is None and isinstance(got[0], int)):
            problems.append(f"input shape {got}, expected [{batch or 'batch'}, 3, {s}, {s}]")
    outs = {o.name: o for o in model.graph.output}
    if list(outs) != list(OUTPUT_NAMES):
        problems.append(f"outputs are {list(outs)}, expected {list(OUTPUT_NAMES)}")
    for name, want in expected_output_shapes(cfg, batch).items():
        if name not in outs:
            continue
        got = _shape(outs[name])
        if got[1:] != want[1:] or (batch is not None and got[0] != batch) or (batch is None and isinstance(got[0], int)):
            problems.append(f"output {name} has shape {got}, expected {[d if d is not None else 'batch' for d in want]}")
        if outs[name].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"output {name} is not float32")
    custom = onnx_inspect.custom_domain_nodes(model)
    if custom:
        problems.append(f"custom-domain ops in the graph: {custom}")
    errors, warnings = roialign_attribute_issues(model, {cfg.roi_heads.sampling_ratio, cfg.mask_head.sampling_ratio})
    problems += errors + gridsample_attribute_issues(model)
    for w in warnings:
        log.warning("%s", w)
    if not any(n.op_type == "RoiAlign" for n in model.graph.node):
        problems.append("no RoiAlign node in the graph")
    return problems


def export_model(model: torch.nn.Module, cfg: ModelConfig, *, batch: int | None = 1, opset: int = 17,
                 do_simplify: bool = True) -> onnx.ModelProto:
    """Trace ``model`` (eval) to ONNX; ``batch`` None gives a dynamic batch axis.

    Raises :class:`ExportContractError` when the graph breaks the contract (names, static shapes,
    RoiAlign attributes, custom-domain ops) and ``rfnet.export.onnx_tools.onnx_passes.SimplifyError`` when onnxsim fails.
    """
    if opset < MIN_OPSET:
        raise UsageError(f"--opset {opset}: RoiAlign needs opset >= {MIN_OPSET} for half_pixel (aligned) sampling")
    model = model.eval()
    s = cfg.input.size
    example = torch.zeros(batch or 2, 3, s, s)
    dynamic_axes = None
    if batch is None:
        dynamic_axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    # torch.onnx.export is typed to take a path; a private temporary folder keeps the output atomic.
    with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        # Tracer warnings about Python ints taken from shapes are expected: shapes are static.
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "traced.onnx"
        torch.onnx.export(
            model, (example,), raw, opset_version=opset, dynamo=False, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
        proto = onnx.load(str(raw))
    if do_simplify:
        proto = simplify(proto)
    if batch is None:
        _declare_output_shapes(proto, cfg)
    onnx.checker.check_model(proto, full_check=True)
    problems = contract_problems(proto, cfg, batch)
    if problems:
        if batch is None and any("shape" in p for p in problems):
            raise DynamicBatchUnsupported("the model does not export with a dynamic batch axis: " + "; ".join(problems))
        raise ExportContractError("; ".join(problems))
    return proto


def _declare_output_shapes(proto: onnx.ModelProto, cfg: ModelConfig) -> None:
    """Write the contract's static K/M dims on the outputs of a dynamic-batch graph.

    With a symbolic batch, ONNX shape inference loses the (constant) K of the top-K through
    ``TopK``/``Reshape`` and names it symbolically. The dims are set from the config here and
    the parity check then runs the model at batch 1 and 2, where ONNX Runtime verifies the
    real output shapes against these declarations.
    """
    for out in proto.graph.output:
        want = expected_output_shapes(cfg, None).get(out.name)
        dims = out.type.tensor_type.shape.dim
        if want is None or len(dims) != len(want):
            continue
        dims[0].Clear()
        dims[0].dim_param = "batch"
        for d, value in zip(list(dims)[1:], want[1:]):
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = int(value)  # type: ignore[arg-type]


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on the same preprocessed images, detections as matched sets."""

    batch_sizes: list[int]
    num_images: int
    max_diff: dict[str, float]  # over matched detections (scores: and tie swaps)
    raw_max_diff: dict[str, float]  # slot by slot, unmatched
    match: DetectionMatch
    mask_dice: float  # Dice of the binarised (> 0.5) masks of matched detections

    def passed(self, atol: float, min_dice: float, score_atol: float, box_atol: float) -> bool:
        d = self.max_diff
        return (self.match.verifiable and not self.match.unmatched and d["masks"] <= atol
                and d["scores"] <= score_atol and d["boxes"] <= box_atol and self.mask_dice >= min_dice)


def parity_check(model: torch.nn.Module, onnx_model: Path, items: Sequence[EvalImage], cfg: ModelConfig,
                 batch_sizes: Sequence[int], threads: int = 0, box_min_score: float = 0.05, *,
                 score_atol: float = 1e-4, box_atol: float = 1e-2, atol: float = 1e-4) -> ParityReport:
    """Run ``items`` through PyTorch and ONNX Runtime in chunks of each batch size; compare.

    Both run through the shared core (:meth:`rfnet.common.segment.Segmenter.infer`): the
    model behind :class:`~rfnet.torch_backend.TorchBackend`, the file ``onnx_model`` behind the
    runtime's ONNX Runtime backend. The detections scoring at least ``box_min_score`` are
    compared as matched sets (:func:`rfnet.export.onnx_tools.detection_match.match_detections`): score ties that
    NMS or the top K resolve differently are tie swaps, not failures; masks within ``atol`` of
    the 0.5 threshold count as agreeing in the binarised Dice.
    """
    refs: list[dict[str, np.ndarray]] = []
    alts: list[dict[str, np.ndarray]] = []
    with TorchBackend.from_model(model, cfg) as reference, cpu_backend(onnx_model, threads) as exported:
        for b in batch_sizes:
            ref_core, onnx_core = Segmenter(reference, batch_size=b), Segmenter(exported, batch_size=b)
            tensors = np.stack([ref_core.preprocess(it.image)[0] for it in items])
            refs.append(ref_core.infer(tensors))
            alts.append(onnx_core.infer(tensors))
    cat = lambda outs: {k: np.concatenate([o[k] for o in outs]) for k in OUTPUT_NAMES}  # noqa: E731
    r, a = cat(refs), cat(alts)
    wide = reference_scores_at_k(model, cfg, tensors, TIE_EVIDENCE_K)
    match = match_detections(r, a, score_floor=box_min_score, score_atol=score_atol, box_atol=box_atol,
                             tie_scores=wide)
    return ParityReport(
        batch_sizes=list(batch_sizes),
        num_images=len(items),
        max_diff=matched_diffs(r, a, match),
        raw_max_diff=max_abs_diffs(r, a),
        match=match,
        mask_dice=matched_mask_dice(r, a, match, atol=atol),
    )


#: Top-K of the PyTorch reference's extra run that tells a tie at the top of a smaller-K export.
TIE_EVIDENCE_K = 10


def reference_scores_at_k(model: torch.nn.Module, cfg: ModelConfig, tensors: np.ndarray, k: int) -> np.ndarray | None:
    """The PyTorch model's top-``k`` detection scores [N,k] of preprocessed ``tensors`` [N,3,S,S],
    or None when the model already outputs ``k`` or more. With K=1 an export's outputs cannot
    show that its one detection shares its score with others (an undertrained model), so
    PyTorch and ONNX Runtime keeping different boxes of such a group would look like divergence.
    """
    if cfg.roi_heads.detections_per_img >= k:
        return None
    wide = copy.deepcopy(cfg)
    wide.roi_heads.detections_per_img = k
    heads: Any = getattr(model, "roi_heads")  # its config is read at each call: K is no weight
    saved = heads.cfg
    heads.cfg = wide.roi_heads
    try:
        with TorchBackend.from_model(model, wide) as backend:
            return Segmenter(backend, batch_size=1).infer(tensors)["scores"]
    finally:
        heads.cfg = saved


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="training checkpoint (rfnet.checkpoint format)")
    p.add_argument("--output", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help=f"ONNX opset (>= {MIN_OPSET}; default 17)")
    p.add_argument("--batch", type=parse_batch, default=1, help="static batch size N (default 1) or 'dynamic'")
    p.add_argument("--top-k", type=int, default=SCREENING_TOP_K,
                   help=f"detections per image K that get a mask (default {SCREENING_TOP_K}: the runtime uses only "
                        "the top one; 10 = the paper's and the checkpoint's usual K, for research or to see the "
                        "other candidates)")
    add_test_settings_arguments(p)
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--images", type=Path, default=None, help="parity-check images (default: synthetic)")
    p.add_argument("--num-images", type=int, default=4, help="parity-check images (default 4)")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs mask difference allowed (default 1e-4)")
    p.add_argument("--score-atol", type=float, default=1e-4, help="max abs score difference allowed (default 1e-4)")
    p.add_argument("--box-atol", type=float, default=1e-2, help="max abs box difference in pixels (default 1e-2)")
    p.add_argument("--box-min-score", type=float, default=0.05,
                   help="compare the detections scoring at least this (default 0.05), as matched sets: equal scores "
                        "matched by IoU; tied scores that NMS or the top K resolve differently are not failures")
    p.add_argument("--grading", metavar="FILE",
                   help="a model's calibrated verdict and referral (the JSON python -m rfnet.screening_calibration "
                        "writes: min_disc_score, limits, referral_vcdr), written as rfnet.min_disc_score, "
                        "rfnet.grading_limits and rfnet.referral_vcdr; --min-disc-score still overrides its score")
    p.add_argument("--min-disc-score", type=float, default=None,
                   help="minimum disc score of a gradable result, written as rfnet.min_disc_score (default: the "
                        "checkpoint's grading.min_disc_score; derive it with python -m rfnet.grading_calibration)")
    p.add_argument("--min-dice", type=float, default=0.999, help="min Dice of the binarised masks (default 0.999)")
    p.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic parity images")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(args.verbose)
    try:
        check_can_write(args.output, args.overwrite)
        if args.opset < MIN_OPSET:
            raise UsageError(f"--opset {args.opset}: RoiAlign half_pixel needs opset >= {MIN_OPSET}")
        if not args.checkpoint.is_file():
            raise UsageError(f"{args.checkpoint}: no such checkpoint file")
        model, cfg = load_model(args.checkpoint, "cpu", top_k=args.top_k, proposals=args.proposals,
                                crop_margin=args.crop_margin)
        if args.grading is not None:
            apply_grading_file(cfg.grading, Path(args.grading))
        if args.min_disc_score is not None:  # a property of these weights: the metadata carries it
            if not 0.0 <= args.min_disc_score < 1.0:
                raise UsageError(f"--min-disc-score must be in [0, 1), got {args.min_disc_score}")
            cfg.grading.min_disc_score = args.min_disc_score
        items = (folder_images(args.images, args.num_images) if args.images is not None
                 else synthetic_images(args.num_images, args.seed, 512))
        proto = export_model(model, cfg, batch=args.batch, opset=args.opset, do_simplify=not args.no_simplify)
    except DynamicBatchUnsupported as exc:
        log.error("%s; export with a static --batch N instead", exc)
        return ExitCode.USAGE
    except ExportError as exc:  # the graph breaks the contract, or onnxsim failed
        log.error("%s: export failed: %s", args.checkpoint, exc)
        return ExitCode.FAILED
    except (RFNetError, OSError) as exc:  # arguments, checkpoint, parity images, output file
        log.error("%s", exc)
        return ExitCode.USAGE
    exporter = exporter_versions()
    exporter.update({"opset": str(args.opset), "batch": "dynamic" if args.batch is None else str(args.batch),
                     "simplified": str(not args.no_simplify), "torch_onnx_export": "dynamo=False"})
    write_model_metadata(proto, metadata_from_config(
        cfg, precision="fp32", checkpoint_sha256=checkpoint_sha256(args.checkpoint), exporter=exporter))
    data = proto.SerializeToString()
    log.info("exported %d nodes, opset %d, batch %s; rfnet.min_disc_score %g", len(proto.graph.node), args.opset,
             "dynamic" if args.batch is None else args.batch, cfg.grading.min_disc_score)
    print(onnx_inspect.tensorrt_view(proto))
    if not args.no_parity:
        rc = _report_parity(args, model, cfg, data, items)
        if rc != ExitCode.OK:
            log.error("%s not written", args.output)
            return rc
    atomic_write_bytes(args.output, data)
    log.info("wrote %s", args.output)
    return ExitCode.OK


def _print_parity(rep: ParityReport) -> None:
    """The figures of one parity check, and what the matching found."""
    m = rep.match
    print(f"ONNX Runtime vs PyTorch (fp32, {rep.num_images} images, batch {rep.batch_sizes[0]}): max abs diff "
          + ", ".join(f"{k} {v:.3g}" for k, v in rep.max_diff.items())
          + f" over {len(m.pairs)} matched detections; binarised-mask Dice {rep.mask_dice:.6f}; "
          + f"{len(m.ties)} tie swaps; {len(m.unmatched)} unmatched"
          + (" (slot by slot: " + ", ".join(f"{k} {v:.3g}" for k, v in rep.raw_max_diff.items()) + ")"
             if m.ties or m.unmatched else ""))
    for line in m.unmatched[:10]:
        log.error("  %s", line)
    if not m.verifiable:
        log.error("no detection could be matched (every score above the floor is tied): these images cannot show "
                  "parity; pass other --images or a lower --box-min-score")
    if m.top_tied:
        log.warning("images %s: the top detection is tied with other boxes, so which disc is segmented is decided by "
                    "float noise (in PyTorch as on any backend); a trained model does not do this", m.top_tied)


def _report_parity(args: argparse.Namespace, model: torch.nn.Module, cfg: ModelConfig, data: bytes,
                   items: Sequence[EvalImage]) -> int:
    """Parity check(s) of the serialized model; prints the figures, returns the exit code."""
    tol = (args.atol, args.min_dice, args.score_atol, args.box_atol)
    batch_sizes = [1, 2] if args.batch is None else [args.batch]
    with tempfile.TemporaryDirectory(prefix="rfnet_export_") as tmp:  # ONNX Runtime loads it as the runtime would
        path = Path(tmp) / args.output.name
        path.write_bytes(data)
        reports = [parity_check(model, path, items, cfg, [b], box_min_score=args.box_min_score,
                                score_atol=args.score_atol, box_atol=args.box_atol, atol=args.atol)
                   for b in batch_sizes]
    for rep in reports:
        _print_parity(rep)
    failed = [rep.batch_sizes[0] for rep in reports if not rep.passed(*tol)]
    if failed and args.batch is None:
        log.error("the model does not support a dynamic batch: the dynamic-batch graph differs from PyTorch at "
                  "batch %s; export with a static --batch N instead", failed)
        return ExitCode.USAGE
    if failed:
        log.error("parity check failed: tolerances masks %.1g, scores %.1g, boxes %.1g px, Dice >= %.4f",
                  args.atol, args.score_atol, args.box_atol, args.min_dice)
        return ExitCode.FAILED
    worst = {k: max(r.max_diff[k] for r in reports) for k in OUTPUT_NAMES}
    print(json.dumps({"parity": "ok", **{f"max_abs_{k}": v for k, v in worst.items()},
                      "mask_dice": min(r.mask_dice for r in reports)}))
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
