"""Print parameter count and GFLOPs of RF-Net presets.

GFLOPs are measured with ``torch.utils.flop_counter.FlopCounterMode`` on the eval forward of
one image at the preset's input size (its ``input.size``): 2 FLOPs per multiply-add, counting
convolutions, transposed convolutions and matrix products (the bulk of the work). RoIAlign,
NMS, top-k and elementwise ops are not counted. The mask branch always runs on K =
detections_per_img RoIs, so the count does not depend on the (random) weights.

Usage: ``python -m rfnet.summary [--preset light] [--size 512] [--per-module] [--set KEY=VALUE]``
(``--set`` as in ``rfnet.train``: the size and FLOPs of a variant before training it).
"""
from __future__ import annotations

import argparse
import logging

import torch
from torch.utils.flop_counter import FlopCounterMode

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.config import PRESETS, get_preset
from rfnet.errors import UsageError
from rfnet.training.overrides import apply_overrides

log = logging.getLogger(__name__)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(preset: str, size: int | None = None, overrides: tuple[str, ...] = ()) -> dict[str, object]:
    """``{"preset", "input_size", "params", "gflops", "per_module": {name: gflops}}`` for one
    preset with the ``--set`` style ``overrides`` applied (``UsageError`` for a bad one)."""
    from rfnet.model import build_model

    cfg = apply_overrides(get_preset(preset), overrides)
    size = size or cfg.input.size
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    counter = FlopCounterMode(display=False, depth=3)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size))
    counts = counter.get_flop_counts()
    # Collapse nested names onto the top-level submodules (the outermost name holds the total).
    per_module: dict[str, float] = {}
    for name, ops in counts.items():
        parts = name.split(".")
        if name == "Global" or len(parts) < 2:
            continue
        key = parts[1]
        per_module[key] = max(per_module.get(key, 0.0), sum(ops.values()) / 1e9)
    return {
        "preset": preset,
        "input_size": size,
        "params": count_parameters(model),
        "gflops": counter.get_total_flops() / 1e9,
        "per_module": per_module,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rfnet.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append",
                        help="preset to summarise (repeatable; default: all)")
    parser.add_argument("--size", type=int, default=None, help="input size (default: the preset's input.size)")
    parser.add_argument("--per-module", action="store_true", help="also print GFLOPs per top-level module")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help="config override applied to every preset, as rfnet.train (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.size is not None and (args.size <= 0 or args.size % 32):
        parser.error(f"--size must be a positive multiple of 32, got {args.size}")
    print(f"{'preset':<8} {'input':>7} {'params':>12} {'GFLOPs':>9}")
    for name in args.preset or sorted(PRESETS):
        try:
            r = measure(name, args.size, tuple(args.set))
        except UsageError as exc:
            log.error("%s", exc)
            return ExitCode.USAGE
        print(f"{r['preset']:<8} {r['input_size']:>4}px {r['params']:>12,} {r['gflops']:>9.2f}")
        if args.per_module:
            for mod, g in sorted(r["per_module"].items()):  # type: ignore[attr-defined]
                print(f"    {mod:<28} {g:>9.2f}")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
