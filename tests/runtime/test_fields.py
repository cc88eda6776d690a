"""runtime/fields.py: one definition of the result fields for results.csv and the server's outputs."""
from __future__ import annotations

import numpy as np
import pytest

from rfnet.common.gradability import GRADABLE, Grade, ImageQuality
from rfnet.common.metrics import cdr_report
from rfnet.common.postprocess import Segmentation
from rfnet.common.segment import SegmentedImage
from rfnet.runtime.fields import (FIELD_NAMES, RESULT_FIELDS, empty_fields, fields_from_outputs, fields_to_arrays,
                            format_fields, result_fields)
from rfnet.runtime.outputs import CSV_COLUMNS
from rfnet.runtime.serving import output_specs

CDR = ("vcdr", "vcdr_extent", "hcdr", "area_cdr")


def core_result(gradable: bool = True) -> SegmentedImage:
    """A gradable result, or the same segmentation judged not gradable (then the core computes no CDR)."""
    disc = np.zeros((40, 60), bool)
    disc[10:31, 20:45] = True
    cup = np.zeros_like(disc)
    cup[15:24, 28:37] = True
    seg = Segmentation(disc, cup, np.array([19.6, 9.55, 45.25, 31.004], np.float32), 0.8765432,
                       cup_fallback=True)
    quality = ImageQuality(40, 60, 200.0, 30.0)
    if gradable:
        return SegmentedImage(seg, GRADABLE, cdr_report(disc, cup), quality)
    return SegmentedImage(seg, Grade(False, "image_too_small", "the short side, 40 px, is below 256 px"), None,
                          quality)


def test_csv_columns_and_server_outputs_come_from_the_field_table() -> None:
    # results.csv as runtime/infer.py has written it since the verdict (vcdr_expert added after the
    # columns it had, then the referral): the free-text message last
    assert CSV_COLUMNS == ("name", "file", "gradable", "reason", "vcdr", "vcdr_extent", "hcdr", "area_cdr", "disc_x0",
                           "disc_y0", "disc_x1", "disc_y1", "score", "disc_found", "cup_low_confidence", "vcdr_expert",
                           "refer", "latency_ms", "message")
    assert set(CSV_COLUMNS) == {"name", "file", "latency_ms", *FIELD_NAMES}
    names = [n for n, _ in output_specs()]
    assert names[: len(FIELD_NAMES)] == list(FIELD_NAMES)
    assert {"disc_mask", "cup_mask", "latency_ms", "error"} <= set(names)


def test_values_and_text() -> None:
    r = core_result()
    values = result_fields(r)
    assert list(values) == list(FIELD_NAMES)
    assert values["vcdr"] == pytest.approx(r.cdr["vcdr"]) and isinstance(values["disc_found"], int)
    text = format_fields(values)
    assert text["disc_x0"] == "19.60" and text["score"] == "0.876543"
    assert text["disc_found"] == "1" and text["cup_low_confidence"] == "1"
    assert text["vcdr"] == f"{r.cdr['vcdr']:.6f}"


def test_not_gradable_has_the_verdict_and_no_cdr() -> None:
    values = result_fields(core_result(gradable=False))
    assert (values["gradable"], values["reason"]) == (0, "image_too_small") and "256 px" in str(values["message"])
    assert all(values[k] is None for k in CDR)
    text = format_fields(values)
    assert all(text[k] == "" for k in CDR) and text["gradable"] == "0" and text["score"] == "0.876543"
    ok = format_fields(result_fields(core_result()))
    assert (ok["gradable"], ok["reason"], ok["message"]) == ("1", "", "")


def test_wire_round_trip_gives_the_same_text() -> None:
    """What the server sends (fields_to_arrays) and the client reads back (fields_from_outputs)
    formats to exactly the text runtime/infer.py writes for the same core result."""
    rows = [result_fields(core_result()), result_fields(core_result(gradable=False)), empty_fields()]
    arrays = fields_to_arrays(rows)
    assert np.isnan(arrays["vcdr"][1, 0]) and bytes(arrays["reason"][1, 0]) == b"image_too_small"
    for f in RESULT_FIELDS:
        assert arrays[f.name].shape == (3, 1)
    for i, row in enumerate(rows):
        back = fields_from_outputs(arrays.get, i)
        assert format_fields(back) == format_fields(row)
    # a server from before the verdict sends no gradable / reason / message: refused, not read as gradable
    with pytest.raises(ValueError, match="lacks the field 'gradable'"):
        fields_from_outputs(lambda name: None if name in ("gradable", "reason", "message") else arrays[name])


def test_a_missing_value_is_an_empty_cell_and_nan_on_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CDR that must not be reported (a non-gradable image) is empty in results.csv, not 0."""
    values = {**result_fields(core_result()), "vcdr": None}
    assert format_fields(values)["vcdr"] == ""
    arrays = fields_to_arrays([values])
    assert np.isnan(arrays["vcdr"][0, 0])
    assert fields_from_outputs(arrays.get)["vcdr"] is None
    assert format_fields(fields_from_outputs(arrays.get)) == format_fields(values)
