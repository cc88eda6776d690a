"""One RoiAlign check (rfnet.export.onnx_tools.graph_checks.roialign_attribute_issues) for export and build.

An export must not pass what ``export/build.py`` later rejects: both call the same function,
and the exporter adds the model config's sampling ratios.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from rfnet.export import build
from rfnet.export.onnx_tools.graph_checks import GraphCheckError, gridsample_attribute_issues, roialign_attribute_issues
from tests.support import trt_onnx as fx


def test_sampling_ratio_must_be_the_configs() -> None:
    model = fx.make_model(sampling_ratio=2)
    assert roialign_attribute_issues(model, {2}) == ([], [])
    errors, _ = roialign_attribute_issues(model, {4})
    assert len(errors) == 2 and "sampling_ratio=2, the model config uses [4]" in errors[0]


@pytest.mark.parametrize("kwargs", [{"sampling_ratio": None}, {"ctm": "output_half_pixel"}, {"opset": 11}])
def test_export_and_build_reject_the_same_graphs(kwargs: dict, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from rfnet.export.export_onnx import contract_problems

    model = fx.make_model(**kwargs)
    cfg = fx.light_config()
    cfg.input.size = fx.SIZE
    export_problems = contract_problems(model, cfg, batch=None)
    path = fx.write_model(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(GraphCheckError) as info:
        build.analyse_onnx(path)
    errors, _ = roialign_attribute_issues(model)
    assert errors and all(e in export_problems and e in str(info.value) for e in errors)


@pytest.mark.parametrize(("opset", "attrs", "problem"), [
    (17, {"mode": "bilinear", "padding_mode": "border", "align_corners": 0}, None),
    (20, {"mode": "linear", "padding_mode": "border", "align_corners": 0}, "samples anything else as nearest"),
    (17, {"mode": "bilinear", "padding_mode": "mirror", "align_corners": 0}, "padding_mode='mirror'"),
])
def test_gridsample_modes_tensorrt_reads_differently_are_refused_by_export_and_build(
        opset: int, attrs: dict, problem: str | None, tmp_path: Path) -> None:
    """Opset 20 renames GridSample's "bilinear" to "linear", which onnx-tensorrt's importer samples
    as nearest: the export check and the build check both refuse it, naming the node."""
    pytest.importorskip("torch")
    from rfnet.export.export_onnx import contract_problems

    model = fx.make_model(opset=opset, gridsample=attrs)
    errors = gridsample_attribute_issues(model)
    cfg = fx.light_config()
    cfg.input.size = fx.SIZE
    path = fx.write_model(tmp_path / "m.onnx", opset=opset, gridsample=attrs)
    if problem is None:
        assert errors == []
        build.analyse_onnx(path)
        return
    assert len(errors) == 1 and problem in errors[0] and "/mask_head/GridSample" in errors[0]
    assert errors[0] in contract_problems(model, cfg, batch=None)
    with pytest.raises(GraphCheckError, match="GridSample"):
        build.analyse_onnx(path)
