"""Engine presets engines/targets/*.toml and their parser (export/trt/targets.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rfnet.export.trt.targets import BatchRange, TargetError, list_targets, load_target

TARGETS = Path(__file__).resolve().parents[3] / "engines" / "targets"


def test_shipped_presets_parse_and_cover_the_issue() -> None:
    targets = {t.name: t for t in list_targets(TARGETS)}
    nano = targets["jetson-orin-nano"]
    assert nano.precision == "fp16" and nano.dla_core is None
    assert nano.workspace_gb is not None and nano.workspace_gb <= 1.0  # small workspace
    assert nano.batch == BatchRange(1, 1, 1)
    agx = targets["jetson-agx-orin-int8-dla"]
    assert agx.precision == "int8" and agx.dla_core == 0
    assert agx.batch is not None and agx.batch.min == agx.batch.max  # DLA needs static shapes
    for name, precision in (("datacenter-fp16", "fp16"), ("datacenter-int8", "int8")):
        t = targets[name]
        assert t.precision == precision
        assert t.batch is not None and t.batch.max == 8 and t.batch.min == 1
    assert all(t.description for t in targets.values())


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text,needle",
    [
        ('precision = "fp8"', "'precision'"),
        ('precision = "fp16"\nworkspace = 1', "unknown keys ['workspace']"),
        ('precision = "fp16"\nbatch = { min = 4, opt = 2, max = 8 }', "min <= opt <= max"),
        ('precision = "fp16"\nbatch = { min = 1, max = 8 }', "'batch' must be a table"),
        ('precision = "fp16"\nbatch = { min = 0, opt = 1, max = 1 }', "integer >= 1"),
        ('precision = "fp32"\ndla_core = 0', "DLA runs only FP16 or INT8"),
        ('precision = "int8"\ndla_core = 0\nbatch = { min = 1, opt = 1, max = 4 }', "static batch"),
        ('precision = "fp16"\nworkspace_gb = -1', "workspace_gb"),
        ('precision = "fp16"\ncompute_capability = 87', "compute_capability"),
        ("precision = ", "not valid TOML"),
    ],
)
def test_invalid_presets_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(TargetError) as ei:
        load_target(_write(tmp_path, text))
    assert needle in str(ei.value)
    assert "x.toml" in str(ei.value)


def test_missing_preset_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no such preset file"):
        load_target(tmp_path / "nope.toml")


def test_full_preset_values(tmp_path: Path) -> None:
    t = load_target(_write(tmp_path, (
        'description = "d"\nprecision = "int8"\nworkspace_gb = 2\nbatch = { min = 1, opt = 1, max = 1 }\n'
        'dla_core = 1\ncalib_batch = 4\ncompute_capability = "8.7"\n'
    )))
    assert (t.name, t.precision, t.workspace_gb, t.dla_core, t.calib_batch, t.compute_capability) == (
        "x", "int8", 2.0, 1, 4, "8.7"
    )
