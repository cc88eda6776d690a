"""TensorRT backend logic without TensorRT or a GPU: fake engine, context and pycuda.driver.

The fakes follow the name-based API (TensorRT >= 8.5) and the PyCUDA calls the backend
makes; device memory is a dict of bytearrays, and "execution" computes outputs from the
input bytes, so a wrong address, size, copy direction or batch index shows up as wrong values.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from runtime.backends.base import BackendError, InputError, ModelLoadError
from runtime.backends.trt_plan import (
    BufferSpec,
    buffers_to_grow,
    describe_engine,
    max_input_shapes,
    numpy_dtype,
    plan_buffers,
    volume,
)
from runtime.backends.trt_pycuda import TensorRTBackend

S, K, M = 16, 3, 8
NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}


def _nptype(dt: str) -> Any:
    return NP[dt]  # KeyError for BF16 / FP8, like trt.nptype's TypeError for them


FAKE_TRT = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"), nptype=_nptype)


class FakeEngine:
    """image [-1,3,S,S] (profile 1..4) -> boxes [-1,K,4], scores [-1,K], masks [-1,K,2,M,M] (HALF)."""

    def __init__(self, memory: dict[int, bytearray], *, image_dtype: str = "FLOAT", masks_dtype: str = "HALF",
                 dynamic_output: bool = False) -> None:
        self.memory = memory
        self.io = {
            "image": ("INPUT", image_dtype, [-1, 3, S, S]),
            "boxes": ("OUTPUT", "FLOAT", [-1, K, 4]),
            "scores": ("OUTPUT", "FLOAT", [-1, K]),
            "masks": ("OUTPUT", masks_dtype, [-1, K, 2, M, M]),
        }
        self.dynamic_output = dynamic_output
        self.profile = [[1, 3, S, S], [2, 3, S, S], [4, 3, S, S]]

    num_io_tensors = property(lambda self: len(self.io))

    def get_tensor_name(self, i: int) -> str:
        return list(self.io)[i]

    def get_tensor_mode(self, name: str) -> str:
        return self.io[name][0]

    def get_tensor_dtype(self, name: str) -> str:
        return self.io[name][1]

    def get_tensor_shape(self, name: str) -> list[int]:
        return list(self.io[name][2])

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[list[int]]:
        assert name == "image" and profile == 0
        return self.profile

    def create_execution_context(self) -> "FakeContext":
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self.reject = False
        self.fail_execute = False

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
        stream = FakeStream.current
        if stream is not None and stream.capturing:  # recorded into the graph, not run
            shapes = dict(self.shapes)
            stream.captured.append(lambda: self._run(shapes))
            return True
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
    handle = 0xC0FFEE
    current: "FakeStream | None" = None

    def __init__(self) -> None:
        self.syncs = 0
        self.capturing = False
        self.captured: list[Any] = []
        FakeStream.current = self

    def synchronize(self) -> None:
        self.syncs += 1


class FakeGraph:
    def __init__(self, ops: list[Any]) -> None:
        self.ops = ops
        self.launches = 0

    def instance(self) -> "FakeGraph":
        return self

    def launch(self, stream: FakeStream) -> None:
        self.launches += 1
        for op in self.ops:
            op()


class GraphStream(FakeStream):
    """A stream with PyCUDA's capture API (begin_capture / end_capture -> graph.instance().launch)."""

    fail = False

    def begin_capture(self) -> None:
        if self.fail:
            raise RuntimeError("cuStreamBeginCapture failed: operation not permitted")
        self.capturing, self.captured = True, []

    def end_capture(self) -> FakeGraph:
        self.capturing = False
        return FakeGraph(self.captured)


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
    tmp_path: Any, *, stream: type = FakeStream, cuda_graph: bool = False, **engine_kw: Any
) -> tuple[TensorRTBackend, FakeCuda, FakeEngine]:
    cuda = FakeCuda()
    cuda.Stream = stream
    engine = FakeEngine(cuda.memory, **engine_kw)
    backend = TensorRTBackend(tmp_path / "fake.engine", cuda_graph=cuda_graph)
    backend._bind(FAKE_TRT, cuda, engine)
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
        numpy_dtype(FAKE_TRT, "BF16", "image")
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
    from runtime.manifest import ManifestError

    with pytest.raises(ManifestError, match="x.engine.json"):
        TensorRTBackend(engine).load()
    with pytest.raises(ModelLoadError, match="model file not found"):
        TensorRTBackend(tmp_path / "absent.engine").load()


def test_cuda_graph_captured_once_per_shape_and_replayed(tmp_path: Any) -> None:
    backend, cuda, engine = make_backend(tmp_path, stream=GraphStream, cuda_graph=True)
    rng = np.random.default_rng(1)
    for batch in (2, 2, 3, 2):
        x = rng.normal(size=(batch, 3, S, S)).astype(np.float32)
        out = backend.infer({"image": x})
        np.testing.assert_allclose(out["boxes"][:, 0, 0], x.reshape(batch, -1).mean(axis=1), rtol=1e-5)
    assert sorted(backend._graphs) == [((2, 3, S, S),), ((3, 3, S, S),)]
    assert backend._graphs[((2, 3, S, S),)].launches == 3
    assert backend._graphs[((3, 3, S, S),)].launches == 1


def test_cuda_graph_falls_back_when_capture_fails(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(GraphStream):
        fail = True

    backend, cuda, engine = make_backend(tmp_path, stream=Broken, cuda_graph=True)
    x = np.ones((1, 3, S, S), np.float32)
    assert backend.infer({"image": x})["boxes"][0, 0, 0] == pytest.approx(1.0)
    assert backend.infer({"image": 2 * x})["boxes"][0, 0, 0] == pytest.approx(2.0)
    assert "CUDA graph capture failed" in caplog.text and not backend._graphs
    # without begin_capture at all (older PyCUDA) graphs are switched off at bind time
    plain, _, _ = make_backend(tmp_path, stream=FakeStream, cuda_graph=True)
    assert plain._use_graph is False


def test_verify_engine_says_what_differs(tmp_path: Any) -> None:
    from runtime import manifest as mf
    from runtime.backends.trt_pycuda import verify_engine

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
