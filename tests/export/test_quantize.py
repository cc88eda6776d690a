"""export/quantize.py: TensorRT-style INT8 Q/DQ model that ONNX Runtime runs (CPU, small model)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto, numpy_helper

from rfnet.export import quantize
from rfnet.export.onnx_tools import int8_eval
from rfnet.export.onnx_tools.onnx_inspect import head_compute_nodes, qdq_report, tail_compute_nodes
from rfnet.export.onnx_tools.onnx_meta import load_metadata
from rfnet.export.onnx_tools.compare import cpu_backend
from rfnet.errors import UsageError


@pytest.fixture(scope="module")
def int8_model(exported_onnx: tuple[Path, int, str], calib_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    import contextlib
    import io

    fp32, rc, _ = exported_onnx
    assert rc == 0
    out = tmp_path_factory.mktemp("int8") / "small_int8.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = quantize.main(["--onnx", str(fp32), "--calib-dir", str(calib_dir), "--output", str(out),
                            "--method", "minmax", "--num-images", "4", "--num-eval", "3", "--num-synthetic", "1",
                            "--fps-iters", "2",
                            # Untrained weights: agreement is not meaningful, only the mechanics are tested.
                            "--max-dice-drop", "1.0"])
    return out, rc, buf.getvalue()


def test_qdq_nodes_symmetric_int8_per_channel(int8_model: tuple[Path, int, str]) -> None:
    path, rc, stdout = int8_model
    assert rc == 0, stdout
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    rep = qdq_report(model)
    assert rep.num_quantize > 20 and rep.num_dequantize > rep.num_quantize
    assert rep.int8 and rep.symmetric  # what TensorRT accepts
    assert rep.per_channel_weights >= 30
    assert rep.int32_bias == 0  # biases stay float
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    # The mask head's last two layers stay float by default.
    assert "/mask_head/predictor/Conv" in rep.float_conv_nodes
    assert len(rep.quantized_nodes) > len(rep.float_conv_nodes)
    meta = load_metadata(path)
    assert meta.precision == "int8" and meta.input_size == 128 and "rfnet.quantization" in meta.extra
    # Polygraphy's view and the evaluation are printed.
    assert "Graph Input" in stdout and "custom-domain ops: none" in stdout
    assert "INT8 vs FP32 mask agreement Dice" in stdout and "model FPS" in stdout
    # Without --eval-*: judged on calibration images held out of the calibration, with their ground truth,
    # named, at the precision compared; the generated image is reported but does not gate.
    held_out = _held_out_names(stdout)
    assert len(held_out) == 2 and "2 calibration images held out of the calibration (ground truth from masks/)" in stdout
    assert re.search(r"INT8 Dice drop vs FP32: \d\.\d{6} <= 1\.000000 \(judged on: 2 calibration images", stdout)
    assert "synthetic images (information only, not gated)" in stdout and "(not gated)" in stdout


def test_roialign_and_detection_ops_stay_float(int8_model: tuple[Path, int, str]) -> None:
    path, rc, _ = int8_model
    assert rc == 0
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    roi = [n for n in model.graph.node if n.op_type == "RoiAlign"]
    assert len(roi) == 8
    for node in roi:
        # Features, rois and batch indices all arrive in float; the pooled features are not re-quantized.
        assert all(producers[i].op_type != "DequantizeLinear" for i in node.input if i in producers)
        assert all(c.op_type != "QuantizeLinear" for c in consumers.get(node.output[0], []))
    for node in model.graph.node:
        if node.op_type in ("NonMaxSuppression", "TopK", "Softmax", "Sigmoid"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input), node.name


def test_int8_model_runs(int8_model: tuple[Path, int, str], exported_onnx: tuple[Path, int, str]) -> None:
    path, rc, _ = int8_model
    assert rc == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    with cpu_backend(path, threads=1) as q, cpu_backend(exported_onnx[0], threads=1) as f:
        got = list(q.infer({"image": x}).values())
        ref = list(f.infer({"image": x}).values())
    k = load_metadata(path).top_k  # the export's K (1 by default)
    assert [g.shape for g in got] == [(1, k, 4), (1, k), (1, k, 2, 56, 56)]
    assert all(np.isfinite(g).all() for g in got)
    assert (got[1] > 0).any() and got[2].max() <= 1.0 and got[2].min() >= 0.0
    assert not np.array_equal(got[2], ref[2])  # it really is a different (quantized) model


def _ort_optimized(path: Path, tmp_path: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime's CPU provider actually runs (SessionOptions.optimized_model_filepath)."""
    import onnxruntime as ort

    out = tmp_path / f"{path.stem}_ort_optimized.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return onnx.load(str(out))


def _integer_kernel_report(opt: onnx.ModelProto) -> tuple[int, list[str], list[str]]:
    """(integer conv/gemm kernels, float conv-like nodes whose weights come from a DequantizeLinear,
    layout Transposes (4-D perm) that touch float data), in ONNX Runtime's optimised graph."""
    producers = {o: n for n in opt.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in opt.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    integer = sum(n.op_type in ("QLinearConv", "QGemm", "ConvInteger", "MatMulInteger", "QLinearMatMul")
                  for n in opt.graph.node)
    float_dq = [n.name for n in opt.graph.node if n.op_type in ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul")
                and len(n.input) > 1 and n.input[1] in producers and producers[n.input[1]].op_type == "DequantizeLinear"]
    eight_bit_in = ("QuantizeLinear", "QLinearConv", "QLinearAdd", "QLinearAveragePool", "MaxPool", "Transpose")
    eight_bit_out = ("QLinearConv", "DequantizeLinear", "QLinearAdd", "QLinearAveragePool", "MaxPool", "Transpose")
    float_transposes = []
    for n in opt.graph.node:
        perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), [])
        if n.op_type != "Transpose" or len(perm) != 4:
            continue
        src = producers.get(n.input[0])
        if src is None or src.op_type not in eight_bit_in or any(
                c.op_type not in eight_bit_out for c in consumers.get(n.output[0], [])):
            float_transposes.append(n.name)
    return integer, float_dq, float_transposes


def test_onnxruntime_target_runs_every_quantized_layer_on_integer_kernels(
        exported_onnx: tuple[Path, int, str], calib_dir: Path, tmp_path: Path) -> None:
    """--target onnxruntime: in ONNX Runtime's optimised graph every Conv/Gemm with INT8 weights is a
    QLinearConv/QGemm (none runs float behind a DequantizeLinear), and the only layout Transposes
    move 8-bit data at the edges of the integer regions. The TensorRT layout does not get there."""
    fp32, rc, _ = exported_onnx
    assert rc == 0
    paths = {}
    for target in ("onnxruntime", "tensorrt"):
        paths[target] = tmp_path / f"{target}.onnx"
        assert quantize.main(["--onnx", str(fp32), "--calib-dir", str(calib_dir), "--output", str(paths[target]),
                              "--target", target, "--num-images", "4", "--no-eval"]) == 0
    ort_model = onnx.load(str(paths["onnxruntime"]))
    rep = qdq_report(ort_model)
    assert not rep.int8 and len(rep.quantized_nodes) >= 30  # uint8 activations, int8 per-channel weights
    assert "onnxruntime" in load_metadata(paths["onnxruntime"]).extra["rfnet.quantization"]
    integer, float_dq, float_transposes = _integer_kernel_report(_ort_optimized(paths["onnxruntime"], tmp_path))
    assert float_dq == [] and float_transposes == []
    assert integer == len(rep.quantized_nodes)
    _, trt_float_dq, _ = _integer_kernel_report(_ort_optimized(paths["tensorrt"], tmp_path))
    assert len(trt_float_dq) >= 5  # the TensorRT layout leaves layers in float on this provider


def test_quantize_refuses_bad_inputs(exported_onnx: tuple[Path, int, str], tmp_path: Path) -> None:
    fp32 = exported_onnx[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert quantize.main(["--onnx", str(fp32), "--calib-dir", str(empty), "--output", str(tmp_path / "a.onnx")]) == 2
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"x")
    assert quantize.main(["--onnx", str(fp32), "--calib-dir", str(empty), "--output", str(existing)]) == 2
    assert existing.read_bytes() == b"x"
    assert quantize.main(["--onnx", str(tmp_path / "nope.onnx"), "--calib-dir", str(empty),
                          "--output", str(tmp_path / "b.onnx")]) == 2


def _toy_mask_graph() -> onnx.ModelProto:
    """x -> conv1 -> RoiAlign -> conv2 -> conv3 -> Sigmoid -> Mul(valid) -> masks; a score branch feeds valid."""
    w = lambda name, shape: numpy_helper.from_array(np.ones(shape, np.float32), name)  # noqa: E731
    nodes = [
        oh.make_node("Conv", ["x", "w1"], ["f"], name="backbone/conv1"),
        oh.make_node("RoiAlign", ["f", "rois", "bidx"], ["p"], name="pool", coordinate_transformation_mode="half_pixel",
                     sampling_ratio=2, output_height=4, output_width=4),
        oh.make_node("Conv", ["p", "w2"], ["h"], name="head/conv2"),
        oh.make_node("Conv", ["h", "w3"], ["logits"], name="head/predictor"),
        oh.make_node("Sigmoid", ["logits"], ["prob"], name="sig"),
        oh.make_node("Flatten", ["p"], ["pf"], name="flat"),
        oh.make_node("Gemm", ["pf", "wfc"], ["score"], name="box/cls", transB=1),
        oh.make_node("Greater", ["score", "zero"], ["valid_b"], name="gt"),
        oh.make_node("Cast", ["valid_b"], ["valid"], name="cast", to=TensorProto.FLOAT),
        oh.make_node("Mul", ["prob", "valid"], ["masks"], name="mul"),
    ]
    graph = oh.make_graph(
        nodes, "toy",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8]),
         oh.make_tensor_value_info("rois", TensorProto.FLOAT, [3, 4]),
         oh.make_tensor_value_info("bidx", TensorProto.INT64, [3])],
        [oh.make_tensor_value_info("masks", TensorProto.FLOAT, None)],
        [w("w1", (2, 2, 1, 1)), w("w2", (2, 2, 1, 1)), w("w3", (2, 2, 1, 1)), w("wfc", (1, 32)),
         numpy_helper.from_array(np.zeros((1,), np.float32), "zero")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_mask_tail_found_structurally() -> None:
    model = _toy_mask_graph()
    assert tail_compute_nodes(model, "masks", 1) == ["head/predictor"]
    # The walk ignores the validity branch (box/cls) and stops at RoiAlign (not backbone/conv1).
    assert tail_compute_nodes(model, "masks", 5) == ["head/predictor", "head/conv2"]
    assert quantize.nodes_kept_float(model, quantize.QuantizeOptions(float_mask_layers=0, float_input_layers=0)) == []
    opts = quantize.QuantizeOptions(float_mask_layers=1, float_input_layers=0, exclude_pattern="^backbone/")
    assert quantize.nodes_kept_float(model, opts) == ["backbone/conv1", "head/predictor"]
    with pytest.raises(ValueError, match="no such nodes"):
        quantize.nodes_kept_float(model, quantize.QuantizeOptions(exclude_nodes=("missing",)))
    # From the input side: the first conv-like layers in graph (execution) order.
    assert head_compute_nodes(model, 0) == []
    assert head_compute_nodes(model, 1) == ["backbone/conv1"]
    opts = quantize.QuantizeOptions(float_mask_layers=0, float_input_layers=1)
    assert quantize.nodes_kept_float(model, opts) == ["backbone/conv1"]


def _heavy_tail_model() -> onnx.ModelProto:
    """x [N,1,4,4] -> 1x1 Conv (weight 1) -> Relu -> y: the conv output is x itself."""
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "w"], ["c"], name="conv"), oh.make_node("Relu", ["c"], ["y"], name="relu")],
        "tail", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_entropy_calibration_clips_outliers_minmax_does_not(tmp_path: Path) -> None:
    """The 2048-bin KL search finds a threshold below a rare outlier; min-max keeps the full range.

    (quantize_static's own 128-bin 'entropy' returns the full range: the bug this guards against.)
    """
    model_path = tmp_path / "m.onnx"
    model = _heavy_tail_model()
    onnx.save(model, str(model_path))
    rng = np.random.default_rng(0)
    data = np.abs(rng.normal(0, 1, (64, 1, 4, 4))).astype(np.float32)
    data[0, 0, 0, 0] = 50.0  # one outlier in 1024 values
    ranges = {}
    for method in ("minmax", "entropy"):
        reader = quantize.ImageCalibrationReader(data, "x", 1)
        ranges[method] = quantize.calibrated_ranges(model, model_path, reader,
                                                    quantize.QuantizeOptions(method=method), tmp_path)
    assert ranges["minmax"]["y"][1] == pytest.approx(50.0)
    assert 2.0 < ranges["entropy"]["y"][1] < 25.0
    # The conv output (Relu input) shares the Relu output's range, so the pair folds into one scale.
    assert ranges["entropy"]["c"] == ranges["entropy"]["y"]


def test_narrow_layers_and_targets() -> None:
    from rfnet.export.onnx_tools.qdq_targets import narrow_layers

    model = _toy_mask_graph()  # 2-channel convs, a Gemm with 1 output (transB)
    assert narrow_layers(model, 0) == []
    assert narrow_layers(model, 2) == ["box/cls"]
    assert set(narrow_layers(model, 16)) == {"backbone/conv1", "head/conv2", "head/predictor", "box/cls"}
    ort = quantize.QuantizeOptions.for_target("onnxruntime", float_mask_layers=None, method="minmax")
    assert (ort.activations, ort.float_consumers, ort.min_int8_channels, ort.target) == ("uint8", "dequantized", 16,
                                                                                        "onnxruntime")
    assert "ConvTranspose" not in ort.op_types and ort.float_mask_layers == 2  # None keeps the default
    assert quantize.QuantizeOptions.for_target("tensorrt") == quantize.QuantizeOptions()
    with pytest.raises(UsageError, match="--target must be one of"):
        quantize.QuantizeOptions.for_target("tflite")


def _held_out_names(stdout: str) -> list[str]:
    """The names after "images:" of the first evaluation set printed."""
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith("images: "))
    return line.strip()[len("images: "):].split(", ")


def test_default_evaluation_holds_out_part_of_the_calibration_folder(calib_dir: Path, tmp_path: Path) -> None:
    from rfnet.common.imageio import list_images
    from rfnet.config import InputConfig
    from rfnet.data.splits import kfold_split

    stems = sorted(p.stem for p in list_images(calib_dir / "images"))
    args = quantize._parse_args(["--onnx", "m.onnx", "--calib-dir", str(calib_dir), "--output", "o.onnx"])
    (held,) = int8_eval.eval_sets(int8_eval.GateOptions.from_args(args))
    names = sorted(it.name for it in held.items)
    assert names == kfold_split(stems, 4, 0)[0][1] and held.gate and held.held_out  # 1/4 of 8, by name
    assert all(it.disc is not None and it.cup is not None for it in held.items)  # masks/ beside images/
    cset = quantize._calibration_set(args, InputConfig(size=128), 1, set(names))
    calibrated = sorted(p.stem for p in cset.paths)
    assert not set(calibrated) & set(names) and sorted(calibrated + names) == stems
    # a folder without masks: judged by INT8-vs-FP32 agreement; too few images: a clear error
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in list_images(calib_dir / "images"):
        (bare / p.name).write_bytes(p.read_bytes())
    args = quantize._parse_args(["--onnx", "m.onnx", "--calib-dir", str(bare), "--output", "o.onnx"])
    (held,) = int8_eval.eval_sets(int8_eval.GateOptions.from_args(args))
    assert "no ground truth: FP32 agreement" in held.title and all(it.disc is None for it in held.items)
    for p in sorted(bare.iterdir())[3:]:
        p.unlink()
    with pytest.raises(ValueError, match="too few to hold out"):
        int8_eval.eval_sets(int8_eval.GateOptions.from_args(
            quantize._parse_args(["--onnx", "m.onnx", "--calib-dir", str(bare), "--output", "o.onnx"])))


def test_eval_data_gates_each_dataset_on_its_own(tmp_path: Path) -> None:
    """--eval-data (as rfnet train --data), repeatable: one gated set per dataset, its held-out fold
    with --eval-fold (left out of the calibration); not together with --eval-dataset."""
    from rfnet.data.splits import kfold_split
    from rfnet.data.synthetic import generate_folder

    for name, seed in (("a", 1), ("b", 2)):
        generate_folder(tmp_path / name, n=6, size=64, seed=seed)
    base = ["--onnx", "m.onnx", "--calib-dir", str(tmp_path / "a"), "--output", "o.onnx"]
    args = quantize._parse_args([*base, "--eval-data", f"kind=folder,root={tmp_path / 'a'}",
                                 "--eval-data", f"folder:{tmp_path / 'b'}", "--eval-fold", "1", "--folds", "3"])
    sets = int8_eval.eval_sets(int8_eval.GateOptions.from_args(args))
    assert [s.title.split()[0] for s in sets] == ["folder", "folder"] and all(s.gate and s.held_out for s in sets)
    assert str(tmp_path / "b") in sets[1].title and "fold 1/3" in sets[1].title
    for s in sets:
        stems = sorted(p.stem for p in (Path(s.title.split()[1]) / "images").iterdir())
        assert sorted(it.name for it in s.items) == kfold_split(stems, 3, 0)[1][1]
        assert all(it.disc is not None for it in s.items)
    with pytest.raises(UsageError, match="not both"):
        int8_eval.eval_sets(int8_eval.GateOptions.from_args(quantize._parse_args(
            [*base, "--eval-data", f"folder:{tmp_path / 'a'}", "--eval-dataset", "folder", "--eval-root", "x"])))


def test_the_gate_prints_what_it_compares(exported_onnx: tuple[Path, int, str], calib_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    """No ground truth: judged by INT8-vs-FP32 agreement on the held-out images. The untrained
    model's INT8 masks differ from its FP32 masks, so a 0 allowance fails, saying by how much
    at the 6 decimals it compared."""
    from rfnet.common.imageio import list_images

    bare = tmp_path / "bare"
    bare.mkdir()
    for p in list_images(calib_dir / "images"):
        (bare / p.name).write_bytes(p.read_bytes())
    rc = quantize.main(["--onnx", str(exported_onnx[0]), "--calib-dir", str(bare), "--output",
                        str(tmp_path / "q.onnx"), "--num-images", "4", "--fps-iters", "1", "--max-dice-drop", "0"])
    stdout = capsys.readouterr().out
    drop = re.search(r"INT8 Dice drop vs FP32 \(1 - agreement\): (\d\.\d{6})", stdout)
    assert drop is not None and float(drop.group(1)) > 0, stdout
    assert rc == 1
    assert re.search(rf"INT8 loses {drop.group(1)} Dice vs FP32 \(> --max-dice-drop 0\.000000\) on 2 "
                     r"calibration images held out", caplog.text), caplog.text
