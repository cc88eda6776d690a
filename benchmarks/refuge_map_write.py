"""Time to write one REFUGE map (0 cup, 128 rim, 255 background) as a plain and as an RLE8 BMP.

``rfnet infer`` writes a REFUGE map at the photograph's size for every gradable image. This
measures, in one process and alternating rounds (this machine's speed drifts), the milliseconds per
map of the two ways to write it: a plain 8-bit BMP by OpenCV (what ``rfnet infer`` wrote before)
and :func:`rfnet.common.imageio.write_image`, which run-length encodes a grey BMP (what it writes now),
each written atomically (temporary file, fsync, rename) as the runtime does. The maps are the
``*.bmp`` files of a folder (an ``rfnet infer`` run's ``refuge/``) or generated: an elliptical disc
and cup on a ``--size`` background. Exit status: 0 measured, 2 bad arguments or no map.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.fileio import atomic_write_bytes
from rfnet.common.imageio import write_image
from rfnet.common.metrics import to_refuge_seg

log = logging.getLogger(__name__)


def generated_maps(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` REFUGE maps uint8 [height, width]: a disc of about 20 % of the short side, a cup inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    maps = []
    for _ in range(n):
        cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
        r = rng.uniform(0.08, 0.12) * min(height, width)
        disc = ((yy - cy) / r) ** 2 + ((xx - cx) / (0.9 * r)) ** 2 < 1
        cup = ((yy - cy) / (0.6 * r)) ** 2 + ((xx - cx) / (0.5 * r)) ** 2 < 1
        maps.append(to_refuge_seg(disc, cup))
    return maps


def time_writes(maps: list[np.ndarray], folder: Path, rounds: int) -> dict[str, list[float]]:
    """ms per map of each way, per round (the two ways alternate within every round)."""
    ways = {"plain (OpenCV)": lambda p, m: atomic_write_bytes(p, cv2.imencode(".bmp", m)[1].tobytes()),
            "RLE8": write_image}  # write_image: what rfnet infer and rfnet evaluate call
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for i, (name, write) in enumerate(ways.items()):
            t0 = time.perf_counter()
            for j, m in enumerate(maps):
                write(folder / f"{i}_{j}.bmp", m)
            times[name].append((time.perf_counter() - t0) / len(maps) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/refuge_map_write.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--maps", type=Path, help="folder of REFUGE maps (*.bmp), e.g. an rfnet infer run's refuge/")
    p.add_argument("--count", type=int, default=50, help="generated maps when --maps is not given (default 50)")
    p.add_argument("--size", type=int, nargs=2, default=(1750, 2048), metavar=("H", "W"),
                   help="generated maps' size (default 1750 2048, a Drishti-GS photograph)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if args.rounds < 1 or args.count < 1 or min(args.size) < 1:
        p.error("--rounds, --count and --size must be positive")
    if args.maps is not None:
        files = sorted(args.maps.glob("*.bmp"))
        maps = [m for m in (cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files) if m is not None]
        if not maps:
            log.error("%s: no readable .bmp map", args.maps)
            return ExitCode.USAGE
    else:
        maps = generated_maps(args.count, *args.size)
    with tempfile.TemporaryDirectory(prefix="rfnet_bmp_") as tmp:
        times = time_writes(maps, Path(tmp), args.rounds)
        sizes = {"plain (OpenCV)": (Path(tmp) / "0_0.bmp").stat().st_size, "RLE8": (Path(tmp) / "1_0.bmp").stat().st_size}
    h, w = maps[0].shape
    print(f"{len(maps)} maps of {h} x {w}, {args.rounds} alternating rounds, ms per map:")
    for name, t in times.items():
        print(f"  {name:15s} median {statistics.median(t):6.2f}  rounds {' '.join(f'{x:.2f}' for x in t)}  "
              f"file {sizes[name] / 1e3:.0f} kB")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
