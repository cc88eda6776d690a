"""Explicit INT8 (Q/DQ) quantization of an RF-Net ONNX model, for TensorRT and ONNX Runtime.

    python export/quantize.py --onnx model.onnx --calib-dir DIR --output model_int8.onnx \
        [--method entropy|minmax|percentile] [--num-images N]

The INT8 gate (exit 1 when INT8 loses more than ``--max-dice-drop`` Dice against FP32) judges on
``--eval-data`` (each dataset gated on its own) / ``--eval-dataset`` / ``--eval-dir`` when given; otherwise on a part of the calibration folder
held out of the calibration (``--holdout``, a k-fold split by name): Dice against the ground truth
when the folder has ``masks/`` beside ``images/``, else INT8-vs-FP32 mask agreement. It names
the images it judged and prints the figures at the precision it compares them (6 decimals).
Generated images (``--num-synthetic``) are reported for information only: a model trained on
real eyes need not segment them.

Why ONNX Runtime's ``quantize_static`` and not NVIDIA ModelOpt: both write the explicit,
symmetric, per-channel-weight Q/DQ graph that TensorRT 10/11 wants (TensorRT 11 has no
calibrators, INT8 is Q/DQ only), but ModelOpt's ``[onnx]`` extra pins ``onnx`` and pulls
``onnxruntime-gpu``, which collides with the CPU ``onnxruntime`` every other part of this
project (and the torch-free runtime) depends on. ``quantize_static`` ships with the
onnxruntime we already have, runs its calibration on the CPU and gives us control over
which nodes stay float. ModelOpt remains an optional extra (``pip install '.[modelopt]'``).

Two targets (``--target``, ``export/onnx_tools/qdq_targets.py``): ``tensorrt`` (the default, below) and
``onnxruntime``, for ONNX Runtime's CPU provider: uint8 activations, float consumers reading the
DequantizeLinear, so that every quantized Conv/Gemm runs as QLinearConv/QGemm (U8S8) and the
only layout Transposes move 8-bit data at the edges of the integer regions (checked on ONNX
Runtime's optimised graph in tests/export/test_quantize.py). TensorRT cannot build that model.

TensorRT-specific choices (see field notes section 1-2):
* ``ActivationSymmetric`` / ``WeightSymmetric``: TensorRT only takes zero-point-0 int8 Q/DQ.
* ``per_channel=True``: per-output-channel weight scales, which TensorRT supports for
  Conv/Gemm weights.
* ``QuantizeBias=False``: biases stay float (TensorRT has no INT32 DequantizeLinear; it
  fuses the float bias into the INT8 convolution itself).
* Only conv-like layers and the activations between them get Q/DQ (``--op-types``); every
  other consumer reads the float tensor (:func:`reroute_float_consumers`): RoiAlign,
  NonMaxSuppression, TopK, Gather,
  box decoding, sigmoid etc. stay float. The mask head's final ``--float-mask-layers``
  layers (found by walking back from the ``masks`` output, not by name) stay float too:
  INT8 mask heads are the known source of degraded Mask R-CNN masks.
* The stem and first MobileNet blocks stay float too (``--float-input-layers``, default 13):
  on the Drishti-trained model they, not the heads, carried the INT8 Dice loss (measured per
  choice of float layers in docs/lab/results-log.md, "INT8 on this fold").
* Min-max activation ranges by default. ONNX Runtime's own "entropy" is min-max in disguise
  (128 histogram bins for 128 levels leave the KL search one candidate); with TensorRT's
  2048 bins (:func:`calibrated_ranges`) the KL threshold clipped the Drishti-trained model far
  too hard (docs/lab/results-log.md). ``--method entropy|percentile`` stay available.
* Q/DQ on layer outputs too (ONNX Runtime's layout, which its CPU provider fuses into
  int8-in/int8-out QLinearConv; TensorRT fuses it as well); ``--inputs-only`` gives the
  ModelOpt-style placement (inputs of weighted layers only), which ONNX Runtime then runs
  as float convolutions, i.e. no faster than FP32 on the CPU.
* Calibration images go through the runtime's own preprocessing (export/calibration.py's
  loader on ``rfnet.common``), with the input settings read from the ``rfnet.*`` metadata.

Torch-free: quantization needs only onnx + onnxruntime.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from rfnet.export.onnx_tools import onnx_inspect
from rfnet.export.onnx_tools.onnx_meta import derived_metadata, get_metadata, load_fp32_model, model_metadata, set_metadata
from rfnet.export.calibration import CalibrationDataError, CalibrationSet, make_calibration_set
from rfnet.export.onnx_tools.int8_eval import GateOptions, eval_sets, evaluate_all
from rfnet.export.onnx_tools.qdq_targets import FLOAT_CONSUMERS, TARGETS, narrow_layers
from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.contract import KEY_QUANTIZATION
from rfnet.common.fileio import atomic_write_bytes, check_can_write
from rfnet.config import InputConfig
from rfnet.errors import RFNetError, UsageError

log = logging.getLogger(__name__)

METHODS = ("entropy", "minmax", "percentile")
#: Conv-like layers plus the activations between them: with both quantized, ONNX Runtime's CPU
#: provider fuses DQ -> Conv -> (Clip) -> Q into QLinearConv (int8 in, int8 out).
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Clip", "Relu")
ACTIVATIONS: frozenset[str] = frozenset({"Clip", "Relu", "LeakyRelu"})
#: The stem and MobileNet blocks 0-5 stay float by default: the early layers, not the heads,
#: carried the INT8 cup-Dice loss on the Drishti-trained model, and keeping them float costs no
#: ONNX Runtime CPU speed (they are memory-bound). The measurements behind the choice are in
#: docs/lab/results-log.md ("INT8 on this fold").
DEFAULT_FLOAT_INPUT_LAYERS = 13

@dataclass
class QuantizeOptions:
    """What to quantize and how (defaults: TensorRT-friendly INT8)."""

    method: str = "minmax"
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    float_mask_layers: int = 2  # conv-like layers nearest to `masks` kept float (0 = none)
    # First conv-like layers from the image input kept float (0 = none); see DEFAULT_FLOAT_INPUT_LAYERS.
    float_input_layers: int = DEFAULT_FLOAT_INPUT_LAYERS
    exclude_nodes: tuple[str, ...] = ()  # extra node names kept float
    exclude_pattern: str | None = None  # regex on node names kept float
    # Q/DQ also on the outputs of quantized layers (ONNX Runtime's layout, int8 -> int8 kernels
    # on its CPU provider; TensorRT fuses it too). False: inputs only, as ModelOpt places them.
    quantize_outputs: bool = True
    percentile: float = 99.999
    # How float consumers (RoiAlign, FPN Add, Resize, decoding, ...) of a quantized layer's output
    # read it (FLOAT_CONSUMERS); "dequantized" lets ONNX Runtime run the layer as QLinearConv/QGemm.
    float_consumers: str = "rerouted"
    # Conv-like layers with fewer output channels stay float (0 = none); see export/onnx_tools/qdq_targets.py.
    min_int8_channels: int = 0
    # "int8": symmetric int8 activations (zero point 0), what TensorRT takes. "uint8": asymmetric
    # uint8 activations, what ONNX Runtime's x86 integer kernels (U8S8) take directly.
    activations: str = "int8"
    target: str = "tensorrt"  # the TARGETS entry these settings came from (recorded in the metadata)

    @classmethod
    def for_target(cls, target: str, **overrides: object) -> "QuantizeOptions":
        """The :data:`TARGETS` settings of ``target``, then ``overrides`` (None values ignored)."""
        if target not in TARGETS:
            raise UsageError(f"--target must be one of {sorted(TARGETS)}, got {target!r}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**TARGETS[target], **given, "target": target})  # type: ignore[arg-type]


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    excluded: list[str] = field(default_factory=list)


class ImageCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over preprocessed images.

    Feeds ``{input_name: float32 [B,3,S,S]}`` chunks of the given batch; the last chunk is
    padded with repeats for static-batch models.
    """

    def __init__(self, batch: np.ndarray, input_name: str, model_batch: int | None) -> None:
        self._batch = batch
        self._name = input_name
        self._b = model_batch or 1
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._batch.shape[0]:
            return None
        part = self._batch[self._pos : self._pos + self._b]
        self._pos += self._b
        if part.shape[0] < self._b:
            part = np.concatenate([part, np.repeat(part[-1:], self._b - part.shape[0], axis=0)])
        return {self._name: np.ascontiguousarray(part, dtype=np.float32)}

    def rewind(self) -> None:
        self._pos = 0


def _input_batch(model: onnx.ModelProto) -> tuple[str, int | None]:
    inp = model.graph.input[0]
    dim = inp.type.tensor_type.shape.dim[0]
    return inp.name, (dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None)


def nodes_kept_float(model: onnx.ModelProto, opts: QuantizeOptions) -> list[str]:
    """Names of the conv-like nodes excluded from quantization by ``opts``."""
    excluded: list[str] = []
    if "masks" in {o.name for o in model.graph.output}:
        excluded += onnx_inspect.tail_compute_nodes(model, "masks", opts.float_mask_layers)
    elif opts.float_mask_layers:
        log.warning("model has no 'masks' output; --float-mask-layers ignored")
    excluded += onnx_inspect.head_compute_nodes(model, opts.float_input_layers)
    excluded += narrow_layers(model, opts.min_int8_channels)
    names = {n.name for n in model.graph.node}
    unknown = [n for n in opts.exclude_nodes if n not in names]
    if unknown:
        raise UsageError(f"--exclude-nodes: no such nodes in the model: {unknown}")
    excluded += list(opts.exclude_nodes)
    if opts.exclude_pattern:
        try:
            rx = re.compile(opts.exclude_pattern)
        except re.error as exc:
            raise UsageError(f"--exclude-pattern {opts.exclude_pattern!r}: not a regular expression ({exc})") from None
        excluded += [n for n in names if rx.search(n)]
    # The activation right after a float layer stays float too (no Q/DQ between float layers).
    producers = {o: n.name for n in model.graph.node for o in n.output}
    chosen = set(excluded)
    excluded += [n.name for n in model.graph.node
                 if n.op_type in ACTIVATIONS and n.input and producers.get(n.input[0]) in chosen]
    return sorted(set(excluded))


def reroute_float_consumers(model: onnx.ModelProto, quantized: set[str], *, keep_quantized_outputs: bool = False) -> int:
    """Let every node that is not quantized read the float tensor instead of its Q/DQ copy.

    ONNX Runtime inserts one activation Q/DQ pair per tensor and points *all* consumers at
    the DequantizeLinear output, so RoiAlign would pool features rounded to int8 because the
    RPN conv next to it quantizes the same FPN map. TensorRT's explicit quantization (and
    ModelOpt) put Q/DQ only in front of the layers that run in INT8. Nodes named in
    ``quantized`` keep their Q/DQ inputs; Q/DQ pairs left without consumers are removed.
    With ``keep_quantized_outputs`` the outputs of quantized nodes are not rerouted: a float
    consumer keeps reading their DequantizeLinear, so the quantized layer's output feeds only
    its QuantizeLinear, the pattern ONNX Runtime fuses into an integer kernel
    (``FLOAT_CONSUMERS``). Returns the number of rerouted inputs.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    rerouted = 0
    for node in model.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
                continue
            source = producers.get(q.input[0])
            if keep_quantized_outputs and source is not None and source.name in quantized:
                continue
            node.input[i] = q.input[0]
            rerouted += 1
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for init in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(init)
    return rerouted


#: Histogram size for entropy/percentile calibration, as TensorRT's entropy calibrator uses (2048 bins
#: searched for the best 128-level threshold). ONNX Runtime's quantize_static gives its calibrator
#: 128 bins and no option to change that, and with 128 bins == 128 quantized levels the KL search
#: has a single candidate (the full range): "entropy" silently becomes min-max.
HIST_BINS = 2048
QUANT_LEVELS = 128


def calibrated_ranges(model: onnx.ModelProto, model_path: Path, reader: "ImageCalibrationReader",
                      opts: QuantizeOptions, workdir: Path) -> dict[str, tuple[float, float]]:
    """Activation ranges ``{tensor: (rmin, rmax)}`` from ONNX Runtime's own calibrators.

    ``model_path`` holds ``model`` saved (ONNX Runtime calibrates from a file). Same tensors as
    ``quantize_static`` calibrates (inputs and outputs of ``opts.op_types``),
    with a 2048-bin histogram for entropy/percentile. The input of a Clip/Relu with a single
    consumer takes the activation's output range, as ``quantize_static`` does, so the
    Conv -> Clip pair shares one scale and the activation folds away.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    extra: dict[str, object] = {"symmetric": True}
    if opts.method == "entropy":
        method = CalibrationMethod.Entropy
        extra.update(num_bins=HIST_BINS, num_quantized_bins=QUANT_LEVELS)
    elif opts.method == "percentile":
        method = CalibrationMethod.Percentile
        extra.update(num_bins=HIST_BINS, percentile=opts.percentile)
    else:
        method = CalibrationMethod.MinMax
    calibrator = create_calibrator(model_path, list(opts.op_types), str(workdir / "augmented.onnx"),
                                   calibrate_method=method, providers=["CPUExecutionProvider"], extra_options=extra)
    reader.rewind()
    calibrator.collect_data(reader)
    data = calibrator.compute_data()
    ranges = {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))  # scalars or [1]
              for name, td in data.data.items()}
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    for n in model.graph.node:
        if n.op_type in ("Clip", "Relu") and consumers.get(n.input[0]) == 1 and n.output[0] in ranges:
            ranges[n.input[0]] = ranges[n.output[0]]
    return ranges


def quantize_model(model: onnx.ModelProto, calib_batch: np.ndarray, opts: QuantizeOptions,
                   calib_info: dict[str, object] | None = None) -> QuantizeResult:
    """Quantize ``model`` to symmetric INT8 Q/DQ, calibrating on ``calib_batch`` [N,3,S,S].

    ``calib_info`` (e.g. the calibration data hash) is recorded in ``rfnet.quantization``.

    Returns the quantized model with its ``rfnet.precision`` set to ``int8`` and the
    quantization settings recorded in ``rfnet.quantization``.
    """
    import json

    if opts.method not in METHODS:
        raise UsageError(f"method must be one of {METHODS}, got {opts.method!r}")
    if opts.activations not in ("int8", "uint8"):
        raise UsageError(f"activations must be int8 or uint8, got {opts.activations!r}")
    if opts.float_consumers not in FLOAT_CONSUMERS:
        raise UsageError(f"float_consumers must be one of {FLOAT_CONSUMERS}, got {opts.float_consumers!r}")
    excluded = nodes_kept_float(model, opts)
    log.info("kept in float (besides every non-%s op): %s", "/".join(opts.op_types), excluded or "none")
    qmodel = _quantize_static(model, calib_batch, opts, excluded)
    quantized = {n.name for n in qmodel.graph.node if n.op_type in opts.op_types and n.name not in excluded}
    moved = reroute_float_consumers(qmodel, quantized, keep_quantized_outputs=opts.float_consumers == "dequantized")
    log.debug("rerouted %d float consumers away from Q/DQ copies", moved)
    # quantize_static does not reliably keep metadata_props: ours are written explicitly.
    how = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "method": opts.method,
           "activations": ("int8 symmetric" if opts.activations == "int8" else "uint8 asymmetric") + " per-tensor",
           "weights": "int8 symmetric per-channel",
           "outputs_quantized": opts.quantize_outputs, "float_consumers": opts.float_consumers,
           "min_int8_channels": opts.min_int8_channels, "target": opts.target, "histogram_bins": HIST_BINS if opts.method != "minmax" else None,
           "op_types": list(opts.op_types), "kept_float": excluded, "num_calibration_images": int(calib_batch.shape[0]),
           **(calib_info or {})}
    meta = derived_metadata(model_metadata(model), precision="int8",
                            extra={KEY_QUANTIZATION: json.dumps(how, sort_keys=True)})
    del qmodel.metadata_props[:]
    set_metadata(qmodel, {**get_metadata(model), **meta.to_strings()})
    onnx.checker.check_model(qmodel)
    return QuantizeResult(qmodel, excluded)


def _quantize_static(model: onnx.ModelProto, calib_batch: np.ndarray, opts: QuantizeOptions,
                     excluded: list[str]) -> onnx.ModelProto:
    """ONNX Runtime's ``quantize_static`` with the TensorRT-friendly settings of the module docstring."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name, batch = _input_batch(model)
    extra: dict[str, object] = {
        "ActivationSymmetric": opts.activations == "int8",
        "WeightSymmetric": True,
        "QuantizeBias": False,
        # Inputs-only placement on request. Either way reroute_float_consumers() below gives every
        # float consumer (RoiAlign, box decoding, softmax, NMS, ...) the unrounded tensor, so box
        # deltas, logits and pooled features never pass through int8.
        "OpTypesToExcludeOutputQuantization": [] if opts.quantize_outputs else list(opts.op_types),
        # "rerouted": one Q/DQ pair per quantized consumer (each with the tensor's calibrated scale),
        # so each float consumer's pair can be dropped alone. "dequantized": one QuantizeLinear per
        # tensor, the single consumer ONNX Runtime's QLinearConv fusion needs.
        "DedicatedQDQPair": opts.float_consumers == "rerouted",
        # No CalibMaxIntermediateOutputs: in onnxruntime 1.32 the MinMax calibrator *discards*
        # the batches collected when that limit is reached ("No data is collected").
    }
    with tempfile.TemporaryDirectory(prefix="rfnet_quant_") as tmp:
        src = Path(tmp) / "fp32.onnx"
        dst = Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        reader = ImageCalibrationReader(calib_batch, name, batch)
        if opts.method != "minmax":
            # Our own calibration with TensorRT's histogram size (see HIST_BINS); quantize_static
            # then takes these ranges as documented per-tensor overrides of its min-max pass.
            ranges = calibrated_ranges(model, src, reader, opts, Path(tmp))
            extra["TensorQuantOverrides"] = {
                t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()}
        reader.rewind()
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(opts.op_types),
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8 if opts.activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=extra,
            calibration_providers=["CPUExecutionProvider"],
        )
        return onnx.load(str(dst))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, type=Path, help="FP32 RF-Net ONNX model (from export_onnx.py)")
    p.add_argument("--calib-dir", required=True, type=Path,
                   help="calibration images (a folder, or a folder with images/); real fundus images are best")
    p.add_argument("--output", required=True, type=Path, help="INT8 Q/DQ ONNX model to write")
    p.add_argument("--method", choices=METHODS, default="minmax",
                   help="activation-range calibration (default: minmax; entropy = TensorRT's KL threshold search "
                        "on a 2048-bin histogram, percentile = --percentile of it)")
    p.add_argument("--num-images", type=int, default=64, help="calibration images to use (default: 64)")
    p.add_argument("--percentile", type=float, default=99.999, help="percentile for --method percentile")
    p.add_argument("--op-types", nargs="+", default=None,
                   help=f"op types that get Q/DQ (tensorrt: {' '.join(DEFAULT_OP_TYPES)}; onnxruntime: the same "
                        "without ConvTranspose)")
    p.add_argument("--float-mask-layers", type=int, default=2,
                   help="conv layers nearest to the masks output kept in float (default: 2; 0 quantizes all)")
    p.add_argument("--target", choices=sorted(TARGETS), default="tensorrt",
                   help="where the INT8 model runs: tensorrt (default; int8 activations, what TensorRT builds) or "
                        "onnxruntime (uint8 activations, integer kernels on ONNX Runtime's CPU provider; TensorRT "
                        "cannot build it). The options below override the target's settings")
    p.add_argument("--float-input-layers", type=int, default=None,
                   help=f"first conv layers from the image input kept in float (tensorrt: {DEFAULT_FLOAT_INPUT_LAYERS} "
                        "= the MobileNet stem and blocks 0-5; onnxruntime: 0)")
    p.add_argument("--exclude-nodes", nargs="*", default=[], help="extra node names to keep in float")
    p.add_argument("--exclude-pattern", default=None, help="regex: nodes whose name matches stay float")
    p.add_argument("--float-consumers", choices=FLOAT_CONSUMERS, default=None,
                   help="how float ops read a quantized layer's output: rerouted (tensorrt: the unrounded output) "
                        "or dequantized (onnxruntime: its DequantizeLinear, so the layer fuses into an integer kernel)")
    p.add_argument("--min-int8-channels", type=int, default=None,
                   help="conv-like layers with fewer output channels stay float (tensorrt: 0 = none; onnxruntime: 16)")
    p.add_argument("--inputs-only", action="store_true",
                   help="Q/DQ only on the inputs of quantized layers (ModelOpt-style); default also on outputs")
    ev = p.add_argument_group("evaluation (INT8 vs FP32 with ONNX Runtime on the CPU)")
    ev.add_argument("--eval-dir", type=Path, default=None,
                    help="evaluation images (masks/ beside images/ give ground-truth Dice); default: --holdout of "
                         "the calibration folder")
    ev.add_argument("--holdout", type=float, default=0.25,
                    help="without --eval-dir/--eval-dataset: the share of the calibration images held out of the "
                         "calibration and judged instead (a k-fold split by name, k = 1/holdout; default 0.25)")
    ev.add_argument("--eval-data", action="append", default=None, metavar="SPEC",
                    help="a dataset to evaluate on, repeatable, as rfnet train --data takes it (kind=K,root=PATH"
                         "[,split=S][,OPTION=V], e.g. partition=randomly for RIM-ONE DL): each is gated on its own, "
                         "so INT8 cannot trade one camera's masks for another's; with --eval-fold, its held-out fold")
    ev.add_argument("--eval-dataset", default=None, help="evaluate on a dataset instead (rfnet.data.load_dataset "
                    "name: folder, drishti-gs, refuge, rim-one-dl) with --eval-root")
    ev.add_argument("--eval-root", type=Path, default=None, help="root of --eval-dataset")
    ev.add_argument("--eval-split", default=None, help="split of --eval-dataset (default: the loader's)")
    ev.add_argument("--eval-fold", type=int, default=None,
                    help="evaluate on this held-out fold of --folds (by name, rfnet.data.splits.kfold_split); "
                         "its images are also left out of the calibration")
    ev.add_argument("--folds", type=int, default=5, help="number of folds for --eval-fold (default 5)")
    ev.add_argument("--fold-seed", type=int, default=0, help="seed of the fold split (default 0)")
    ev.add_argument("--num-eval", type=int, default=16, help="evaluation images at most (default: 16)")
    ev.add_argument("--num-synthetic", type=int, default=0,
                    help="synthetic images (rfnet.data.synthetic) also evaluated, for information: they do not "
                         "gate (default: 0)")
    ev.add_argument("--max-dice-drop", type=float, default=0.01,
                    help="fail (exit 1) when INT8 loses more Dice than this vs FP32: vs ground truth when "
                         "known, else 1 - INT8/FP32 mask agreement (default: 0.01)")
    ev.add_argument("--fps-iters", type=int, default=10, help="timed runs per model for the FPS (default 10)")
    ev.add_argument("--no-eval", action="store_true", help="skip the INT8 vs FP32 evaluation")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _calibration_set(args: argparse.Namespace, input_cfg: InputConfig, batch: int,
                     leave_out: set[str]) -> CalibrationSet:
    """The TensorRT engineer's calibration loader (same preprocessing, same data hash)."""
    src = args.calib_dir / "images" if (args.calib_dir / "images").is_dir() else args.calib_dir
    cset = make_calibration_set(src, input_cfg, batch)
    paths = [p for p in cset.paths if p.stem not in leave_out]
    if leave_out:
        log.info("left %d held-out evaluation images out of the calibration", len(cset.paths) - len(paths))
    paths = paths[: args.num_images]
    if len(paths) < batch:
        raise CalibrationDataError(f"{args.calib_dir}: not enough calibration images left ({len(paths)})")
    return CalibrationSet(paths=tuple(paths), input_cfg=input_cfg, batch_size=batch)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(args.verbose)
    try:
        check_can_write(args.output, args.overwrite)
        model, meta = load_fp32_model(args.onnx)
        gate = GateOptions.from_args(args)
        sets = [] if args.no_eval else eval_sets(gate)
        leave_out = {it.name for es in sets if es.held_out for it in es.items}
        _, model_batch = _input_batch(model)
        cset = _calibration_set(args, meta.input_config(), model_batch or 1, leave_out)
        log.info("calibrating on %d images from %s (%s)", cset.num_images, args.calib_dir, args.method)
        opts = QuantizeOptions.for_target(
            args.target, method=args.method, op_types=tuple(args.op_types) if args.op_types else None,
            float_mask_layers=args.float_mask_layers,
            float_input_layers=args.float_input_layers, exclude_nodes=tuple(args.exclude_nodes),
            exclude_pattern=args.exclude_pattern, percentile=args.percentile, quantize_outputs=not args.inputs_only,
            float_consumers=args.float_consumers, min_int8_channels=args.min_int8_channels)
        batch = np.concatenate(list(cset.batches()), axis=0)
        result = quantize_model(model, batch, opts, {"calibration_data_sha256": cset.data_sha256()})
    except (RFNetError, OSError) as exc:  # output, model, calibration / evaluation images, options
        log.error("%s: %s", args.onnx, exc)
        return ExitCode.USAGE
    atomic_write_bytes(args.output, result.model.SerializeToString())
    log.info("wrote %s", args.output)
    print("---- what TensorRT would get (Polygraphy + static checks) ----")
    print(onnx_inspect.tensorrt_view(result.model))
    return ExitCode.OK if args.no_eval else evaluate_all(gate, sets)


if __name__ == "__main__":
    sys.exit(main())
