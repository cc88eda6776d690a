"""The deployment contract: metadata writer and parser, manifest fields, output check."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rfnet.common.contract import (
    KEY_CROP_MARGIN,
    KEY_FP16,
    KEY_GRADING_LIMITS,
    KEY_MASK_BOX_SCALE,
    KEY_MIN_DISC_SCORE,
    KEY_QUANTIZATION,
    KEY_REFERRAL_VCDR,
    KEY_VCDR_EXPERT_SCALE,
    MANIFEST_REQUIRED_FIELDS,
    REQUIRED_KEYS,
    ContractError,
    MetadataError,
    ModelMetadata,
    check_outputs,
    metadata_from_backend,
    metadata_from_manifest,
    parse_metadata,
)
from rfnet.config import DEFAULT_MIN_DISC_SCORE, get_preset
from rfnet.metadata import config_from_metadata, metadata_from_config
from tests.support.layout import source_files

REPO = Path(__file__).resolve().parents[3]


def _meta(**changes: object) -> ModelMetadata:
    cfg = get_preset("light")
    cfg.mask_head.box_scale = 1.15
    cfg.roi_heads.detections_per_img = 3
    cfg.grading.min_disc_score = 0.4
    meta = metadata_from_config(cfg, precision="fp16", checkpoint_sha256="ab" * 32, exporter={"opset": "17"})
    return ModelMetadata(**{**meta.__dict__, **changes})  # type: ignore[arg-type]


def test_writer_and_parser_round_trip() -> None:
    meta = _meta(extra={KEY_QUANTIZATION: json.dumps({"method": "minmax"})})
    strings = meta.to_strings()
    assert all(isinstance(v, str) for v in strings.values())
    assert set(REQUIRED_KEYS) | {KEY_MASK_BOX_SCALE, KEY_MIN_DISC_SCORE, KEY_VCDR_EXPERT_SCALE,
                                 KEY_GRADING_LIMITS, KEY_REFERRAL_VCDR, KEY_CROP_MARGIN, KEY_QUANTIZATION} == set(strings)
    assert strings[KEY_GRADING_LIMITS] == "{}" and strings[KEY_REFERRAL_VCDR] == "null"  # the defaults
    assert strings[KEY_VCDR_EXPERT_SCALE] == "null"  # not fitted
    assert strings[KEY_MASK_BOX_SCALE] == "1.15" and strings["rfnet.top_k"] == "3"
    assert strings[KEY_MIN_DISC_SCORE] == "0.4"
    back = parse_metadata({**strings, "other.key": "kept out"}, "m.onnx")
    assert back == meta
    assert config_from_metadata(back).mask_head.box_scale == 1.15 and back.input_config().size == 512
    # the engine manifest carries the deployment fields, parsed by the same checks
    fields = meta.deploy_fields()
    assert set(MANIFEST_REQUIRED_FIELDS) <= set(fields) and fields["mask_box_scale"] == 1.15
    assert fields["min_disc_score"] == 0.4 and "min_disc_score" not in MANIFEST_REQUIRED_FIELDS
    from_manifest = metadata_from_backend({"format": "rfnet-engine-manifest", **fields}, "x.engine")
    assert from_manifest.deploy_fields() == fields and from_manifest.config == {}


def test_grading_limits_and_referral_round_trip_and_are_checked() -> None:
    """rfnet.grading_limits and rfnet.referral_vcdr (a model's calibrated verdict and referral
    threshold) go through the one writer and parser; absent, a model has the defaults; a bad
    value is a MetadataError naming the key."""
    from dataclasses import replace

    meta = replace(_meta(), grading_limits={"max_disc_fraction": 0.98, "min_disc_contrast": 1.02},
                   referral_vcdr=0.61)
    strings = meta.to_strings()
    back = parse_metadata(strings, "m.onnx")
    assert back.grading_limits == {"max_disc_fraction": 0.98, "min_disc_contrast": 1.02} and back.referral_vcdr == 0.61
    assert metadata_from_backend({"format": "rfnet-engine-manifest", **meta.deploy_fields()}, "e").referral_vcdr == 0.61
    old = dict(strings)
    del old[KEY_GRADING_LIMITS], old[KEY_REFERRAL_VCDR]
    assert parse_metadata(old, "old.onnx").grading_limits == {} and parse_metadata(old, "old.onnx").referral_vcdr is None
    for key, bad, match in ((KEY_GRADING_LIMITS, '{"max_disc_size": 1}', "unknown grading limits"),
                            (KEY_GRADING_LIMITS, '{"min_disc_contrast": -1}', ">= 0"),
                            (KEY_REFERRAL_VCDR, "1.5", r"\[0, 1\)")):
        with pytest.raises(MetadataError, match=match):
            parse_metadata({**strings, key: bad}, "m.onnx")


def test_old_exports_without_mask_box_scale_mean_one() -> None:
    strings = _meta().to_strings()
    del strings[KEY_MASK_BOX_SCALE]
    assert parse_metadata(strings, "old.onnx").mask_box_scale == 1.0
    fields = _meta().deploy_fields()
    del fields["mask_box_scale"]
    assert metadata_from_manifest(fields, "old.engine").mask_box_scale == 1.0


def test_crop_margin_round_trips_reaches_the_input_config_and_old_exports_mean_one() -> None:
    cfg = get_preset("light")
    cfg.input.crop_margin = 1.5
    meta = metadata_from_config(cfg, precision="fp32")
    strings = meta.to_strings()
    assert strings[KEY_CROP_MARGIN] == "1.5"
    back = parse_metadata(strings, "m.onnx")
    assert back.crop_margin == 1.5 and back.input_config().crop_margin == 1.5
    assert metadata_from_manifest(meta.deploy_fields(), "m.engine").crop_margin == 1.5
    del strings[KEY_CROP_MARGIN]
    assert parse_metadata(strings, "old.onnx").crop_margin == 1.0
    for bad in ("0.5", "true", '"1.5"', "null"):
        with pytest.raises(MetadataError, match="'rfnet.crop_margin' must be a finite number >= 1"):
            parse_metadata({**strings, KEY_CROP_MARGIN: bad}, "bad.onnx")


def test_vcdr_expert_scale_round_trips_and_old_exports_have_none() -> None:
    meta = _meta(vcdr_expert_scale=(0.86, 0.14))
    strings = meta.to_strings()
    assert json.loads(strings[KEY_VCDR_EXPERT_SCALE]) == [0.86, 0.14]
    assert parse_metadata(strings, "m.onnx").vcdr_expert_scale == (0.86, 0.14)
    assert metadata_from_manifest(meta.deploy_fields(), "m.engine").vcdr_expert_scale == (0.86, 0.14)
    del strings[KEY_VCDR_EXPERT_SCALE]
    assert parse_metadata(strings, "old.onnx").vcdr_expert_scale is None
    for bad in ("[1]", "[1, \"x\"]", "0.5", "[1, NaN]"):
        with pytest.raises(MetadataError, match="'rfnet.vcdr_expert_scale' must be null or a list of 2"):
            parse_metadata({**strings, KEY_VCDR_EXPERT_SCALE: bad}, "bad.onnx")


def test_old_exports_without_min_disc_score_get_the_documented_default() -> None:
    strings = _meta().to_strings()
    del strings[KEY_MIN_DISC_SCORE]
    assert parse_metadata(strings, "old.onnx").min_disc_score == DEFAULT_MIN_DISC_SCORE
    fields = _meta().deploy_fields()
    del fields["min_disc_score"]
    assert metadata_from_manifest(fields, "old.engine").min_disc_score == DEFAULT_MIN_DISC_SCORE


@pytest.mark.parametrize(("key", "value", "message"), [
    ("rfnet.input_size", "0", "'rfnet.input_size' must be a positive integer"),
    ("rfnet.top_k", "2.5", "'rfnet.top_k' must be a positive integer"),
    ("rfnet.mean", "[1, 2]", "'rfnet.mean' must be a list of 3 numbers"),
    ("rfnet.std", "[1, 0, 1]", "'rfnet.std' must be 3 positive numbers"),
    ("rfnet.precision", "bf16", "'rfnet.precision' must be one of"),
    ("rfnet.class_names", '["cup", "disc"]', "mask channels are ['cup', 'disc']"),
    ("rfnet.mask_box_scale", "-1", "'rfnet.mask_box_scale' must be a positive number"),
    ("rfnet.min_disc_score", "1.5", "'rfnet.min_disc_score' must be a number in [0, 1)"),
    ("rfnet.min_disc_score", "true", "'rfnet.min_disc_score' must be a number in [0, 1)"),
    ("rfnet.config", "[]", "'rfnet.config' must be a JSON object"),
    ("rfnet.mask_size", "{", "'rfnet.mask_size' is not valid JSON"),
])
def test_parser_names_the_model_the_key_and_the_problem(key: str, value: str, message: str) -> None:
    with pytest.raises(MetadataError, match=re.escape("m.onnx: ") + ".*" + re.escape(message)):
        parse_metadata({**_meta().to_strings(), key: value}, "m.onnx")


def test_missing_keys_are_listed() -> None:
    strings = _meta().to_strings()
    del strings["rfnet.std"], strings["rfnet.top_k"]
    with pytest.raises(MetadataError, match=r"m.onnx: missing RF-Net metadata \['rfnet.std', 'rfnet.top_k'\]"):
        parse_metadata(strings, "m.onnx")
    assert isinstance(MetadataError("x"), ValueError)


def test_check_outputs() -> None:
    meta = _meta()
    k, m = meta.top_k, meta.mask_size
    good = {"boxes": np.zeros((2, k, 4)), "scores": np.zeros((2, k)), "masks": np.zeros((2, k, 2, m, m))}
    boxes, scores, masks = check_outputs(good, 2, meta)
    assert boxes.dtype == scores.dtype == masks.dtype == np.float32
    with pytest.raises(ContractError, match=r"output scores has shape \[2, 4\], expected \[2, 3\]"):
        check_outputs({**good, "scores": np.zeros((2, k + 1))}, 2, meta)
    with pytest.raises(ContractError, match=r"output masks has shape .* expected \[2, 3, 2, 56, 56\]"):
        check_outputs({**good, "masks": np.zeros((2, k, 2, 28, 28))}, 2, meta)
    with pytest.raises(ContractError, match=r"lack \['masks'\]"):
        check_outputs({"boxes": good["boxes"], "scores": good["scores"]}, 2, meta)
    with pytest.raises(ContractError, match="output boxes has shape"):
        check_outputs(good, 3, meta)
    check_outputs(good, 2)  # without metadata: only the shapes' consistency


def test_contract_names_are_defined_once() -> None:
    """grep: each contract name and metadata key string is defined in rfnet/common/contract.py only."""
    files = source_files()
    sources = {p.relative_to(REPO).as_posix(): p.read_text() for p in files + list(REPO.glob("*.py"))}
    for pattern in (r"^\s*OUTPUT_NAMES\b.*=", r"^\s*PRECISIONS\b.*=", r"^\s*INPUT_NAME\b.*=",
                    *(re.escape(f'"{k}"') for k in (*REQUIRED_KEYS, KEY_MASK_BOX_SCALE, KEY_MIN_DISC_SCORE, KEY_QUANTIZATION,
                                                        KEY_FP16))):
        where = [p for p, text in sources.items() if re.search(pattern, text, re.M)]
        assert where == ["rfnet/common/contract.py"], (pattern, where)


def test_the_contract_does_not_depend_on_the_training_config() -> None:
    """contract.py imports from rfnet.config only the input settings and constants it needs; the
    bridge to the full ModelConfig is rfnet.metadata."""
    import ast
    import inspect

    import rfnet.common.contract as contract

    imported = {a.name for node in ast.walk(ast.parse(inspect.getsource(contract)))
                if isinstance(node, ast.ImportFrom) and node.module == "rfnet.config" for a in node.names}
    assert imported == {"CLASS_NAMES", "DEFAULT_MIN_DISC_SCORE", "InputConfig"}
