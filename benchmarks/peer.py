"""A peer detector on the same images and threads, for scale: torchvision's
``fasterrcnn_mobilenet_v3_large_fpn`` (a MobileNet-v3 + FPN Faster R-CNN, boxes only, no masks).

    python benchmarks/peer.py --images /path/to/Drishti-GS1_files/Training/Images --threads 2 \
        [--limit N] [--warmup 2] [--json peer.json]

Each image: decode (``rfnet.common.imageio.read_image``) -> float tensor -> the model's own
transform (resize to 800 px on the short side, at most 1333) and detection, batch 1, one after
the other: the same "end to end" as ``benchmarks/bench.py``'s sequential pass, without masks or
CDRs. The weights are random (``weights=None``, ``weights_backbone=None``): detection time of a
Faster R-CNN hardly depends on them (NMS sees at most its fixed number of proposals), so the
figure is a timing, nothing about accuracy. Needs PyTorch and torchvision (``.[train]``).
Exit status: 0 measured, 2 bad arguments or no images (``rfnet.common.cli.ExitCode``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.benchmarks.measure import PAPER_FPS, latency_stats
from rfnet.common.cli import ExitCode, start
from rfnet.common.imageio import ImageReadError, list_images, read_image

log = logging.getLogger("rfnet.benchmarks.peer")

MODEL_NAME = "fasterrcnn_mobilenet_v3_large_fpn"


def time_peer(paths: list[Path], threads: int, warmup: int) -> dict[str, Any]:
    """Sequential decode + detection over ``paths`` (after ``warmup`` untimed images): latency
    stats in ms and images/s."""
    import torch
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None).eval()

    def one(path: Path) -> None:
        image = read_image(path)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        with torch.inference_mode():
            model([x])

    for p in paths[:warmup]:
        one(p)
    ms: list[float] = []
    t_all = time.perf_counter()
    for p in paths:
        t0 = time.perf_counter()
        one(p)
        ms.append((time.perf_counter() - t0) * 1e3)
    wall = time.perf_counter() - t_all
    return {"model": MODEL_NAME, "weights": None, "threads": threads, "images": len(paths), "warmup_images": warmup,
            "latency_ms": latency_stats(ms), "images_per_s": len(paths) / wall if wall > 0 else None,
            "paper_fps": PAPER_FPS, "torch": torch.__version__,
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/peer.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", required=True, help="an image folder, a quoted glob, or one file")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--warmup", type=int, default=2, help="untimed images first")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = start(build_parser(), argv)
    if isinstance(args, int):  # --help, or bad arguments
        return args
    if args.threads < 1 or args.warmup < 0 or (args.limit is not None and args.limit < 1):
        print("error: need --threads >= 1, --warmup >= 0 and --limit >= 1", file=sys.stderr)
        return ExitCode.USAGE
    try:
        paths = list_images(args.images)[: args.limit]
    except (OSError, ValueError) as exc:
        print(f"error: {args.images}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if not paths:
        print(f"error: {args.images}: no images found", file=sys.stderr)
        return ExitCode.USAGE
    try:
        result = time_peer(paths, args.threads, args.warmup)
    except ImportError as exc:
        print(f"error: needs PyTorch and torchvision (pip install '.[train]'): {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except ImageReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    lat = result["latency_ms"]
    print(f"{MODEL_NAME} (random weights), {result['images']} images, {args.threads} threads: "
          f"{result['images_per_s']:.2f} images/s end to end, p50 {lat['p50']:.0f} ms (paper's RF-Net: {PAPER_FPS} FPS)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
