"""export/build.py without TensorRT: --help and the no-TensorRT exit with torch blocked, argument handling,
exit codes (rfnet.common.cli.ExitCode), and main() with TensorRT replaced by stub-pinned stand-ins."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rfnet.export import build
from rfnet.export.trt import build_plan as bp

from tests.support import trt_onnx as fx

REPO = Path(__file__).resolve().parents[2]
TARGETS = REPO / "engines" / "targets"

# Runs export/build.py as `python export/build.py` would, with torch and tensorrt unimportable,
# and reports every attempt to import torch (even one a try/except would hide).
_BLOCKED_RUN = textwrap.dedent(
    """
    import atexit, importlib.abc, runpy, sys
    attempts = []
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            root = name.split(".")[0]
            if root in ("torch", "torchvision", "tensorrt"):
                if root != "tensorrt":
                    attempts.append(name)
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
    atexit.register(lambda: print("TORCH_IMPORT_ATTEMPTS=" + ",".join(attempts), file=sys.stderr))
    sys.argv = ["export/build.py"] + sys.argv[1:]
    runpy.run_path("export/build.py", run_name="__main__")
    """
)


def _run_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCKED_RUN, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_help_runs_with_torch_absent() -> None:
    res = _run_blocked("--help")
    assert res.returncode == 0, res.stderr
    assert "--precision {fp32,fp16,int8}" in res.stdout and "--dla-core" in res.stdout
    assert "TORCH_IMPORT_ATTEMPTS=\n" in res.stderr or res.stderr.rstrip().endswith("TORCH_IMPORT_ATTEMPTS=")


def test_without_tensorrt_exits_2_with_install_command(tmp_path: Path) -> None:
    onnx_path = fx.write_model(tmp_path / "m.onnx")
    out = tmp_path / "engines" / "x.engine"
    res = _run_blocked("--onnx", str(onnx_path), "--precision", "fp16", "--output", str(out),
                       "--target", str(TARGETS / "datacenter-fp16.toml"))
    assert res.returncode == 2, res.stderr
    assert 'pip install ".[tensorrt-cu12]"' in res.stderr and "NVIDIA GPU" in res.stderr
    assert "No engine was built" in res.stderr
    assert "trtexec --onnx=" in res.stderr and "--optShapes=image:8x3x64x64" in res.stderr
    assert "TensorRT 11" in res.stderr and '"tensorrt-cu12>=10,<11"' in res.stderr  # pip resolves to 11
    assert "engine:" not in res.stdout and "manifest:" not in res.stdout
    assert not out.exists() and not out.parent.exists()
    assert res.stderr.rstrip().endswith("TORCH_IMPORT_ATTEMPTS=")


def test_bad_onnx_is_reported_before_tensorrt(tmp_path: Path) -> None:
    res = _run_blocked("--onnx", str(tmp_path / "missing.onnx"), "--precision", "fp16", "--output",
                       str(tmp_path / "x.engine"))
    assert res.returncode == 2 and "missing.onnx: no such ONNX file" in res.stderr  # ExitCode.USAGE
    assert "TensorRT is not installed" not in res.stderr  # says which: the input, not TensorRT


def _args(tmp_path: Path, *extra: str, onnx_kwargs: dict | None = None) -> tuple[object, object]:
    onnx_path = fx.write_model(tmp_path / "model.onnx", **(onnx_kwargs or {}))
    args = build.build_parser().parse_args(["--onnx", str(onnx_path), "--output", str(tmp_path / "x.engine"), *extra])
    return args, build.analyse_onnx(onnx_path)


def _plan(tmp_path: Path, *extra: str, target: str | None = None, onnx_kwargs: dict | None = None) -> bp.BuildPlan:
    from rfnet.export.trt.targets import load_target

    args, facts = _args(tmp_path, *extra, onnx_kwargs=onnx_kwargs)
    return build.make_plan(args, load_target(TARGETS / target) if target else None, facts)  # type: ignore[arg-type]


def test_shapes_from_batch_preset_and_explicit(tmp_path: Path) -> None:
    p = _plan(tmp_path)
    assert p.min_shape == p.opt_shape == p.max_shape == (1, 3, 64, 64) and p.precision == "fp16"
    p = _plan(tmp_path, "--batch", "4")
    assert p.max_shape == (4, 3, 64, 64) and not p.dynamic
    p = _plan(tmp_path, target="datacenter-fp16.toml")
    assert (p.min_shape[0], p.opt_shape[0], p.max_shape[0]) == (1, 8, 8)
    assert p.workspace_bytes == 4 << 30
    p = _plan(tmp_path, "--batch", "2", "--workspace-gb", "0.5", target="datacenter-fp16.toml")  # CLI wins
    assert p.max_shape[0] == 2 and p.workspace_bytes == 1 << 29
    p = _plan(tmp_path, "--min", "1x3x64x64", "--opt", "image:2x3x64x64", "--max", "4x3x64x64")
    assert (p.opt_shape, p.max_shape) == ((2, 3, 64, 64), (4, 3, 64, 64)) and p.dynamic


@pytest.mark.parametrize(
    "extra,needle",
    [
        (("--min", "1x3x64x64"), "--min, --opt and --max must be given together"),
        (("--min", "1x3x64x64", "--opt", "1x3x32x32", "--max", "1x3x64x64"), "fixes it to 64"),
        (("--min", "2x3x64x64", "--opt", "1x3x64x64", "--max", "4x3x64x64"), "min <= opt <= max"),
        (("--min", "1x3x64", "--opt", "1x3x64", "--max", "1x3x64"), "has rank 3"),
        (("--min", "foo:1x3x64x64", "--opt", "1x3x64x64", "--max", "1x3x64x64"), "names input 'foo'"),
        (("--batch", "0"), "--batch must be >= 1"),
        (("--precision", "fp32", "--dla-core", "0"), "DLA runs only FP16 or INT8"),
        (("--min", "1x3x64x64", "--opt", "1x3x64x64", "--max", "2x3x64x64", "--dla-core", "0"), "static shapes"),
        (("--precision", "int8",), "needs calibration"),
        (("--workspace-gb", "0"), "--workspace-gb"),
    ],
)
def test_plan_errors(tmp_path: Path, extra: tuple[str, ...], needle: str) -> None:
    with pytest.raises(bp.PlanError) as ei:
        _plan(tmp_path, *extra)
    assert needle in str(ei.value)


def test_static_onnx_batch_is_enforced(tmp_path: Path) -> None:
    with pytest.raises(bp.PlanError, match="dimension 0 is 4"):
        _plan(tmp_path, "--batch", "4", onnx_kwargs={"batch_dim": 1})


def test_precision_vs_graph(tmp_path: Path) -> None:
    with pytest.raises(bp.PlanError, match="quantized"):
        _plan(tmp_path, "--precision", "fp16", onnx_kwargs={"qdq": True})
    p = _plan(tmp_path, "--precision", "int8", onnx_kwargs={"qdq": True})  # Q/DQ: no calibration needed
    assert not p.implicit_int8 and p.calib_set is None and p.calib_cache is None
    with pytest.raises(bp.PlanError, match="FP32 ONNX"):
        _plan(tmp_path, "--precision", "fp32", onnx_kwargs={"fp16": True})


def test_int8_calibration_options(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    cal = tmp_path / "cal"
    cal.mkdir()
    for i in range(4):
        cv2.imwrite(str(cal / f"{i}.png"), np.full((50, 70, 3), 40 * i, np.uint8))
    from rfnet.export.calibration import CalibrationDataError

    with pytest.raises(CalibrationDataError, match="fewer than one calibration batch of 8"):  # preset calib_batch
        _plan(tmp_path, "--precision", "int8", "--calib-dir", str(cal), target="datacenter-int8.toml")
    p = _plan(tmp_path, "--precision", "int8", "--calib-dir", str(cal), "--calib-batch", "2")
    assert p.implicit_int8 and p.calib_set is not None and p.calib_set.num_batches == 2 and p.calib_set.shape == (2, 3, 64, 64)
    assert p.calib_cache == tmp_path / "x.calib.cache"
    p.calib_cache.write_bytes(b"cache")
    with pytest.raises(bp.PlanError, match="calibration cache exists; pass --overwrite"):
        _plan(tmp_path, "--precision", "int8", "--calib-dir", str(cal), "--calib-batch", "2")
    p = _plan(tmp_path, "--precision", "int8")  # reuse the existing cache
    assert p.calib_set is None and p.calib_cache == tmp_path / "x.calib.cache"
    # Min-max calibrator unless asked otherwise; DLA needs entropy 2 whatever is asked.
    assert p.calib_method == "minmax" and p.calibrator_algorithm == "minmax"
    assert _plan(tmp_path, "--precision", "int8", "--calib-method", "entropy").calibrator_algorithm == "entropy2"
    p.dla_core = 0
    assert p.calibrator_algorithm == "entropy2"


def test_static_batch_onnx_fixes_the_calibration_batch(tmp_path: Path) -> None:
    """Defect 1: the batch comes from the ONNX input; --calib-batch / a preset's calib_batch are checked."""
    cal = tmp_path / "cal"
    _calib_images(cal, 3)
    p = _plan(tmp_path, "--precision", "int8", "--calib-dir", str(cal), onnx_kwargs={"batch_dim": 1})
    assert p.calib_set is not None and p.calib_set.batch_size == 1 and p.calib_set.num_batches == 3
    with pytest.raises(bp.PlanError, match=r"--calib-batch = 2, but .*static batch of 1"):
        _plan(tmp_path, "--precision", "int8", "--calib-dir", str(cal), "--calib-batch", "2",
              onnx_kwargs={"batch_dim": 1})
    preset = tmp_path / "orin-int8.toml"
    preset.write_text('description = "x"\nprecision = "int8"\nbatch = { min = 1, opt = 1, max = 1 }\ncalib_batch = 8\n')
    from rfnet.export.trt.targets import load_target

    args, facts = _args(tmp_path, "--calib-dir", str(cal), onnx_kwargs={"batch_dim": 1})
    with pytest.raises(bp.PlanError, match=r"calib_batch of preset .*orin-int8.toml = 8"):
        build.make_plan(args, load_target(preset), facts)  # type: ignore[arg-type]
    from rfnet.export.calibration import CalibrationDataError

    with pytest.raises(CalibrationDataError, match="fewer than one calibration batch of 8"):  # dynamic: default 8
        _plan(tmp_path, "--precision", "int8", "--calib-dir", str(cal))


def _calib_images(folder: Path, n: int) -> None:
    import cv2
    import numpy as np

    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((50, 70, 3), 40 * i, np.uint8))


def test_trtexec_commands(tmp_path: Path) -> None:
    p = _plan(tmp_path, target="datacenter-fp16.toml")
    cmd = bp.trtexec_command(p, strongly_typed=False)
    assert cmd.startswith(f"trtexec --onnx={tmp_path / 'model.onnx'} --saveEngine={tmp_path / 'x.engine'} --fp16 ")
    assert "--minShapes=image:1x3x64x64 --optShapes=image:8x3x64x64 --maxShapes=image:8x3x64x64" in cmd
    assert "--memPoolSize=workspace:4096" in cmd
    strong = bp.trtexec_command(p, strongly_typed=True)
    assert "--stronglyTyped" in strong and "--fp16" not in strong
    p = _plan(tmp_path, "--timing-cache", "t.timing", target="jetson-agx-orin-int8-dla.toml",
              onnx_kwargs={"qdq": True})
    cmd = bp.trtexec_command(p, strongly_typed=False)
    assert "--int8 --fp16" in cmd and "--useDLACore=0 --allowGPUFallback" in cmd
    assert "--timingCacheFile=t.timing" in cmd and "--calib" not in cmd
    (tmp_path / "x.calib.cache").write_bytes(b"c")
    p = _plan(tmp_path, "--precision", "int8", "--calib-method", "entropy")
    assert f"--calib={tmp_path / 'x.calib.cache'}" in bp.trtexec_command(p, strongly_typed=False)
    assert bp.trtexec_notes(p, strongly_typed=False) == []


def test_trtexec_gets_no_minmax_cache(tmp_path: Path) -> None:
    """trtexec's --calib feeds its IInt8EntropyCalibrator2, which refuses a MinMax cache (and then
    uses placeholder scales): the printed line leaves --calib out for MinMax and the note says why."""
    (tmp_path / "x.calib.cache").write_bytes(b"c")
    p = _plan(tmp_path, "--precision", "int8")  # --calib-method minmax, the default
    assert p.calibrator_algorithm == "minmax" and "--calib" not in bp.trtexec_command(p, strongly_typed=False)
    (note,) = bp.trtexec_notes(p, strongly_typed=False)
    assert "IInt8EntropyCalibrator2" in note and "--calib-method entropy" in note


def test_trtexec_line_for_static_models_and_missing_caches(tmp_path: Path) -> None:
    """Defect 3: trtexec refuses shapes for a static model; it cannot read a cache that does not exist yet."""
    p = _plan(tmp_path, "--precision", "fp16", target="jetson-orin-nano.toml", onnx_kwargs={"batch_dim": 1})
    cmd = bp.trtexec_command(p, strongly_typed=False)
    assert "Shapes" not in cmd and cmd.endswith("--fp16 --memPoolSize=workspace:1024")
    cal = tmp_path / "cal"
    _calib_images(cal, 2)
    p = _plan(tmp_path, "--precision", "int8", "--calib-dir", str(cal), "--calib-method", "entropy",
              onnx_kwargs={"batch_dim": 1})
    assert "--calib" not in bp.trtexec_command(p, strongly_typed=False)
    (note,) = bp.trtexec_notes(p, strongly_typed=False)
    assert "x.calib.cache does not exist yet" in note and "--calib-dir" in note


def test_strong_typing_picks_the_fp16_sibling(tmp_path: Path) -> None:
    p = _plan(tmp_path, "--precision", "fp16")
    _, facts = _args(tmp_path)
    with pytest.raises(bp.PlanError, match="export/fp16.py"):
        build._pick_for_strong_typing(p, facts)  # type: ignore[arg-type]
    fx.write_model(tmp_path / "model_fp16.onnx", fp16=True)
    picked = build._pick_for_strong_typing(p, facts)  # type: ignore[arg-type]
    assert picked.path == tmp_path / "model_fp16.onnx" and picked.graph.is_fp16


def test_existing_output_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path = fx.write_model(tmp_path / "m.onnx")
    (tmp_path / "x.engine").write_bytes(b"old")
    rc = build.main(["--onnx", str(onnx_path), "--output", str(tmp_path / "x.engine")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "x.engine").read_bytes() == b"old"


def _fake_tensorrt_install(monkeypatch: pytest.MonkeyPatch, line: str) -> list[bp.BuildPlan]:
    """TensorRT ``line`` (a stub-pinned stand-in module) and a GPU; build_engine records its plan."""
    from rfnet.export.trt import cuda_device, trt_builder
    from rfnet.export.onnx_tools.graph_checks import PluginCheckResult
    from tests.support.trt_stubs import fake_tensorrt

    trt = fake_tensorrt(line)
    monkeypatch.setattr(trt_builder, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(cuda_device, "gpu_info", lambda device=0: cuda_device.GpuInfo("H100", "9.0", "test"))
    plans: list[bp.BuildPlan] = []

    def fake_build(plan: bp.BuildPlan) -> trt_builder.BuildResult:
        plans.append(plan)
        return trt_builder.BuildResult(
            engine=memoryview(b"engine"), tensorrt_version=trt.__version__, strongly_typed=line == "11",
            inputs=[{"name": "image", "shape": [-1, 3, 64, 64], "dtype": "float32"}],
            outputs=[{"name": "pooled", "shape": [3, 4, 7, 7], "dtype": "float32"}], builder_flags=[], network_flags=[],
            plugin_check=PluginCheckResult(matched={n: n for n in plan.roialign_nodes}), build_time_s=1.0,
            plugin_unverified=list(plan.roialign_nodes) if line == "10" else [])

    monkeypatch.setattr(trt_builder, "build_engine", fake_build)
    return plans


def test_tensorrt11_int8_builds_the_qdq_sibling_without_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect 2: TensorRT 11 has no calibrators; --precision int8 on model.onnx takes model_int8.onnx."""
    onnx_path = fx.write_model(tmp_path / "model.onnx")
    fx.write_model(tmp_path / "model_int8.onnx", qdq=True)
    plans = _fake_tensorrt_install(monkeypatch, "11")
    rc = build.main(["--onnx", str(onnx_path), "--precision", "int8", "--output", str(tmp_path / "m.engine")])
    assert rc == 0, capsys.readouterr().err
    (plan,) = plans
    assert plan.onnx_path == tmp_path / "model_int8.onnx" and not plan.implicit_int8 and plan.calib_cache is None
    # TensorRT 10 with the same command: calibration is required, and the message says how to get it
    plans = _fake_tensorrt_install(monkeypatch, "10")
    rc = build.main(["--onnx", str(onnx_path), "--precision", "int8", "--output", str(tmp_path / "n.engine")])
    assert rc == 2 and plans == [] and "needs calibration on TensorRT 8.6/10.x" in capsys.readouterr().err


def test_build_output_says_when_the_plugin_was_not_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect 5: on TensorRT 10.1-10.3 the plugin name is unreadable; the build output says so plainly."""
    onnx_path = fx.write_model(tmp_path / "model.onnx")
    _fake_tensorrt_install(monkeypatch, "10")
    assert build.main(["--onnx", str(onnx_path), "--output", str(tmp_path / "m.engine")]) == 0
    out = capsys.readouterr().out
    assert "RoiAlign -> ROIAlign_TRT: 2/2 nodes" in out
    assert "NOT verified by plugin name: /roi_heads/pool/RoiAlign_p2, /roi_heads/pool/RoiAlign_p3" in out


def test_failed_build_exits_1_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from rfnet.export.trt import trt_builder

    onnx_path = fx.write_model(tmp_path / "model.onnx")
    _fake_tensorrt_install(monkeypatch, "10")

    def refuse(plan: bp.BuildPlan) -> trt_builder.BuildResult:
        raise trt_builder.BuildError(f"TensorRT 10.13 failed to build {plan.onnx_path}")

    monkeypatch.setattr(trt_builder, "build_engine", refuse)
    assert build.main(["--onnx", str(onnx_path), "--output", str(tmp_path / "m.engine")]) == 1  # ExitCode.FAILED
    assert "failed to build" in capsys.readouterr().err and not (tmp_path / "m.engine").exists()


def test_build_does_not_need_pycuda_when_cuda_python_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU identity and calibration buffers come from cuda-python; PyCUDA is never imported then."""
    from rfnet.export.trt import cuda_device
    from tests.support.fake_cudart import FakeCudart

    rt = FakeCudart(
        cudaGetDeviceCount=lambda: rt.ok(1),
        cudaGetDeviceProperties=lambda dev: rt.ok(type("Prop", (), {"name": b"NVIDIA H100\0\0"})()),
        cudaDeviceGetAttribute=lambda attr, dev: rt.ok(9 if "Major" in attr.name else 0),
        cudaMalloc=lambda n: rt.ok(0xBEEF), cudaMemcpy=lambda dst, src, n, kind: rt.ok(), cudaFree=lambda p: rt.ok(),
    )
    monkeypatch.setattr(cuda_device, "_cudart", lambda: rt)
    monkeypatch.setitem(sys.modules, "pycuda", None)  # importing pycuda now raises ImportError
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    assert cuda_device.gpu_info() == cuda_device.GpuInfo("NVIDIA H100", "9.0", "cuda-python")
    import numpy as np

    with cuda_device.DeviceBuffer(16) as buf:
        buf.copy_from_host(np.zeros(4, np.float32))
    assert [c[0] for c in rt.calls][-3:] == ["cudaMalloc", "cudaMemcpy", "cudaFree"]


def test_cuda_13_bindings_on_a_cuda_12_driver_fall_back_to_pycuda(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """cuda-python answering cudaErrorInsufficientDriver (its runtime is newer than the driver: a
    CUDA 13 cuda-bindings on a 535-570 server) is passed over for PyCUDA, for the GPU's identity and
    for calibration buffers; with no PyCUDA either, the error names the extras to install."""
    import logging
    import types

    import numpy as np

    from rfnet.export.trt import cuda_device
    from tests.support.fake_cudart import FakeCudart

    rt = FakeCudart(cudaGetDeviceCount=lambda: rt.error("cudaErrorInsufficientDriver", 0))
    monkeypatch.setattr(cuda_device, "_cudart", lambda: rt)
    allocs: list[int] = []

    class Alloc(int):
        def free(self) -> None:
            allocs.append(-1)

    drv = types.SimpleNamespace(
        Device=lambda i: types.SimpleNamespace(compute_capability=lambda: (8, 9), name=lambda: "NVIDIA L4"),
        mem_alloc=lambda n: (allocs.append(n), Alloc(0x1000))[1], memcpy_htod=lambda dst, src: None)
    monkeypatch.setattr(cuda_device, "_pycuda", lambda: drv)
    with caplog.at_level(logging.WARNING):
        assert cuda_device.gpu_info() == cuda_device.GpuInfo("NVIDIA L4", "8.9", "pycuda")
    assert "cudaErrorInsufficientDriver" in caplog.text and "tensorrt-cu12" in caplog.text
    with cuda_device.DeviceBuffer(16) as buf:
        buf.copy_from_host(np.zeros(4, np.float32))
    assert allocs == [16, -1] and [c[0] for c in rt.calls] == ["cudaGetDeviceCount", "cudaGetDeviceCount"]
    monkeypatch.setattr(cuda_device, "_pycuda", lambda: None)
    with pytest.raises(cuda_device.CudaUnavailableError, match=r"tensorrt-cu12.*tensorrt-cu13.*jetson"):
        cuda_device.gpu_info()


def test_extras_pick_the_cuda_major_and_the_jetson_extra_installs_no_tensorrt() -> None:
    """setup.cfg: [tensorrt-cu12] and [jetson] stay below CUDA 13 (cuda-python < 13, TensorRT's cu12
    wheels), [tensorrt-cu13] is the CUDA 13 set, [jetson] brings no TensorRT wheel (JetPack's is
    used), and the old [tensorrt] name is the CUDA 12 set."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    extras = {k: [ln.strip() for ln in v.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
              for k, v in cfg["options.extras_require"].items()}
    cu12, cu13, jetson = extras["tensorrt-cu12"], extras["tensorrt-cu13"], extras["jetson"]
    assert any(r.startswith("tensorrt-cu12>=10.0,<12") for r in cu12) and "cuda-python>=12,<13" in cu12
    assert any(r.startswith("tensorrt-cu13>=11.0,<12") for r in cu13) and "cuda-python>=13,<14" in cu13
    assert not any(r.startswith("tensorrt") for r in jetson) and "cuda-python>=12,<13" in jetson
    assert extras["tensorrt"] == ["rfnet-trt[tensorrt-cu12]"]
    assert all(";" in r for r in cu12 + cu13 if r.startswith("tensorrt"))  # environment markers


def test_main_writes_engine_and_manifest_with_a_stand_in_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writing path (atomic engine, manifest fields, printed trtexec) with TensorRT faked out."""
    from rfnet.export.trt import cuda_device, trt_builder
    from rfnet.export.onnx_tools.graph_checks import PluginCheckResult
    from rfnet.runtime.manifest import check_compatible, check_engine_file, load_manifest

    onnx_path = fx.write_model(tmp_path / "m.onnx")
    from tests.support.trt_stubs import fake_tensorrt

    monkeypatch.setattr(trt_builder, "import_tensorrt", lambda: fake_tensorrt("10", version="10.3.0"))
    monkeypatch.setattr(cuda_device, "gpu_info", lambda device=0: cuda_device.GpuInfo("Orin", "8.7", "test"))

    def fake_build(plan: bp.BuildPlan) -> trt_builder.BuildResult:
        assert plan.roialign_nodes == ["/roi_heads/pool/RoiAlign_p2", "/roi_heads/pool/RoiAlign_p3"]
        return trt_builder.BuildResult(
            engine=memoryview(b"not-a-real-engine"), tensorrt_version="10.3.0", strongly_typed=False,
            inputs=[{"name": "image", "shape": [-1, 3, 64, 64], "dtype": "float32"}],
            outputs=[{"name": "pooled", "shape": [3, 4, 7, 7], "dtype": "float32"}],
            builder_flags=["FP16"], network_flags=[],
            plugin_check=PluginCheckResult(matched={n: n for n in plan.roialign_nodes}),
            build_time_s=1.5, layer_placement=None,
        )

    monkeypatch.setattr(trt_builder, "build_engine", fake_build)
    engine = tmp_path / "engines" / "orin.engine"
    rc = build.main(["--onnx", str(onnx_path), "--output", str(engine),
                     "--target", str(TARGETS / "jetson-orin-nano.toml")])
    out = capsys.readouterr().out
    assert rc == 0
    assert engine.read_bytes() == b"not-a-real-engine"
    m = load_manifest(engine)
    check_engine_file(engine, m)
    check_compatible(m, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")
    assert m["precision"] == "fp16" and m["build_flags"]["workspace_bytes"] == 1 << 30
    assert m["profiles"] == {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}}
    assert (m["preset"], m["input_size"], m["mask_size"], m["top_k"]) == ("light", 64, 56, 10)
    assert m["onnx_sha256"] and m["calibration"] is None and m["dla_core"] is None
    assert "build_flags" in m and m["build_flags"]["trtexec"].startswith("trtexec ")
    assert "RoiAlign -> ROIAlign_TRT: 2/2 nodes" in out and "equivalent trtexec command" in out
    assert json.loads((tmp_path / "engines" / "orin.engine.json").read_text())["engine_file"] == "orin.engine"
    assert sorted(p.name for p in engine.parent.iterdir()) == ["orin.engine", "orin.engine.json"]  # no temp files


def test_a_batch_the_graph_cannot_select_per_image_is_refused_before_tensorrt(tmp_path: Path) -> None:
    """A graph whose NMS takes the whole batch as one list (boxes [1, B x N, 4], as exports before
    the per-image selection were) overflows TensorRT's 5000 boxes per batch item from some batch:
    export/build.py refuses the plan with exit 2, naming the node and the limit, before TensorRT is
    imported (so it runs here). The per-image graph (boxes [B, N, 4]) passes the check."""
    from rfnet.export.onnx_tools.graph_checks import batch_limit_issues

    merged = fx.make_model(nms="merged")
    (err,) = batch_limit_issues(merged, 2)
    assert "'/rpn/NonMaxSuppression' gets 8192 boxes per batch item at batch 2" in err and "5000" in err
    assert batch_limit_issues(merged, 1) == [] and batch_limit_issues(fx.make_model(nms="per_image"), 8) == []
    for kind, refused in (("merged", True), ("per_image", False)):
        path = fx.write_model(tmp_path / f"{kind}.onnx", nms=kind)
        res = _run_blocked("--onnx", str(path), "--precision", "fp16", "--output", str(tmp_path / f"{kind}.engine"),
                           "--target", str(TARGETS / "datacenter-fp16.toml"))  # batch 1..8
        assert res.returncode == 2 and ("NonMaxSuppression" in res.stderr) is refused, res.stderr
        assert ("TensorRT is not installed" in res.stderr or "No engine was built" in res.stderr) is not refused
