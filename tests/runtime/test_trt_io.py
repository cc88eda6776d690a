"""TensorRT backend logic without TensorRT or a GPU: fake engine, context, pycuda.driver, cuda-python.

The fakes follow the name-based API (TensorRT >= 8.5) and the PyCUDA calls the backend
makes; ``test_stand_ins_use_only_the_tensorrt_api`` pins their names and signatures to the
TensorRT 10.x stubs, and the ``tensorrt`` module stand-in comes from ``tests/support/trt_stubs.py``.
Device memory is a dict of bytearrays, and "execution" computes outputs from the input bytes,
so a wrong address, size, copy direction or batch index shows up as wrong values.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

from rfnet.runtime.backends.base import BackendError, BackendUnavailableError, InputError, ModelLoadError
from rfnet.runtime.backends.trt_io import (
    BufferSpec,
    buffers_to_grow,
    describe_engine,
    max_input_shapes,
    numpy_dtype,
    plan_buffers,
    volume,
)
from rfnet.runtime.backends.trt_pycuda import TensorRTBackend

from tests.support.fake_cudart import FakeCudart
from tests.support.trt_stubs import fake_tensorrt, stub_index

S, K, M = 16, 3, 8
NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}


def _nptype(dt: Any) -> Any:
    return NP[dt.name]  # KeyError for BF16 / FP8, like trt.nptype's TypeError for them


FAKE_TRT = fake_tensorrt("10", functions={"nptype": _nptype})
IO = FAKE_TRT.TensorIOMode


class FakeEngine:
    """image [-1,3,S,S] (profile 1..4) -> boxes [-1,K,4], scores [-1,K], masks [-1,K,2,M,M] (HALF)."""

    def __init__(self, memory: dict[int, bytearray], *, image_dtype: str = "FLOAT", masks_dtype: str = "HALF",
                 dynamic_output: bool = False) -> None:
        self.memory = memory
        self.io = {
            "image": (IO.INPUT, image_dtype, [-1, 3, S, S]),
            "boxes": (IO.OUTPUT, "FLOAT", [-1, K, 4]),
            "scores": (IO.OUTPUT, "FLOAT", [-1, K]),
            "masks": (IO.OUTPUT, masks_dtype, [-1, K, 2, M, M]),
        }
        self.dynamic_output = dynamic_output
        self.profile = [[1, 3, S, S], [2, 3, S, S], [4, 3, S, S]]

    num_io_tensors = property(lambda self: len(self.io))

    def get_tensor_name(self, i: int) -> str:
        return list(self.io)[i]

    def get_tensor_mode(self, name: str) -> Any:
        return self.io[name][0]

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(FAKE_TRT.DataType, self.io[name][1])

    def get_tensor_shape(self, name: str) -> list[int]:
        return list(self.io[name][2])

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[list[int]]:
        assert name == "image" and profile == 0
        return self.profile

    def create_execution_context(self) -> "FakeContext":
        return FakeContext(self)


class FakeContext:
    capture: "CaptureState | None" = None  # set by make_backend: the fake cuda-python's capture state

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self.reject = False
        self.fail_execute = False
        # shape-dependent state the context keeps on the device, written by plain enqueues (TensorRT
        # defers such updates to the first enqueue after set_input_shape); a captured graph's kernels
        # read it when they replay, so a graph replayed after another shape's enqueue reads that shape's
        self.device_shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if self.reject:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> list[int]:
        if name in self.shapes:
            return list(self.shapes[name])
        shape = list(self.engine.io[name][2])
        if not (self.engine.dynamic_output and name == "boxes"):
            shape[0] = self.shapes["image"][0]
        return shape

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert stream_handle == FakeStream.handle
        if self.fail_execute:
            return False
        if self.capture is not None and self.capture.active:  # recorded into the graph, not run
            self.capture.ops.append(lambda: self._run(self.device_shapes))
            return True
        self.device_shapes = dict(self.shapes)
        self._run(self.shapes)
        return True

    def _run(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.executions += 1
        mem, io = self.engine.memory, self.engine.io
        b = shapes["image"][0]
        image = np.frombuffer(mem[self.addresses["image"]], dtype=NP[io["image"][1]], count=b * 3 * S * S)
        means = image.reshape(b, -1).astype(np.float64).mean(axis=1)
        outs = {
            "boxes": np.broadcast_to(means[:, None, None] + np.arange(K)[None, :, None], (b, K, 4)),
            "scores": np.broadcast_to(np.array([0.9, 0.5, 0.0]), (b, K)),
            "masks": np.broadcast_to(np.arange(b)[:, None, None, None, None] + 0.5, (b, K, 2, M, M)),
        }
        for name, arr in outs.items():
            raw = np.ascontiguousarray(arr, dtype=NP[io[name][1]]).tobytes()
            mem[self.addresses[name]][: len(raw)] = raw


class FakeStream:
    """pycuda.driver.Stream as PyCUDA 2026.1 has it: handle, synchronize (no capture API)."""

    handle = 0xC0FFEE

    def __init__(self) -> None:
        self.syncs = 0

    def synchronize(self) -> None:
        self.syncs += 1


class CaptureState:
    """What the fake cuda-python records: stream capture on/off, captured work, graphs."""

    def __init__(self, *, fail_end: bool = False) -> None:
        self.active = False
        self.ops: list[Any] = []
        self.fail_end = fail_end
        self.launches: dict[int, int] = {}
        self.destroyed: list[str] = []

    def cudart(self) -> FakeCudart:
        graphs: dict[int, list[Any]] = {}

        def begin(stream: int, mode: Any) -> tuple[Any, ...]:
            assert stream == FakeStream.handle and mode == rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            self.active, self.ops = True, []
            return rt.ok()

        def end(stream: int) -> tuple[Any, ...]:
            self.active = False
            if self.fail_end:
                return rt.error("cudaErrorStreamCaptureUnsupported", None)
            graphs[len(graphs) + 1] = self.ops
            return rt.ok(len(graphs))

        def launch(graph_exec: int, stream: int) -> tuple[Any, ...]:
            self.launches[graph_exec] = self.launches.get(graph_exec, 0) + 1
            for op in graphs[graph_exec]:
                op()
            return rt.ok()

        rt = FakeCudart(
            cudaStreamBeginCapture=begin, cudaStreamEndCapture=end,
            cudaGraphInstantiateWithFlags=lambda graph, flags: rt.ok(graph), cudaGraphLaunch=launch,
            cudaGraphExecDestroy=lambda g: (self.destroyed.append(f"exec{g}"), rt.ok())[1],
            cudaGraphDestroy=lambda g: (self.destroyed.append(f"graph{g}"), rt.ok())[1],
            cudaGetLastError=lambda: rt.ok(), cudaGetErrorString=lambda err: rt.ok(b"operation not permitted"),
        )
        return rt


class FakeAlloc:
    def __init__(self, memory: dict[int, bytearray], nbytes: int) -> None:
        self.address = 0x1000 * (len(memory) + 1)
        memory[self.address] = bytearray(nbytes)
        self.memory = memory
        self.freed = False

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.freed = True


class FakeCuda:
    """The pycuda.driver calls the backend makes."""

    def __init__(self) -> None:
        self.memory: dict[int, bytearray] = {}
        self.allocs: list[FakeAlloc] = []
        self.pinned = 0
        self.fail_alloc_for_bytes: int | None = None
        self.Stream = FakeStream

    def pagelocked_empty(self, n: int, dtype: Any) -> np.ndarray:
        self.pinned += 1
        return np.full(n, 7, dtype=dtype)  # non-zero: stale bytes must never leak into results

    def mem_alloc(self, nbytes: int) -> FakeAlloc:
        if nbytes == self.fail_alloc_for_bytes:
            raise MemoryError("cuMemAlloc failed: out of memory")
        a = FakeAlloc(self.memory, nbytes)
        self.allocs.append(a)
        return a

    def memcpy_htod_async(self, dev: FakeAlloc, host: np.ndarray, stream: FakeStream) -> None:
        assert isinstance(stream, FakeStream)
        assert host.flags.c_contiguous
        self.memory[int(dev)][: host.nbytes] = host.tobytes()

    def memcpy_dtoh_async(self, host: np.ndarray, dev: FakeAlloc, stream: FakeStream) -> None:
        assert isinstance(stream, FakeStream)
        host[...] = np.frombuffer(bytes(self.memory[int(dev)][: host.nbytes]), dtype=host.dtype).reshape(host.shape)


def make_backend(
    tmp_path: Any, *, capture: CaptureState | None = None, **engine_kw: Any
) -> tuple[TensorRTBackend, FakeCuda, FakeEngine]:
    cuda = FakeCuda()
    engine = FakeEngine(cuda.memory, **engine_kw)
    FakeContext.capture = capture
    backend = TensorRTBackend(tmp_path / "fake.engine", cuda_graph=capture is not None)
    backend._bind(FAKE_TRT, cuda, engine, cudart=capture.cudart() if capture is not None else None)  # type: ignore[arg-type]
    backend._loaded = True  # _load's file / manifest / import steps are tested elsewhere
    return backend, cuda, engine


# -- pure planning -----------------------------------------------------------------------------
def test_describe_engine_reads_names_modes_dtypes_and_profile() -> None:
    tensors = describe_engine(FakeEngine({}), FAKE_TRT)
    assert [(t.name, t.is_input) for t in tensors] == [("image", True), ("boxes", False), ("scores", False), ("masks", False)]
    image, masks = tensors[0], tensors[3]
    assert image.dtype == np.float32 and masks.dtype == np.float16
    assert image.shape == (-1, 3, S, S)
    assert image.profile == ((1, 3, S, S), (2, 3, S, S), (4, 3, S, S))
    assert masks.profile is None
    spec = image.spec()
    assert spec.min_shape == (1, 3, S, S) and spec.max_shape == (4, 3, S, S) and spec.max_dim(0) == 4
    assert max_input_shapes(tensors) == {"image": (4, 3, S, S)}


def test_numpy_dtype_without_numpy_equivalent() -> None:
    with pytest.raises(ModelLoadError, match="BF16.*no numpy equivalent"):
        numpy_dtype(FAKE_TRT, FAKE_TRT.DataType.BF16, "image")
    with pytest.raises(ModelLoadError, match="no numpy equivalent"):
        describe_engine(FakeEngine({}, masks_dtype="BF16"), FAKE_TRT)


def test_plan_buffers_sizes_every_tensor_from_the_context() -> None:
    engine = FakeEngine({})
    tensors = describe_engine(engine, FAKE_TRT)
    ctx = engine.create_execution_context()
    plan = plan_buffers(tensors, ctx, {"image": (3, 3, S, S)})
    assert ctx.shapes == {"image": (3, 3, S, S)}
    assert plan["image"] == BufferSpec("image", True, np.dtype(np.float32), (3, 3, S, S))
    assert plan["image"].nbytes == 3 * 3 * S * S * 4
    assert plan["boxes"].shape == (3, K, 4) and plan["boxes"].nbytes == 3 * K * 4 * 4
    assert plan["scores"].nbytes == 3 * K * 4
    assert plan["masks"].shape == (3, K, 2, M, M) and plan["masks"].nbytes == 3 * K * 2 * M * M * 2  # fp16
    assert list(plan) == ["image", "boxes", "scores", "masks"]
    assert buffers_to_grow({n: b.nbytes for n, b in plan.items()}, plan) == []
    bigger = plan_buffers(tensors, ctx, {"image": (4, 3, S, S)})
    assert buffers_to_grow({n: b.nbytes for n, b in plan.items()}, bigger) == ["image", "boxes", "scores", "masks"]
    assert buffers_to_grow({}, plan) == list(plan)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((5, 3, S, S), r"outside the engine's optimisation profile \(min \(1, 3, 16, 16\), max \(4, 3, 16, 16\)\)"),
        ((2, 3, S, S + 1), "fixed size 16 on axis 3"),
        ((2, 3, S), "must have 4 dimensions"),
    ],
)
def test_plan_buffers_rejects_shapes_before_tensorrt_sees_them(shape: tuple[int, ...], match: str) -> None:
    engine = FakeEngine({})
    ctx = engine.create_execution_context()
    with pytest.raises(InputError, match=match):
        plan_buffers(describe_engine(engine, FAKE_TRT), ctx, {"image": shape})
    assert ctx.shapes == {}, "nothing was set on the context"


def test_plan_buffers_reports_tensorrt_refusal_and_unresolved_outputs() -> None:
    engine = FakeEngine({})
    tensors = describe_engine(engine, FAKE_TRT)
    ctx = engine.create_execution_context()
    ctx.reject = True
    with pytest.raises(InputError, match="set_input_shape returned False"):
        plan_buffers(tensors, ctx, {"image": (1, 3, S, S)})
    with pytest.raises(InputError, match="expected shapes for inputs"):
        plan_buffers(tensors, engine.create_execution_context(), {"images": (1, 3, S, S)})
    dyn = FakeEngine({}, dynamic_output=True)
    with pytest.raises(BackendError, match="output 'boxes' is unresolved"):
        plan_buffers(describe_engine(dyn, FAKE_TRT), dyn.create_execution_context(), {"image": (1, 3, S, S)})


def test_volume() -> None:
    assert volume((2, 3, 4)) == 24 and volume(()) == 1
    with pytest.raises(ValueError, match="unresolved"):
        volume((-1, 3))


# -- the backend's CUDA orchestration, with fake pycuda -----------------------------------------
def test_backend_binds_copies_and_reuses_buffers(tmp_path: Any) -> None:
    backend, cuda, engine = make_backend(tmp_path)
    ctx = backend._context
    assert [t.name for t in backend.inputs] == ["image"] and [t.name for t in backend.outputs] == ["boxes", "scores", "masks"]
    # one pinned + one device buffer per tensor, sized for the profile maximum (batch 4)
    assert len(cuda.allocs) == 4 and cuda.pinned == 4
    assert len(cuda.memory[int(backend._buffers["masks"].device)]) == 4 * K * 2 * M * M * 2

    rng = np.random.default_rng(0)
    x3 = rng.normal(size=(3, 3, S, S)).astype(np.float32)
    out3 = backend.infer({"image": x3})
    assert set(out3) == {"boxes", "scores", "masks"}
    assert out3["boxes"].shape == (3, K, 4) and out3["masks"].shape == (3, K, 2, M, M)
    assert out3["masks"].dtype == np.float16
    np.testing.assert_allclose(out3["boxes"][:, 0, 0], x3.reshape(3, -1).mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(out3["boxes"][:, 2, 3], x3.reshape(3, -1).mean(axis=1) + 2, rtol=1e-5)
    np.testing.assert_array_equal(out3["masks"][:, 0, 0, 0, 0], [0.5, 1.5, 2.5])
    assert ctx.addresses == {n: int(b.device) for n, b in backend._buffers.items()}
    assert backend._stream.syncs == 1 and ctx.executions == 1

    keep = {k: v.copy() for k, v in out3.items()}
    x1 = rng.normal(size=(1, 3, S, S)).astype(np.float32)
    out1 = backend.infer({"image": x1})
    assert out1["boxes"].shape == (1, K, 4)
    np.testing.assert_allclose(out1["boxes"][0, 0, 0], x1.mean(), rtol=1e-5)
    for k in out3:  # results are copies, not views of the reused pinned buffers
        np.testing.assert_array_equal(out3[k], keep[k])
    assert len(cuda.allocs) == 4 and cuda.pinned == 4, "buffers reused across calls"
    assert ctx.executions == 2

    backend.close()
    assert all(a.freed for a in cuda.allocs)
    assert not backend.loaded


def test_backend_validates_feed_before_the_device(tmp_path: Any) -> None:
    backend, cuda, engine = make_backend(tmp_path)
    with pytest.raises(InputError, match="must be float32, got float64"):
        backend.infer({"image": np.zeros((1, 3, S, S))})
    with pytest.raises(InputError, match=r"missing \['image'\].*unknown \['input'\]"):
        backend.infer({"input": np.zeros((1, 3, S, S), np.float32)})
    with pytest.raises(InputError, match="optimisation profile"):
        backend.infer({"image": np.zeros((5, 3, S, S), np.float32)})
    assert backend._context.executions == 0


def test_backend_names_the_failing_cuda_operation(tmp_path: Any) -> None:
    cuda = FakeCuda()
    cuda.fail_alloc_for_bytes = 4 * K * 2 * M * M * 2  # the masks buffer
    backend = TensorRTBackend(tmp_path / "fake.engine")
    with pytest.raises(BackendError, match=r"mem_alloc\(masks, 3072 bytes\) failed: MemoryError"):
        backend._bind(FAKE_TRT, cuda, FakeEngine(cuda.memory))

    backend, cuda, engine = make_backend(tmp_path)
    backend._context.fail_execute = True
    with pytest.raises(BackendError, match="execute_async_v3 failed"):
        backend.infer({"image": np.zeros((1, 3, S, S), np.float32)})


def test_backend_load_checks_the_manifest_first(tmp_path: Any) -> None:
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"123")
    from rfnet.runtime.manifest import ManifestError

    with pytest.raises(ManifestError, match="x.engine.json"):
        TensorRTBackend(engine).load()
    with pytest.raises(ModelLoadError, match="model file not found"):
        TensorRTBackend(tmp_path / "absent.engine").load()


def test_stand_ins_use_only_the_tensorrt_api() -> None:
    """FakeEngine / FakeContext may only have methods ICudaEngine / IExecutionContext have, callable alike."""
    index = stub_index()
    for fake, stub in ((FakeEngine, "ICudaEngine"), (FakeContext, "IExecutionContext")):
        for name, member in vars(fake).items():
            if name.startswith("_") or name in ("capture",):
                continue
            kind = index.member_kind(stub, name)
            assert kind is not None, f"{fake.__name__}.{name}: tensorrt.{stub} has no {name!r} (the stand-in invents it)"
            if callable(member):
                params = [p for p in inspect.signature(member).parameters.values()][1:]
                index.check_call(stub, name, tuple(object() for p in params if p.default is p.empty), {})


def test_cuda_graph_captured_with_cuda_python_and_replayed(tmp_path: Any) -> None:
    """PyCUDA streams cannot capture; cuda-python captures on the stream's handle. One execution
    context holds the shape-dependent state of the last shape it ran, so a graph is only replayed
    for the shape it was captured with: a new shape drops it, runs plainly once and captures again
    (replaying batch 2's graph after batch 3 ran would read batch 3's state: wrong outputs)."""
    capture = CaptureState()
    backend, cuda, engine = make_backend(tmp_path, capture=capture)
    rng = np.random.default_rng(1)
    for batch in (2, 2, 3, 2, 2):
        x = rng.normal(size=(batch, 3, S, S)).astype(np.float32)
        out = backend.infer({"image": x})
        np.testing.assert_allclose(out["boxes"][:, 0, 0], x.reshape(batch, -1).mean(axis=1), rtol=1e-5)
    assert list(backend._graphs) == [((2, 3, S, S),)]  # the graph of the current shape only
    assert capture.launches == {1: 2, 2: 1, 3: 2}  # batch 2, then 3, then 2 captured again
    report = backend.cuda_graph_report()
    assert report is not None and report["used"] is True and report["replays"] == 5 and report["note"] is None
    assert report["captured_shapes"] == [[[2, 3, S, S]], [[3, 3, S, S]], [[2, 3, S, S]]]
    backend.close()
    assert sorted(capture.destroyed) == ["exec1", "exec2", "exec3", "graph1", "graph2", "graph3"]


def test_cuda_graph_capture_failure_runs_plainly_and_says_so(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Defect 4: nothing may report a graph that did not run (e.g. NMS's data-dependent shapes)."""
    backend, cuda, engine = make_backend(tmp_path, capture=CaptureState(fail_end=True))
    x = np.ones((1, 3, S, S), np.float32)
    assert backend.infer({"image": x})["boxes"][0, 0, 0] == pytest.approx(1.0)
    assert backend.infer({"image": 2 * x})["boxes"][0, 0, 0] == pytest.approx(2.0)
    assert "CUDA graph capture failed" in caplog.text and not backend._graphs
    report = backend.cuda_graph_report()
    assert report == {"requested": True, "used": False, "replays": 0, "captured_shapes": [],
                      "note": report["note"]} and "cudaStreamEndCapture failed" in report["note"]
    plain, _, _ = make_backend(tmp_path)
    assert plain.cuda_graph_report() is None


def test_cuda_graph_without_cuda_python_is_refused(tmp_path: Any) -> None:
    cuda = FakeCuda()
    backend = TensorRTBackend(tmp_path / "fake.engine", cuda_graph=True)
    with pytest.raises(BackendUnavailableError, match="cuda-python"):
        backend._bind(FAKE_TRT, cuda, FakeEngine(cuda.memory), cudart=None)  # type: ignore[arg-type]


def test_verify_engine_says_what_differs(tmp_path: Any) -> None:
    from rfnet.runtime import manifest as mf
    from rfnet.runtime.backends.trt_pycuda import verify_engine

    engine = tmp_path / "rfnet.engine"
    engine.write_bytes(b"engine bytes")
    mf.write_manifest(engine, {
        "engine_sha256": mf.sha256_file(engine), "tensorrt_version": "10.3.0.30", "gpu_name": "Orin (nvgpu)",
        "compute_capability": "8.7", "precision": "fp16", "strongly_typed": False,
        "inputs": [{"name": "image", "shape": [1, 3, 16, 16], "dtype": "float32"}],
        "outputs": [{"name": "boxes", "shape": [1, 3, 4], "dtype": "float32"}], "profiles": {},
        "onnx_file": "m.onnx", "onnx_sha256": "0" * 64, "calibration": None, "build_flags": [], "dla_core": None,
        "layer_placement": None, "build_time_s": 1.0, "created_utc": "2025-01-01T00:00:00+00:00", "preset": "light",
        "input_size": 16, "mean": [0, 0, 0], "std": [1, 1, 1], "mask_size": 8, "top_k": 3, "class_names": ["disc", "cup"],
    })
    got = verify_engine(engine, tensorrt_version="10.3.0.30", gpu_name="Orin (nvgpu)", compute_capability="8.7")
    assert got["precision"] == "fp16"
    with pytest.raises(mf.ManifestMismatchError) as info:
        verify_engine(engine, tensorrt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    msg = str(info.value)
    assert "TensorRT 10.3.0.30 (engine) vs 10.8.0.43" in msg and "compute capability 8.7" in msg
    assert "rfnet.engine" in msg and "export/build.py" in msg
