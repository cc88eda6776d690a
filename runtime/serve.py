"""Serve RF-Net behind a real Triton Inference Server (PyTriton), torch-free.

    python -m rfnet.runtime.serve --model model.onnx                      # HTTP :8000, gRPC :8001, metrics :8002
    python -m rfnet.runtime.serve --model rfnet.engine --max-batch-size 8 --http-port 9000

One Triton model (``rfnet``) takes encoded image files (one per request item, BYTES [1]) and
returns per image the result fields of ``runtime/fields.py`` (the results.csv columns of
``runtime/infer.py``: the gradability verdict, and the CDRs only for a gradable image), the disc
and cup masks as PNG bytes, the latency and an error message (empty when the item succeeded):
the wire format is in ``runtime/serving.py``. Results come
from the same core as ``runtime/infer.py`` (``rfnet.common.segment.Segmenter``), so they are
identical. Triton's dynamic batcher groups concurrent requests into batches of up to
``--max-batch-size``; each model instance (``--instances``) loads the backend once.

Health: ``GET /v2/health/live``, ``GET /v2/health/ready`` (all models loaded),
``GET /v2/models/rfnet/ready``; Prometheus metrics on ``--metrics-port`` (``/metrics``).

Needs the ``[serve]`` extra (``pip install -e ".[serve]"``: nvidia-pytriton, which bundles the
Triton server binary and needs numpy<2). Exit status: 0 stopped by SIGTERM; 1 the server died;
2 usage, model or missing library, or a port in use; 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator

import numpy as np

from rfnet.common.cli import ExitCode, new_parser, start
from rfnet.errors import RFNetError, UsageError
from rfnet.runtime.backends import BACKENDS, resolve_backend
from rfnet.runtime.errors import DeploymentError
from rfnet.runtime.serving import (DEFAULT_MAX_IMAGE_PIXELS, IMAGE_INPUT, MODEL_NAME, SegmentService, ServeSettings,
                             output_specs)

log = logging.getLogger("rfnet.runtime.serve")

SERVE_HINT = 'pip install -e ".[serve]" (Linux x86_64 / aarch64; nvidia-pytriton needs numpy<2)'


class ServingDependencyError(DeploymentError):
    """PyTriton or tritonclient is missing; the message says what to install."""


class ServerStartError(DeploymentError):
    """The Triton server process did not come up."""


def import_pytriton() -> Any:
    """The ``pytriton`` package (ServingDependencyError when it is not installed)."""
    try:
        importlib.import_module("pytriton.triton")
        importlib.import_module("pytriton.model_config")
        importlib.import_module("pytriton.decorators")
        return importlib.import_module("pytriton")
    except ImportError as exc:
        raise ServingDependencyError(f"nvidia-pytriton is not installed ({exc}); {SERVE_HINT}") from exc


@contextlib.contextmanager
def _python_library_path() -> Iterator[None]:
    """Put this interpreter's libpython first on the library path of the server started inside.

    Triton's Python backend stub links ``libpython3.X.so`` and finds it through the loader's
    default paths. With a Python built elsewhere (pyenv, conda), that is the system's library of
    another patch release while the standard library comes from this interpreter: seen with
    pyenv 3.11.7 over Debian's libpython 3.11.2, where multiprocessing then fails inside the stub
    (``'_thread.RLock' object has no attribute '_recursion_count'``). PyTriton starts the server
    with a copy of ``os.environ``, so the variable is set only while the server starts.
    """
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    old = os.environ.get("LD_LIBRARY_PATH")
    if libdir and soname and (Path(libdir) / soname).is_file():
        os.environ["LD_LIBRARY_PATH"] = libdir + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = old


def check_port_free(address: str, port: int) -> None:
    """UsageError when ``port`` cannot be bound on ``address`` (Triton would fail after a long wait)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise UsageError(f"port {port} on {address} is not available ({exc.strerror or exc})") from exc


class RFNetServer:
    """A Triton Inference Server with the RF-Net model bound, as a context manager.

    Entering loads one :class:`SegmentService` per instance, starts Triton (HTTP, gRPC,
    metrics) and returns when the model is ready; leaving stops Triton, then the instances.

    Args:
        settings: model and inference settings (``rfnet.runtime.serving.ServeSettings``).
        instances: model instances (each loads the backend; one per GPU, see README).
        address: interface the three endpoints listen on.
        http_port, grpc_port, metrics_port: their ports.
        max_queue_delay_us: how long the dynamic batcher waits for more requests.
        model_name: the Triton model name.
        exit_timeout_s: how long Triton waits for in-flight requests when stopping.
        workspace: a folder for PyTriton's workspace that does not exist yet (default: a new temporary one);
            removed when the server stops.
    """

    def __init__(self, settings: ServeSettings, *, instances: int = 1, address: str = "0.0.0.0",
                 http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                 max_queue_delay_us: int = 1000, model_name: str = MODEL_NAME, exit_timeout_s: int = 10,
                 workspace: Path | None = None) -> None:
        self.settings = settings
        self.instances = instances
        self.address = address
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.max_queue_delay_us = max_queue_delay_us
        self.model_name = model_name
        self.exit_timeout_s = exit_timeout_s
        self.workspace = workspace
        self.services: list[SegmentService] = []
        self._triton: Any = None

    @property
    def urls(self) -> dict[str, str]:
        """Where clients connect (``http``, ``grpc``: host:port; ``metrics``: the URL)."""
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address
        return {"http": f"{host}:{self.ports['http']}", "grpc": f"{host}:{self.ports['grpc']}",
                "metrics": f"http://{host}:{self.ports['metrics']}/metrics"}

    def __enter__(self) -> "RFNetServer":
        import_pytriton()
        for port in self.ports.values():
            check_port_free(self.address, port)
        try:
            for i in range(self.instances):
                self.services.append(SegmentService(self.settings, str(i)))
            log.info("%d model instance(s) of %s loaded on %s", self.instances, self.settings.model,
                     self.services[0].device)
            self._start_triton()
        except BaseException:
            self.close()
            raise
        return self

    def _start_triton(self, attempts: int = 2) -> None:
        """Start Triton with the model bound; ``attempts`` tries.

        Why more than one: with several instances, the Triton stub of each further instance waits
        a hard-coded 1 s (PyTriton 0.7, ``get_config_from_handshake_server``) for the first
        instance's stub to open its handshake socket, after that stub has spawned its tensor-store
        process. On a CPU starved by other jobs that took longer and the start failed (seen once
        in the test suite at load average 8.6); a second start, with the instances already
        loaded, costs only Triton's own start-up.
        """
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig

        config = TritonConfig(http_address=self.address, http_port=self.ports["http"], grpc_address=self.address,
                              grpc_port=self.ports["grpc"], metrics_address=self.address,
                              metrics_port=self.ports["metrics"], exit_timeout_secs=self.exit_timeout_s)
        for attempt in range(1, attempts + 1):
            self._triton = Triton(config=config, workspace=self.workspace)
            self._triton.bind(
                model_name=self.model_name,
                infer_func=[batch(_infer_fn(s)) for s in self.services],
                inputs=[Tensor(name=IMAGE_INPUT, dtype=np.bytes_, shape=(1,))],
                outputs=[Tensor(name=name, dtype=dtype, shape=(1,)) for name, dtype in output_specs()],
                config=ModelConfig(max_batch_size=self.settings.max_batch_size,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=self.max_queue_delay_us)),
                strict=True,
            )
            try:
                with _python_library_path():
                    self._triton.run()
                return
            except Exception as exc:  # PyTriton's own errors, TimeoutError: say what failed, keep the type ours
                self._triton.stop()
                self._triton = None
                if self.workspace is not None:  # did not exist before: PyTriton's files only (stop() may leave them)
                    shutil.rmtree(self.workspace, ignore_errors=True)
                if attempt == attempts:
                    raise ServerStartError(f"Triton Inference Server did not start ({type(exc).__name__}: {exc}); "
                                           f"run with -v for its log") from exc
                log.warning("Triton Inference Server did not start (%s: %s); starting it again",
                            type(exc).__name__, exc)

    def is_alive(self) -> bool:
        return self._triton is not None and bool(self._triton.is_alive())

    def wait(self, stop: threading.Event, poll_s: float = 0.5) -> bool:
        """Block until ``stop`` is set (True) or the server dies (False)."""
        while not stop.wait(poll_s):
            if not self.is_alive():
                return False
        return True

    def close(self) -> None:
        """Stop Triton, then release every instance's backend (idempotent)."""
        try:
            if self._triton is not None:
                self._triton.stop()
        finally:
            self._triton = None
            while self.services:
                self.services.pop().close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _infer_fn(service: SegmentService) -> Any:
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        return service(image)

    return infer


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "python -m rfnet.runtime.serve",
        description="Serve RF-Net optic disc / cup segmentation and CDRs behind Triton Inference Server (PyTriton).",
        epilog="Health: GET /v2/health/live, /v2/health/ready, /v2/models/<name>/ready; Prometheus metrics on "
        "--metrics-port at /metrics. Exit status: 0 stopped (SIGTERM), 1 the server died, 2 usage/model/missing "
        "library/port in use, 130 Ctrl-C.",
    )
    p.add_argument("--model", required=True, type=Path, help="X.onnx, or X.engine with X.engine.json beside it")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="as runtime/infer.py")
    p.add_argument("--max-batch-size", type=int, default=8, help="largest batch Triton's dynamic batcher forms")
    p.add_argument("--max-queue-delay-us", type=int, default=1000,
                   help="how long a request may wait in the queue for others to batch with")
    p.add_argument("--instances", type=int, default=1,
                   help="model instances, each with its own backend (TensorRT: 1; run one server per GPU)")
    p.add_argument("--address", default="0.0.0.0", help="interface the endpoints listen on")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-name", default=MODEL_NAME, help="the Triton model name")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    p.add_argument("--min-score", type=float, default=None,
                   help="minimum disc score of a gradable image, as runtime/infer.py (default: the model's "
                   "rfnet.min_disc_score)")
    p.add_argument("--ellipse", action="store_true", help="fit ellipses to disc and cup")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads per instance")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay CUDA graphs")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help="refuse request images declaring more pixels (0: no limit beyond OpenCV's 2**30)")
    p.add_argument("--exit-timeout", type=int, default=10, help="seconds to finish in-flight requests when stopping")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Cheap checks before anything loads (UsageError naming the option)."""
    if not args.model.is_file():
        raise UsageError(f"{args.model}: model file not found")
    kind = resolve_backend(args.model, args.backend)
    for name in ("max_batch_size", "instances"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if kind == "tensorrt" and args.instances > 1:
        raise UsageError("--instances > 1 with a TensorRT engine: use one instance per GPU and run one server "
                         "per GPU (CUDA_VISIBLE_DEVICES=N); see README, 'Serving'")
    if not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.min_score is not None and not 0.0 <= args.min_score < 1.0:
        raise UsageError(f"--min-score must be in [0, 1), got {args.min_score}")
    if args.max_queue_delay_us < 0 or args.max_image_pixels < 0:
        raise UsageError("--max-queue-delay-us and --max-image-pixels must be >= 0")
    return ServeSettings(model=args.model, backend=kind, max_batch_size=args.max_batch_size,
                         threshold=args.threshold, ellipse=args.ellipse, min_score=args.min_score,
                         threads=args.threads, cuda_graph=args.cuda_graph,
                         max_image_pixels=args.max_image_pixels or None)


def main(argv: list[str] | None = None) -> int:
    args = start(build_parser(), argv)
    if isinstance(args, int):  # --help, or bad arguments
        return args
    try:
        settings = settings_from_args(args)
        import_pytriton()
    except (RFNetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # Kubernetes stops pods with SIGTERM
    try:
        with RFNetServer(settings, instances=args.instances, address=args.address, http_port=args.http_port,
                         grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                         max_queue_delay_us=args.max_queue_delay_us, model_name=args.model_name,
                         exit_timeout_s=args.exit_timeout) as server:
            log.info("serving model %r: HTTP %s, gRPC %s, metrics %s (SIGTERM or Ctrl-C stops)", args.model_name,
                     server.urls["http"], server.urls["grpc"], server.urls["metrics"])
            if not server.wait(stop):
                log.error("the Triton server stopped unexpectedly")
                return ExitCode.FAILED
        log.info("stopped")
        return ExitCode.OK
    except KeyboardInterrupt:
        log.info("interrupted; stopped")
        return ExitCode.INTERRUPTED
    except RFNetError as exc:  # a model that cannot load, a port in use
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
