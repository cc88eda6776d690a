"""The eval path exports to ONNX with static output shapes and ONNX Runtime reproduces it.

Export call verified here (torch 2.14, torchvision 0.29, onnxruntime 1.32)::

    torch.onnx.export(model, (images,), path, opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["boxes", "scores", "masks"],
                      dynamic_axes=None | {name: {0: "batch"} for name in ("image", *outputs)})
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rfnet.config import ModelConfig, get_preset
from rfnet.model import OUTPUT_NAMES, build_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SIZE = 128


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg: ModelConfig = get_preset("light")
    cfg.input.size = SIZE
    cfg.roi_heads.detections_per_img = 3  # fewer mask RoIs: same graph, faster test
    model = build_model(cfg).eval()
    with torch.no_grad():  # spread the scores so that near-ties cannot reorder detections
        torch.nn.init.normal_(model.roi_heads.head.cls_score.weight, std=0.5)
        torch.nn.init.normal_(model.rpn.head.cls_logits.weight, std=0.5)
    return model


def _export(model: torch.nn.Module, path: Path, batch: int, dynamic: bool) -> None:
    axes = {name: {0: "batch"} for name in ("image", *OUTPUT_NAMES)} if dynamic else None
    torch.onnx.export(model, (torch.randn(batch, 3, SIZE, SIZE),), str(path), opset_version=17, dynamo=False,
                      input_names=["image"], output_names=list(OUTPUT_NAMES), dynamic_axes=axes)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


def _compare(model: torch.nn.Module, path: Path, batch: int) -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the test machines are small and shared: no spinning thread pool
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    images = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(images)
    got = dict(zip(OUTPUT_NAMES, sess.run(None, {"image": images.numpy()})))
    k = model.cfg.roi_heads.detections_per_img
    assert got["boxes"].shape == (batch, k, 4) and got["masks"].shape == (batch, k, 2, 56, 56)
    assert np.abs(got["masks"] - ref["masks"].numpy()).max() <= 1e-4
    assert np.abs(got["scores"] - ref["scores"].numpy()).max() <= 1e-4
    assert np.abs(got["boxes"] - ref["boxes"].numpy()).max() <= 1e-3
    assert (ref["scores"] > 0).sum() > 0  # there is something to compare


@pytest.mark.parametrize("batch", [1, 2])
def test_static_export_matches_onnxruntime(model: torch.nn.Module, tmp_path: Path, batch: int) -> None:
    path = tmp_path / f"rfnet_b{batch}.onnx"
    _export(model, path, batch, dynamic=False)
    graph = onnx.load(str(path)).graph
    k = model.cfg.roi_heads.detections_per_img
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert shapes == {"boxes": [batch, k, 4], "scores": [batch, k], "masks": [batch, k, 2, 56, 56]}
    ops = {n.op_type for n in graph.node}
    assert not ops & {"If", "Loop", "Scan"}, ops  # no control flow
    assert "NonMaxSuppression" in ops
    # The box head pools each proposal on its own level only: NonZero -> Gather -> RoiAlign per
    # level, no Where choosing among every-level results.
    assert sum(n.op_type == "NonZero" for n in graph.node) == 4
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    assert not [n.name for n in graph.node if n.op_type == "Where" and any(made_by.get(i) == "RoiAlign" for i in n.input)]
    roi = [n for n in graph.node if n.op_type == "RoiAlign"]
    assert len(roi) == 8  # box head: 4 levels; FFP: P2,P3 at 56 + P4,P5 at 28
    for node in roi:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["coordinate_transformation_mode"] == b"half_pixel"
        assert attrs["sampling_ratio"] == 2
        assert attrs.get("mode", b"avg") == b"avg"
    sizes = sorted({(a.i) for n in roi for a in n.attribute if a.name == "output_height"})
    assert sizes == [7, 28, 56]
    _compare(model, path, batch)


def test_dynamic_batch_export(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "rfnet_dyn.onnx"
    _export(model, path, 1, dynamic=True)
    for batch in (1, 2):
        _compare(model, path, batch)
