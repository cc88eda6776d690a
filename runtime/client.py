"""Send images to ``runtime/serve.py`` (Triton, HTTP or gRPC) and write what ``runtime/infer.py`` writes.

    python -m rfnet.runtime.client --url 127.0.0.1:8000 --output out/ fundus/*.jpg
    python -m rfnet.runtime.client --url grpc://10.0.0.5:8001 --output out/ --concurrency 8 fundus/

Each image file is sent as it is on disk (one request per image, ``--concurrency`` requests in
flight, so the server's dynamic batcher can group them). The output folder gets results.csv
with the columns of ``runtime/infer.py`` (the result fields of ``runtime/fields.py``;
``latency_ms`` is the server's backend time per image, as in infer.py), masks/, refuge/ and
overlay/ as selected by ``--save`` (the masks are the server's PNGs; as infer.py, none for an
image that is not gradable unless ``--save`` adds ``ungradable``), and a summary.json of this run.
Needs ``tritonclient[http,grpc]`` (the ``[serve]`` extra).

Exit status: 0 all images answered; 1 some images failed (unreadable locally, refused by the
server, or the request failed; listed); 2 usage, no server or model at the URL, missing
library, output folder not empty; 130 interrupted (results so far written).
"""
from __future__ import annotations

import argparse
import json
import importlib
import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rfnet.common.cli import ExitCode, images_run_epilog, new_parser, start
from rfnet.common.imageio import IMAGE_EXTENSIONS, list_images, read_image
from rfnet.common.progress import track
from rfnet.errors import RFNetError, UsageError
from rfnet.runtime.errors import DeploymentError
from rfnet.runtime.fields import Value, fields_from_outputs
from rfnet.runtime.outputs import DEFAULT_OVERLAY_SIDE, DEFAULT_SAVE, OVERLAY_FORMATS, SAVE_CHOICES, UNGRADABLE, OutputWriter, output_names, parse_save, prepare_output_dir, write_run_report
from rfnet.runtime.serving import (CUP_MASK, DISC_MASK, ERROR, IMAGE_INPUT, LATENCY, MODEL_INFO, MODEL_NAME, decode_mask,
                             output_specs)

log = logging.getLogger("rfnet.runtime.client")

CLIENT_HINT = 'pip install "tritonclient[http,grpc]" (or the [serve] extra)'


class ClientError(DeploymentError):
    """No server, no model, or no client library; the message says which."""


@dataclass
class Answer:
    """The server's answer for one image: field values and PNG masks, or an error."""

    values: dict[str, Value] = field(default_factory=dict)
    disc_png: bytes = b""
    cup_png: bytes = b""
    latency_ms: float = 0.0
    error: str = ""
    model_info: bytes = b""  # JSON: the served model's deployment fields and minimum disc score


def parse_url(url: str, protocol: str | None = None) -> tuple[str, str]:
    """``grpc://h:p`` / ``http://h:p`` / ``h:p`` -> (protocol, ``h:p``); a bare URL uses
    ``protocol`` (default http). UsageError for another scheme or a conflicting ``protocol``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return protocol or "http", url
    if scheme not in ("http", "grpc"):
        raise UsageError(f"--url {url}: scheme must be http:// or grpc://")
    if protocol and protocol != scheme:
        raise UsageError(f"--url {url} says {scheme} but --protocol says {protocol}")
    return scheme, rest


class TritonSegmentClient:
    """A thin tritonclient wrapper for the RF-Net model; one per thread (``tritonclient`` clients
    are not shared across threads here).

    Raises (constructor):
        ClientError: tritonclient missing.
    """

    def __init__(self, url: str, protocol: str = "http", model_name: str = MODEL_NAME, timeout_s: float = 120.0):
        try:
            self._mod = importlib.import_module(f"tritonclient.{protocol}")
        except ImportError as exc:
            raise ClientError(f"tritonclient[{protocol}] is not installed ({exc}); {CLIENT_HINT}") from exc
        self.protocol, self.url, self.model_name, self.timeout_s = protocol, url, model_name, timeout_s
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self._client = self._mod.InferenceServerClient(url)
        self._outputs = [name for name, _ in output_specs()]

    def check_ready(self) -> None:
        """ClientError unless the server is live and the model ready."""
        try:
            live = self._client.is_server_live()
            ready = live and self._client.is_model_ready(self.model_name)
        except Exception as exc:  # connection refused, DNS, TLS: tritonclient raises its own or socket errors
            raise ClientError(f"no Triton server at {self.protocol}://{self.url} ({type(exc).__name__}: {exc})") from exc
        if not ready:
            raise ClientError(f"the server at {self.protocol}://{self.url} is {'up' if live else 'not live'} but model "
                              f"{self.model_name!r} is not ready")

    def segment(self, data: bytes) -> Answer:
        """One encoded image -> the server's :class:`Answer` (exceptions for a failed request)."""
        inp = self._mod.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=object))
        if self.protocol == "http":
            outs = [self._mod.InferRequestedOutput(n, binary_data=True) for n in self._outputs]
            res = self._client.infer(self.model_name, [inp], outputs=outs)
        else:
            outs = [self._mod.InferRequestedOutput(n) for n in self._outputs]
            res = self._client.infer(self.model_name, [inp], outputs=outs, client_timeout=self.timeout_s)
        error = bytes(res.as_numpy(ERROR).reshape(-1)[0]).decode("utf-8", "replace")
        info = bytes(res.as_numpy(MODEL_INFO).reshape(-1)[0])
        if error:
            return Answer(error=error, model_info=info)
        return Answer(fields_from_outputs(res.as_numpy), bytes(res.as_numpy(DISC_MASK).reshape(-1)[0]),
                      bytes(res.as_numpy(CUP_MASK).reshape(-1)[0]), float(res.as_numpy(LATENCY).reshape(-1)[0]),
                      model_info=info)

    def close(self) -> None:
        self._client.close()


DESCRIPTION = ("Segment images on an RF-Net Triton server (rfnet serve) and write results.csv, masks, overlays "
               "as rfnet infer does.")


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("rfnet client", DESCRIPTION, images_run_epilog("usage/no server/missing library/output exists"))
    p.add_argument("images", nargs="+", help="image files, folders or quoted glob patterns")
    p.add_argument("--url", required=True, help="HOST:PORT, http://HOST:PORT or grpc://HOST:PORT")
    p.add_argument("--protocol", choices=("http", "grpc"), default=None, help="for a URL without a scheme (default http)")
    p.add_argument("--output", required=True, type=Path, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--model-name", default=MODEL_NAME)
    p.add_argument("--save", default=",".join(DEFAULT_SAVE),
                   help=f"comma-separated: {','.join(SAVE_CHOICES)} or all (default as runtime/infer.py: "
                   f"{','.join(DEFAULT_SAVE)}); masks and REFUGE maps are written for gradable images only unless "
                   f"{UNGRADABLE} is added")
    p.add_argument("--overlay-size", type=int, default=DEFAULT_OVERLAY_SIDE,
                   help="long side of the overlay pictures in pixels, 0 for the photograph's own size (the "
                   "measurements and the REFUGE map always use the full-size masks)")
    p.add_argument("--overlay-format", choices=OVERLAY_FORMATS, default=OVERLAY_FORMATS[0],
                   help="overlay files: JPEG (quality 95) or PNG, as runtime/infer.py")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--recursive", action="store_true", help="search folders recursively")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--no-report", action="store_true", help="do not write report.html (the screening report)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def collect_images(sources: Iterable[str], recursive: bool) -> list[Path]:
    """Every image named by ``sources`` (files, folders, globs), in order, without duplicates."""
    seen: dict[Path, None] = {}
    for s in sources:
        for p in list_images(s, recursive=recursive):
            seen.setdefault(Path(p), None)
    return list(seen)


def main(argv: list[str] | None = None) -> int:
    args = start(build_parser(), argv)
    if isinstance(args, int):  # --help, or bad arguments
        return args
    try:
        protocol, url = parse_url(args.url, args.protocol)
        save = parse_save(args.save)
        if args.concurrency < 1:
            raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")
        paths = collect_images(args.images, args.recursive)
        if not paths:
            raise UsageError(f"{' '.join(args.images)}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
        if args.output.exists():
            prepare_output_dir(args.output, args.overwrite)
        probe = TritonSegmentClient(url, protocol, args.model_name, args.timeout)
        try:
            probe.check_ready()
        finally:
            probe.close()
        out_dir = prepare_output_dir(args.output, args.overwrite)
    except (RFNetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    writer = OutputWriter(out_dir, save, overlay_format=args.overlay_format, overlay_side=args.overlay_size)
    return _run(args, protocol, url, paths, writer)


class _ThreadClients:
    """One :class:`TritonSegmentClient` per worker thread, all closed at the end."""

    def __init__(self, url: str, protocol: str, model_name: str, timeout_s: float) -> None:
        self._args = (url, protocol, model_name, timeout_s)
        self._local = threading.local()
        self._all: list[TritonSegmentClient] = []
        self._lock = threading.Lock()

    def get(self) -> TritonSegmentClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = TritonSegmentClient(*self._args)
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        for c in self._all:
            c.close()


def _request(clients: _ThreadClients, path: Path) -> Answer:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Answer(error=f"cannot read file ({exc.strerror or exc})")
    try:
        return clients.get().segment(data)
    except Exception as exc:  # tritonclient's InferenceServerException, socket errors, timeouts
        return Answer(error=f"request failed: {type(exc).__name__}: {exc}")


def _run(args: argparse.Namespace, protocol: str, url: str, paths: Sequence[Path], writer: OutputWriter) -> int:
    names = output_names(paths)
    clients = _ThreadClients(url, protocol, args.model_name, args.timeout)
    failures: list[tuple[int, str]] = []
    latencies: list[float] = []
    served = b""  # the first answer's model_info
    interrupted = False
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="rfnet-client")
    try:
        futures: list[Future[Answer]] = [pool.submit(_request, clients, p) for p in paths]
        for i, fut in track(enumerate(futures), desc="segment", total=len(paths), unit="img",
                            enabled=not args.no_progress, summary=False):
            answer = fut.result()
            served = served or answer.model_info
            err = _save(writer, i, names[i], paths[i], answer)
            if err:
                failures.append((i, f"{paths[i]}: {err}"))
                log.warning("%s", failures[-1][1])
            else:
                latencies.append(answer.latency_ms)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: writing the results of the images answered so far")
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        clients.close()
    wall = time.perf_counter() - t0
    writer.write_csv()
    model = json.loads(served) if served else {}
    writer.write_summary({
        "server": f"{protocol}://{url}", "model_name": args.model_name,
        "model": f"{args.model_name} on the server {protocol}://{url}", "model_info": model.get("model_info", {}),
        "settings": {"concurrency": args.concurrency, "save": sorted(writer.save), "overlay_format": writer.overlay_format,
                     "overlay_size": writer.overlay_side,
                     "min_disc_score": model.get("min_disc_score")},
        "num_images": len(paths), "num_processed": len(writer.rows), "num_failed": len(failures),
        "num_gradable": sum(1 for _, row in writer.rows if row["gradable"] == "1"),
        "failed": [{"file": str(paths[i]), "error": e} for i, e in sorted(failures)], "interrupted": interrupted,
        "server_latency_ms_mean": float(np.mean(latencies)) if latencies else None,
        "wall_time_s": round(wall, 3), "images_per_s": round(len(writer.rows) / wall, 3) if wall > 0 else None,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    if not args.no_report:
        write_run_report(writer)
    log.info("%d/%d images answered in %.2f s; results in %s", len(writer.rows), len(paths), wall, writer.out_dir)
    if interrupted:
        return ExitCode.INTERRUPTED
    if failures:
        print(f"error: {len(failures)} of {len(paths)} images failed:", file=sys.stderr)
        for _, e in sorted(failures):
            print(f"  {e}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _save(writer: OutputWriter, index: int, name: str, path: Path, answer: Answer) -> str:
    """Write one answer's files (as runtime/infer.py: masks and REFUGE map for a gradable image, or
    with ``--save ...,ungradable``) and CSV row; the error text ("" when written)."""
    if answer.error:
        return answer.error
    try:
        image = read_image(path) if "overlay" in writer.save else None
        if answer.values["gradable"] or UNGRADABLE in writer.save:
            disc = decode_mask(answer.disc_png, f"{path}: disc mask")
            cup = decode_mask(answer.cup_png, f"{path}: cup mask")
            box = tuple(float(answer.values[k] or 0.0) for k in ("disc_x0", "disc_y0", "disc_x1", "disc_y1"))
            writer.write_images(name, disc, cup, image, box=box)  # type: ignore[arg-type]
        else:  # as runtime/infer.py: no masks or REFUGE map, an overlay that says why
            writer.write_ungradable(name, image, str(answer.values["reason"]))
    except (OSError, ValueError) as exc:  # ImageReadError is a ValueError
        return f"cannot write outputs: {exc}"
    writer.add_row(index, name, path, answer.values, answer.latency_ms)
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
