"""Load test of the Triton server: throughput and latency under C concurrent clients, and every
answer checked against runtime/infer.py's for the same image (a benchmark, not a test).

    python benchmarks/serve_load.py --model model.onnx --images 'fundus/*.jpg' --concurrency 4 --requests 200

1. runtime/infer.py (in this process, batch 1) segments the images once: the reference answers
   (results.csv text and mask PNGs) and the single-process throughput;
2. ``python -m rfnet.runtime.serve`` starts in a subprocess on 127.0.0.1 (free ports) and is polled
   until ``/v2/models/rfnet/ready`` (``/v2/health/ready`` answers 200 before PyTriton loads the model);
3. ``--concurrency`` threads, one Triton client each, send ``--requests`` requests (one image
   each, cycling through the images) over ``--protocol``; the run is also bounded by ``--time-limit``;
4. the server gets SIGTERM and must exit 0.

Reported: requests sent / answered / lost (no answer: a failed request or not sent in time),
item errors, answers different from the reference (any result field's results.csv text, or
either mask's PNG bytes), throughput (answers / wall time), latency p50 / p95 / p99 / max per
request, the batches Triton formed (``nv_inference_count`` / ``nv_inference_exec_count``).
Needs the ``[serve]`` extra. Exit status: 0 nothing lost, failed or different; 1 otherwise;
2 bad arguments, no images, or a server that does not come up.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.benchmarks.errors import BenchmarkError
from rfnet.common.cli import ExitCode, start
from rfnet.common.imageio import list_images
from rfnet.errors import RFNetError, UsageError
from rfnet.runtime.client import TritonSegmentClient
from rfnet.runtime.fields import FIELD_NAMES, format_fields
from rfnet.runtime.infer import main as infer_main
from rfnet.runtime.outputs import output_names

log = logging.getLogger("rfnet.benchmarks.serve_load")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reference(model: Path, paths: list[Path], threads: int | None, work: Path) -> tuple[list[dict[str, Any]], float]:
    """runtime/infer.py on ``paths``: per image {text: field -> results.csv text, disc, cup: PNG bytes}, images/s."""
    src = work / "images"
    src.mkdir()
    for i, p in enumerate(paths):  # one folder, infer.py's input order = ours
        os.symlink(p.resolve(), src / f"{i:05d}{p.suffix.lower()}")
    out = work / "reference"
    # ungradable: the masks of every image (the server sends them for each; the verdict is a field)
    argv = ["--model", str(model), "--input", str(src), "--output", str(out), "--save", "csv,masks,ungradable",
            "--no-progress"]
    if threads:
        argv += ["--threads", str(threads)]
    if infer_main(argv) != ExitCode.OK:
        raise BenchmarkError(f"runtime/infer.py did not process every image of the reference run (see {out})")
    with open(out / "results.csv", newline="") as fh:
        rows = {r["name"]: {k: r[k] for k in FIELD_NAMES} for r in csv.DictReader(fh)}
    names = output_names(sorted(src.iterdir()))
    refs = [{"text": rows[n], "disc": (out / "masks" / f"{n}_disc.png").read_bytes(),
             "cup": (out / "masks" / f"{n}_cup.png").read_bytes()} for n in names]
    return refs, float(json.loads((out / "summary.json").read_text())["images_per_s"])


def start_server(args: argparse.Namespace, ports: dict[str, int], logf: Any, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rfnet.runtime.serve", "--model", str(args.model), "--address", "127.0.0.1",
           "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]), "--metrics-port", str(ports["metrics"]),
           "--max-batch-size", str(args.max_batch_size), "--max-queue-delay-us", str(args.max_queue_delay_us),
           "--instances", str(args.instances)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"the server exited with {proc.returncode} while starting; log: {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/models/rfnet/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(proc, 10)
    raise BenchmarkError(f"the server was not ready after {args.start_timeout} s; log: {log_path}")


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM (what Kubernetes sends), then wait; the exit code, or None when it had to be killed."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("nv_inference_count{", "nv_inference_exec_count{")) and 'model="rfnet"' in line:
            out[line.split("{", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def drive(args: argparse.Namespace, url: str, data: list[bytes], refs: list[dict[str, Any]]) -> dict[str, Any]:
    """``--requests`` requests from ``--concurrency`` threads; per request: latency and verdict."""
    lock = threading.Lock()
    next_id = [0]
    rec: dict[str, Any] = {"latency_ms": [], "failed": [], "errors": [], "different": []}
    deadline = time.monotonic() + args.time_limit

    def worker() -> None:
        client = TritonSegmentClient(url, args.protocol, timeout_s=args.time_limit)
        try:
            while True:
                with lock:
                    i = next_id[0]
                    if i >= args.requests or time.monotonic() > deadline:
                        return
                    next_id[0] += 1
                k = i % len(data)
                t0 = time.perf_counter()
                try:
                    ans = client.segment(data[k])
                except Exception as exc:  # a lost request: counted, the run goes on
                    with lock:
                        rec["failed"].append(f"request {i}: {type(exc).__name__}: {exc}")
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                same = not ans.error and format_fields(ans.values) == refs[k]["text"] and \
                    ans.disc_png == refs[k]["disc"] and ans.cup_png == refs[k]["cup"]
                with lock:
                    rec["latency_ms"].append(ms)
                    if ans.error:
                        rec["errors"].append(f"request {i} (image {k}): {ans.error}")
                    elif not same:
                        rec["different"].append(f"request {i} (image {k})")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"load-{j}") for j in range(args.concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec["wall_s"] = time.perf_counter() - t0
    rec["sent"] = next_id[0]
    return rec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/serve_load.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help=".onnx (or .engine on a GPU machine)")
    p.add_argument("--images", required=True, help="image folder, file or quoted glob")
    p.add_argument("--num-images", type=int, default=None, help="use the first N images")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent clients C")
    p.add_argument("--requests", type=int, default=100, help="requests in all (bounded run)")
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds; requests not sent by then are lost")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (reference and server)")
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = list_images(args.images)[: args.num_images]
    if not paths:
        raise UsageError(f"{args.images}: no images")
    data = [p.read_bytes() for p in paths]
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        work = Path(tmp)
        refs, single_fps = reference(args.model, paths, args.threads, work)
        ports = {k: _free_port() for k in ("http", "grpc", "metrics")}
        load_start = os.getloadavg()
        with open(work / "server.log", "wb") as logf:
            proc = start_server(args, ports, logf, work / "server.log")
            try:
                before = metrics(ports["metrics"])
                rec = drive(args, f"127.0.0.1:{ports[args.protocol]}", data, refs)
                after = metrics(ports["metrics"])
            finally:
                code = stop_server(proc, 60)
        lat = np.asarray(rec["latency_ms"])
        n_inf = after.get("nv_inference_count", 0.0) - before.get("nv_inference_count", 0.0)
        n_exec = after.get("nv_inference_exec_count", 0.0) - before.get("nv_inference_exec_count", 0.0)
        return {
            "model": str(args.model), "images": len(paths), "protocol": args.protocol,
            "concurrency": args.concurrency, "max_batch_size": args.max_batch_size, "instances": args.instances,
            "requests": args.requests, "sent": rec["sent"], "answered": int(lat.size),
            "lost": args.requests - int(lat.size), "item_errors": len(rec["errors"]),
            "different": len(rec["different"]), "wall_s": round(rec["wall_s"], 2),
            "throughput_img_s": round(lat.size / rec["wall_s"], 3) if rec["wall_s"] > 0 else None,
            "latency_ms": {k: round(float(np.percentile(lat, q)), 1) for k, q in
                           (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))} if lat.size else None,
            "mean_batch": round(n_inf / n_exec, 2) if n_exec else None,
            "single_process_img_s": single_fps, "server_exit_code": code,
            "load_average": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in os.getloadavg()]},
            "examples": {"failed": rec["failed"][:5], "errors": rec["errors"][:5], "different": rec["different"][:5]},
        }


def main(argv: list[str] | None = None) -> int:
    args = start(build_parser(), argv)
    if isinstance(args, int):  # --help, or bad arguments
        return args
    if min(args.concurrency, args.requests, args.max_batch_size, args.instances) < 1 or not args.model.is_file():
        print("error: --model must exist; --concurrency, --requests, --max-batch-size, --instances >= 1",
              file=sys.stderr)
        return ExitCode.USAGE
    try:
        report = run(args)
    except (RFNetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = report["lost"] == 0 and report["item_errors"] == 0 and report["different"] == 0 and \
        report["server_exit_code"] == 0
    return ExitCode.OK if ok else ExitCode.FAILED


if __name__ == "__main__":
    raise SystemExit(main())
