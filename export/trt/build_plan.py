"""What one engine build will do, decided before TensorRT is imported (torch-free, TensorRT-free).

``export/build.py`` turns its arguments (plus an optional ``engines/targets/*.toml`` preset)
into a :class:`BuildPlan`; ``export/trt/trt_builder.py`` executes it. Keeping the plan plain data
lets the argument handling, the shape/profile rules and the equivalent ``trtexec`` command be
tested without a GPU.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from rfnet.export.calibration import CalibrationSet
from rfnet.export.errors import ExportError
from rfnet.export.onnx_tools.graph_checks import GraphPrecision

Shape = tuple[int, ...]


class PlanError(ExportError, ValueError):
    """Inconsistent build options; the message names the option and the fix."""


def parse_shape(text: str, input_name: str) -> Shape:
    """``"1x3x512x512"`` or ``"image:1x3x512x512"`` -> ``(1, 3, 512, 512)``."""
    spec = text.strip()
    if ":" in spec:
        name, spec = spec.rsplit(":", 1)
        if name.strip("'\"") != input_name:
            raise PlanError(f"shape {text!r} names input {name!r}, but the model's input is {input_name!r}")
    if not re.fullmatch(r"\d+(x\d+)*", spec):
        raise PlanError(f"shape {text!r} must look like 1x3x512x512 (optionally prefixed by '{input_name}:')")
    dims = tuple(int(d) for d in spec.split("x"))
    if any(d < 1 for d in dims):
        raise PlanError(f"shape {text!r}: every dimension must be >= 1")
    return dims


def check_profile(
    onnx_dims: list[int | None], min_shape: Shape, opt_shape: Shape, max_shape: Shape, input_name: str
) -> None:
    """Profile shapes must have the input's rank, equal its static dims and satisfy min <= opt <= max.

    ``onnx_dims`` is the ONNX input shape with ``None`` for dynamic dimensions.
    """
    for label, shape in (("min", min_shape), ("opt", opt_shape), ("max", max_shape)):
        if len(shape) != len(onnx_dims):
            raise PlanError(
                f"--{label} shape {fmt_shape(shape)} has rank {len(shape)}, input {input_name!r} has rank {len(onnx_dims)}"
            )
        for i, (d, o) in enumerate(zip(shape, onnx_dims)):
            if o is not None and d != o:
                raise PlanError(
                    f"--{label} shape {fmt_shape(shape)}: dimension {i} is {d}, but the ONNX input "
                    f"{input_name!r} fixes it to {o}"
                )
    for i, (a, b, c) in enumerate(zip(min_shape, opt_shape, max_shape)):
        if not a <= b <= c:
            raise PlanError(f"profile dimension {i} needs min <= opt <= max, got {a} / {b} / {c}")


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


@dataclass
class BuildPlan:
    """Every decision of one build; paths as given by the user."""

    onnx_path: Path
    output: Path
    precision: str  # fp32 | fp16 | int8
    input_name: str
    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape
    graph: GraphPrecision
    roialign_nodes: list[str] = field(default_factory=list)
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None
    calib_set: CalibrationSet | None = None
    calib_cache: Path | None = None
    calib_method: str = "minmax"  # implicit INT8 calibrator: minmax | entropy (see calibrator_algorithm)
    target: str | None = None
    expected_compute_capability: str | None = None
    verbose: bool = False
    #: The ONNX input's dimensions (None = dynamic); decides whether trtexec takes shapes.
    onnx_input_dims: list[int | None] | None = None
    #: ONNX nodes outside the FP16 trunk (``rfnet.export.fp16.fp16_nodes``): kept FP32 in weakly typed builds.
    fp32_nodes: list[str] = field(default_factory=list)
    #: Every named ONNX node (a layer named after one of them is that node's, not a renamed clash).
    node_names: list[str] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        return not (self.min_shape == self.opt_shape == self.max_shape)

    @property
    def static_input(self) -> bool:
        """The ONNX input has no dynamic dimension (trtexec then refuses explicit shapes)."""
        dims = self.onnx_input_dims
        return dims is not None and all(d is not None for d in dims)

    @property
    def calibration_missing(self) -> bool:
        """Implicit INT8 with neither calibration images nor an existing cache."""
        return self.implicit_int8 and self.calib_set is None and not (self.calib_cache and self.calib_cache.is_file())

    @property
    def implicit_int8(self) -> bool:
        """INT8 by calibration (weakly typed builds only): no Q/DQ nodes in the graph."""
        return self.precision == "int8" and not self.graph.is_qdq

    @property
    def calibrator_algorithm(self) -> str:
        """``minmax`` or ``entropy2``: the TensorRT calibrator the implicit INT8 build uses.

        Min-max by default: on the Drishti-trained light model the KL-entropy threshold search
        (2048-bin histogram, the algorithm of IInt8EntropyCalibrator2, run through ONNX Runtime)
        clipped activations far harder than min-max (docs/lab/results-log.md, "INT8"). DLA accepts only
        IInt8EntropyCalibrator2, so a DLA build uses it.
        """
        return "entropy2" if self.dla_core is not None or self.calib_method == "entropy" else "minmax"

    def profiles_json(self) -> dict[str, dict[str, list[int]]]:
        return {
            self.input_name: {
                "min": list(self.min_shape),
                "opt": list(self.opt_shape),
                "max": list(self.max_shape),
            }
        }


def trtexec_command(plan: BuildPlan, *, strongly_typed: bool) -> str:
    """The ``trtexec`` command line that builds the same engine (TensorRT 8.6 / 10.x / 11.x syntax).

    Shapes only for an ONNX input with dynamic dimensions (trtexec refuses ``--minShapes`` & co.
    for a static model: "Static model does not take explicit shapes"). ``--calib`` only when
    the cache exists (trtexec cannot calibrate from images; see :func:`trtexec_notes`).
    ``--memPoolSize`` gets a plain MiB number: 8.6 accepts only that, 10.x also takes suffixes.
    """
    args = ["trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={plan.output}"]
    if strongly_typed:
        args.append("--stronglyTyped")
    elif plan.precision == "fp16":
        args.append("--fp16")
    elif plan.precision == "int8":
        args += ["--int8", "--fp16"]  # FP16 fallback for layers without INT8 kernels
    n = plan.input_name
    if not plan.static_input:
        args += [
            f"--minShapes={n}:{fmt_shape(plan.min_shape)}",
            f"--optShapes={n}:{fmt_shape(plan.opt_shape)}",
            f"--maxShapes={n}:{fmt_shape(plan.max_shape)}",
        ]
    if plan.workspace_bytes:
        args.append(f"--memPoolSize=workspace:{max(1, plan.workspace_bytes // (1 << 20))}")
    if plan.timing_cache is not None:
        args.append(f"--timingCacheFile={plan.timing_cache}")
    if plan.dla_core is not None:
        args += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    if _trtexec_reads_cache(plan, strongly_typed) and plan.calib_cache is not None and plan.calib_cache.is_file():
        args.append(f"--calib={plan.calib_cache}")  # trtexec reads a cache; it cannot calibrate from images
    return " ".join(shlex.quote(a) for a in args)


def _trtexec_reads_cache(plan: BuildPlan, strongly_typed: bool) -> bool:
    """trtexec's ``--calib`` feeds its own IInt8EntropyCalibrator2 (trtexec sampleEngines.cpp,
    TensorRT 8.6 / 10.x), which rejects a cache another algorithm wrote: only entropy2 caches fit."""
    return plan.implicit_int8 and not strongly_typed and plan.calibrator_algorithm == "entropy2"


def trtexec_notes(plan: BuildPlan, *, strongly_typed: bool) -> list[str]:
    """What the printed trtexec line cannot do by itself (printed under it)."""
    if plan.implicit_int8 and not strongly_typed and not _trtexec_reads_cache(plan, strongly_typed):
        return [f"no --calib: the calibration cache {plan.calib_cache} is {plan.calibrator_algorithm}'s, and trtexec "
                "calibrates with IInt8EntropyCalibrator2, which refuses it and falls back to placeholder INT8 scales; "
                "build with export/build.py, or calibrate with --calib-method entropy to get a cache trtexec reads"]
    if plan.implicit_int8 and not strongly_typed and plan.calib_cache is not None and not plan.calib_cache.is_file():
        return [f"the calibration cache {plan.calib_cache} does not exist yet: trtexec cannot calibrate from images "
                "(without --calib it uses placeholder INT8 scales); build once with export/build.py --calib-dir "
                f"to write it, then add --calib={plan.calib_cache}"]
    return []
