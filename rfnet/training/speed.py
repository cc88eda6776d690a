"""Training speed per preset and thread count, with the time split per stage.

``python -m rfnet.training.speed --preset light --preset paper --threads 1 --threads 2``
prints trained images/s and where an iteration's time goes: data (decode once, then
augmentation and collation per iteration), backbone + FPN, RPN, RoI sampling, box pooling,
box head, mask feature pooling, mask head, mask losses, backward, optimizer step. It runs
real training iterations (SGD, the trainer's own loss) on the Drishti-GS images when
``--dataset/--data-root`` are given, else on generated fundus images, so it works anywhere.

Stage times come from forward hooks on the model's modules and from timing the few
functions they call (patched only inside :func:`measure`), with wall clocks: on a CPU the
ops run synchronously, so the split is exact up to the hooks' own microseconds.
``--options`` names the variants measured, in one run and in this order (default
``before,fp32,bf16``): ``before`` is the trainer as it was (torchvision's RoIAlign backward,
every image decoded every time it is used), ``fp32`` today's trainer (matrix-product RoIAlign,
decoded images cached), ``bf16`` the same with bfloat16 autocast, ``channels_last`` and
``compile`` (``torch.compile`` of backbone and FPN) on top of bf16, ``fp32_channels_last``
channels-last without bf16 (for CPUs without native bfloat16). A fresh model has few
positive RoIs, so the mask branch is cheap; ``--checkpoint`` starts from trained weights
(e.g. a run's ``checkpoint_last.pt``) to time the iterations of a model that finds discs.
``--profile N`` also runs ``torch.profiler`` over each measurement's iterations and prints its N
most expensive operators by self time, split by input shape: which layer a stage's time is in.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.config import PRESETS, ModelConfig, get_preset
from rfnet.data import FundusDataset, load_dataset
from rfnet.data.torch_dataset import FundusTorchDataset
from rfnet.errors import RFNetError
from rfnet.training.loop import native_bf16
from rfnet.training.overrides import apply_overrides

log = logging.getLogger(__name__)

#: Stages in print order.
STAGES = ("data", "backbone+fpn", "rpn", "roi_sampling", "box_pooling", "box_head", "mask_pooling", "mask_head",
          "mask_loss", "forward_other", "backward", "optimizer")


@dataclass
class SpeedResult:
    """One (preset, threads, options) measurement: per-iteration stage times in seconds."""

    preset: str
    threads: int
    options: str
    batch_size: int
    iterations: int
    decode_s_per_image: float
    stages: dict[str, float] = field(default_factory=dict)
    #: ``--profile``: torch.profiler's operator table over the timed iterations ("" if not asked)
    profile: str = ""

    @property
    def iteration_s(self) -> float:
        return sum(self.stages.values())

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.iteration_s if self.iteration_s > 0 else float("nan")


class _Clock:
    """Accumulates wall time per stage; nested spans are subtracted from their parent."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self._stack: list[tuple[str, float, float]] = []  # name, start, time of children

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        self._stack.append((name, time.perf_counter(), 0.0))
        try:
            yield
        finally:
            n, t0, children = self._stack.pop()
            dt = time.perf_counter() - t0
            self.total[n] += dt - children
            if self._stack:
                pn, pt, pc = self._stack[-1]
                self._stack[-1] = (pn, pt, pc + dt)

    def wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.span(name):
                return fn(*args, **kwargs)
        return timed


def _hook_module(clock: _Clock, module: torch.nn.Module, name: str) -> list[Any]:
    """Time ``module``'s forward as stage ``name`` (pre/post forward hooks)."""
    spans: list[contextlib.AbstractContextManager[None]] = []

    def pre(_m: Any, _a: Any) -> None:
        cm = clock.span(name)
        cm.__enter__()
        spans.append(cm)

    def post(_m: Any, _a: Any, _o: Any) -> None:
        spans.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def _patches(clock: _Clock) -> contextlib.ExitStack:
    import rfnet.model.rfnet as top
    import rfnet.model.roi_heads as heads

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(heads, "level_select", clock.wrap("box_pooling", heads.level_select)))
    stack.enter_context(mock.patch.object(top, "mask_targets", clock.wrap("mask_loss", top.mask_targets)))
    stack.enter_context(mock.patch.object(top, "mask_loss", clock.wrap("mask_loss", top.mask_loss)))
    stack.enter_context(mock.patch.object(heads.RoIHeads, "loss", clock.wrap("roi_sampling", heads.RoIHeads.loss)))
    return stack


def _batches(tds: FundusTorchDataset, batch_size: int, n: int, warmup: int, clock: _Clock) -> Iterator[Any]:
    for it in range(n):
        if it == warmup:  # the timed iterations start with this batch's data
            clock.total.clear()
        with clock.span("data"):
            items = [tds[(it * batch_size + j) % len(tds)] for j in range(batch_size)]
            batch = tds.collate(items)
        yield batch


#: Training variants: name -> (bf16, channels_last, compile, as before).
VARIANTS = {
    "before": (False, False, False, True),
    "fp32": (False, False, False, False),
    "bf16": (True, False, False, False),
    "channels_last": (True, True, False, False),
    "compile": (True, False, True, False),
    "fp32_channels_last": (False, True, False, False),
}


def _torchvision_pooling() -> contextlib.AbstractContextManager[Any]:
    """The trainer before rfnet/model/roi_align_mm.py: torchvision's roi_align everywhere."""
    import rfnet.model.pooling as pooling
    from torchvision.ops import roi_align

    def tv(feat: torch.Tensor, rois: torch.Tensor, size: int, scale: float, sr: int) -> torch.Tensor:
        return roi_align(feat, rois, (size, size), spatial_scale=scale, sampling_ratio=sr, aligned=True)

    return mock.patch.object(pooling, "roi_align_mm", tv)


def measure(cfg: ModelConfig, dataset: FundusDataset, *, threads: int, iterations: int, warmup: int = 2,
            variant: str = "fp32", seed: int = 0, state: dict[str, torch.Tensor] | None = None,
            profile_rows: int = 0) -> SpeedResult:
    """Run ``warmup + iterations`` training iterations of ``cfg`` (variant of :data:`VARIANTS`,
    weights ``state`` or fresh) and time their stages; ``profile_rows`` > 0 also profiles the
    timed iterations (:attr:`SpeedResult.profile`: the operator table)."""
    from rfnet.model import build_model
    from rfnet.training.loop import prepare_model

    bf16, channels_last, compile, before = VARIANTS[variant]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tds = FundusTorchDataset(dataset, cfg, train=True, cache=not before)
    b = cfg.train.batch_size
    t0 = time.perf_counter()
    decoded = min(len(tds), b * (warmup + iterations))
    for i in range(decoded):
        dataset[i]  # the decode alone, timed separately (the cache, when on, fills during warm-up)
    decode = (time.perf_counter() - t0) / max(1, decoded)
    model = build_model(cfg)
    if state is not None:
        model.load_state_dict(state)
    model = prepare_model(model, channels_last=channels_last, compile=compile)
    with contextlib.ExitStack() as stack:
        if before:
            stack.enter_context(_torchvision_pooling())
        prof = stack.enter_context(_profiler(warmup)) if profile_rows > 0 else None
        stages = _timed_iterations(model, tds, b, warmup, iterations, bf16, channels_last,
                                   step=prof.step if prof is not None else None)
    table = _operator_table(prof, profile_rows) if prof is not None else ""
    return SpeedResult(cfg.name, threads, variant, b, iterations, decode, stages, table)


def _profiler(warmup: int) -> Any:
    """``torch.profiler`` that records only the timed iterations (stepped once per iteration): it
    waits through the warm-up ones but the last, which is the profiler's own warm-up."""
    from torch.profiler import ProfilerActivity, profile, schedule

    return profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                   schedule=schedule(wait=max(0, warmup - 1), warmup=min(1, warmup), active=1_000_000))


def _operator_table(prof: Any, rows: int) -> str:
    """The ``rows`` operators with the most self time, per input shape, summed over the timed
    iterations."""
    return str(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40, max_shapes_column_width=100))


def _timed_iterations(model: torch.nn.Module, tds: FundusTorchDataset, b: int, warmup: int, iterations: int,
                      bf16: bool, channels_last: bool, step: Any = None) -> dict[str, float]:
    from rfnet.training.loop import autocast_context

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    clock = _Clock()
    hooks = [h for m, n in ((model.backbone, "backbone+fpn"), (model.fpn, "backbone+fpn"), (model.rpn, "rpn"),
                            (model.roi_heads.head, "box_head"), (model.mask_pooler, "mask_pooling"),
                            (model.mask_head, "mask_head")) for h in _hook_module(clock, m, n)]
    try:
        with _patches(clock):
            for batch in _batches(tds, b, warmup + iterations, warmup, clock):
                images = batch.images.contiguous(memory_format=torch.channels_last) if channels_last else batch.images
                with clock.span("forward_other"), autocast_context(bf16):
                    losses = model(images, batch.targets)
                    loss = sum(losses.values())
                with clock.span("backward"):
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                with clock.span("optimizer"):
                    opt.step()
                if step is not None:  # the profiler's iteration counter (after the clock's spans)
                    step()
    finally:
        for h in hooks:
            h.remove()
    return {s: clock.total.get(s, 0.0) / iterations for s in STAGES}


def format_results(results: list[SpeedResult]) -> str:
    """A text table: one column per measurement, one row per stage (ms per iteration and %)."""
    head = ["stage"] + [f"{r.preset} {r.threads}t {r.options}" for r in results]
    rows = [head]
    for s in STAGES:
        rows.append([s] + [f"{r.stages[s] * 1e3:.0f} ms ({r.stages[s] / r.iteration_s:.0%})" for r in results])
    rows.append(["iteration"] + [f"{r.iteration_s * 1e3:.0f} ms" for r in results])
    rows.append(["images/s"] + [f"{r.images_per_s:.2f}" for r in results])
    rows.append(["decode once/image"] + [f"{r.decode_s_per_image * 1e3:.0f} ms" for r in results])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def _dataset(args: argparse.Namespace, tmp: Path) -> FundusDataset:
    if args.data_root:
        return load_dataset(args.dataset, args.data_root)
    from rfnet.data.synthetic import generate_folder

    generate_folder(tmp / "syn", n=8, seed=0)
    return load_dataset("folder", tmp / "syn")


def _configs(args: argparse.Namespace) -> list[tuple[ModelConfig, dict[str, torch.Tensor] | None]]:
    """(config, weights) to measure: the checkpoint's, or each preset's with --set applied."""
    if args.checkpoint:
        from rfnet.checkpoint import load_checkpoint

        ckpt = load_checkpoint(args.checkpoint)
        return [(apply_overrides(ckpt.config, args.set), ckpt.state_dict)]
    return [(apply_overrides(get_preset(p), args.set), None) for p in args.preset or ["light"]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rfnet.training.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", action="append", choices=sorted(PRESETS), help="repeatable (default: light)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[], help="config override, as rfnet.train")
    p.add_argument("--threads", action="append", type=int, help="repeatable (default: 1 and 2)")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations (after 2 warm-up ones)")
    p.add_argument("--dataset", default="drishti-gs", help="dataset kind for --data-root (default drishti-gs)")
    p.add_argument("--data-root", help="real images (default: 8 generated ones)")
    p.add_argument("--options", default="before,fp32,bf16",
                   help=f"comma-separated variants, measured in this order (of {', '.join(VARIANTS)})")
    p.add_argument("--checkpoint", help="start from these weights (a trained model: realistic RoI counts)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile the timed iterations (torch.profiler) and print the N most expensive "
                        "operators by self time, per input shape (default 0: off)")
    p.add_argument("--json", help="also write the results here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ds = _dataset(args, Path(tmp))
        except (RFNetError, OSError) as exc:  # a bad data root or --set
            log.error("%s", exc)
            return ExitCode.USAGE
        variants = [v.strip() for v in args.options.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            log.error("--options: unknown variant(s) %s; choose from %s", unknown, ", ".join(VARIANTS))
            return ExitCode.USAGE
        if any(VARIANTS[v][0] for v in variants) and not native_bf16("cpu"):
            log.warning("this CPU has no native bfloat16 (AVX512_BF16 or AMX): the bf16 variants measure "
                        "oneDNN's emulation; rfnet.train trains such presets in float32 here")
        for cfg, state in _configs(args):
            for threads in args.threads or [1, 2]:
                for variant in variants:
                    log.info("measuring %s, %d thread(s), %s", cfg.name, threads, variant)
                    results.append(measure(cfg, ds, threads=threads, iterations=args.iterations, variant=variant,
                                           state=state, profile_rows=args.profile))
    print(format_results(results))
    for r in results:
        if r.profile:
            print(f"\n{r.preset} {r.threads}t {r.options}: operators by self time over {r.iterations} iteration(s)")
            print(r.profile)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=2) + "\n")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
