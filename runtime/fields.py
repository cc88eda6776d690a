"""The per-image result fields, defined once for results.csv and the Triton server (torch-free).

:data:`RESULT_FIELDS` lists what a core result (:class:`rfnet.common.segment.SegmentedImage`)
is reported as, in column order: each field's name, its kind (``float``, ``int`` or ``str``),
how it is read from the core result and how it is written as text. Every consumer derives
from this table:

* ``runtime/infer.py`` (``rfnet.runtime.outputs.OutputWriter``): the results.csv columns after
  ``file`` (``latency_ms`` goes before the free-text ``message``, which stays last),
  formatted with :func:`format_fields`;
* ``runtime/serve.py``: one Triton output per field (``float`` -> FP64, ``int`` -> INT32,
  ``str`` -> BYTES, UTF-8), filled with :func:`result_fields`;
* ``runtime/client.py``: reads those outputs back (:func:`fields_from_outputs`) and writes the
  same results.csv rows with :func:`format_fields`.

A field added here (another ratio, another measure) appears in results.csv, in the
server's model configuration and in the client's CSV without touching any of them.
Values travel at full precision (FP64), so the text a client writes equals the text
``runtime/infer.py`` writes for the same core result. A ``float`` or ``str`` field may have no
value (``None``): an empty results.csv cell, NaN or an empty string on the wire. The CDR fields
of an image that is not gradable (:mod:`rfnet.common.gradability`: ``gradable`` 0, its
``reason`` and ``message``) have none, so no consumer can report a CDR for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, Union

import numpy as np

from rfnet.common.gradability import Grade
from rfnet.common.postprocess import Segmentation

Value = Union[float, int, str, None]


class CoreResult(Protocol):
    """What the fields are read from: :class:`rfnet.common.segment.SegmentedImage` (the core's
    result) or ``rfnet.runtime.pipeline.ImageResult``, which carries the same three."""

    @property
    def segmentation(self) -> Segmentation: ...

    @property
    def grade(self) -> Grade: ...

    @property
    def cdr(self) -> dict[str, float] | None: ...  # None when not gradable

#: Field kinds and their numpy dtypes on the wire (Triton FP64, INT32, BYTES).
KINDS: dict[str, Any] = {"float": np.float64, "int": np.int32, "str": np.object_}


@dataclass(frozen=True)
class ResultField:
    """One reported value of an image.

    Attributes:
        name: CSV column and Triton output name.
        kind: ``float``, ``int`` or ``str`` (see :data:`KINDS`).
        get: core result -> value.
        fmt: how the value is written in results.csv (``format(value, fmt)``).
        doc: what it means (README, server metadata).
    """

    name: str
    kind: str
    get: Callable[[CoreResult], Value]
    fmt: str
    doc: str


def _box(i: int) -> Callable[[CoreResult], Value]:
    return lambda r: float(np.asarray(r.segmentation.box, dtype=np.float64).reshape(4)[i])


def _cdr(key: str) -> Callable[[CoreResult], Value]:
    """A CDR, or no value when the image is not gradable (the core then computes none)."""
    return lambda r: None if r.cdr is None else float(r.cdr[key])


RESULT_FIELDS: tuple[ResultField, ...] = (
    ResultField("gradable", "int", lambda r: int(r.grade.gradable), "d",
                "1 when a CDR may be reported; 0: not gradable, the CDR fields have no value"),
    ResultField("reason", "str", lambda r: r.grade.reason, "s",
                "why not gradable (a reason code of rfnet.common.gradability), empty when gradable"),
    ResultField("vcdr", "float", _cdr("vcdr"), ".6f", "vertical CDR, REFUGE's definition (max column counts)"),
    ResultField("vcdr_extent", "float", _cdr("vcdr_extent"), ".6f", "vertical CDR from the masks' row extents"),
    ResultField("hcdr", "float", _cdr("hcdr"), ".6f", "horizontal CDR"),
    ResultField("area_cdr", "float", _cdr("area_cdr"), ".6f", "cup area / disc area"),
    ResultField("disc_x0", "float", _box(0), ".2f", "disc box left, original pixels"),
    ResultField("disc_y0", "float", _box(1), ".2f", "disc box top, original pixels"),
    ResultField("disc_x1", "float", _box(2), ".2f", "disc box right, original pixels"),
    ResultField("disc_y1", "float", _box(3), ".2f", "disc box bottom, original pixels"),
    ResultField("score", "float", lambda r: float(r.segmentation.score), ".6f", "disc detection score (0: none)"),
    ResultField("disc_found", "int", lambda r: int(r.segmentation.found), "d", "1 when a disc was segmented"),
    ResultField("cup_low_confidence", "int", lambda r: int(r.segmentation.cup_fallback), "d",
                "1 when the cup came from the relative fallback threshold (worth a second look)"),
    ResultField("vcdr_expert", "float", lambda r: None if r.cdr is None else r.cdr.get("vcdr_expert"), ".6f",
                "vertical CDR on the experts' scale (rfnet.vcdr_expert_scale: a line fitted on the training "
                "images' ground truth); no value when the model has none"),
    ResultField("refer", "float", lambda r: None if r.cdr is None else r.cdr.get("refer"), ".0f",
                "1: refer (glaucoma suspect: the vCDR, on the experts' scale where the model has one, reaches the "
                "model's rfnet.referral_vcdr), 0: do not; no value when not gradable or the model has no threshold"),
    ResultField("message", "str", lambda r: r.grade.message, "s", "why not gradable, for a person to read"),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in RESULT_FIELDS)


def result_fields(result: CoreResult) -> dict[str, Value]:
    """The value of every field of :data:`RESULT_FIELDS` for one core result, in order."""
    return {f.name: f.get(result) for f in RESULT_FIELDS}


def format_fields(values: Mapping[str, Value]) -> dict[str, str]:
    """Field values -> their results.csv text, "" for no value (KeyError names a missing field)."""
    out: dict[str, str] = {}
    for f in RESULT_FIELDS:
        v = _coerce(f, values[f.name])
        out[f.name] = "" if v is None else format(v, f.fmt)
    return out


def empty_fields() -> dict[str, Value]:
    """Placeholder values of a failed item: no value (NaN / "" on the wire), 0 for ``int`` fields."""
    return {f.name: 0 if f.kind == "int" else None for f in RESULT_FIELDS}


def fields_to_arrays(rows: Sequence[Mapping[str, Value]]) -> dict[str, np.ndarray]:
    """Rows of values -> one array [N,1] per field in its wire dtype (strings as UTF-8 bytes)."""
    out: dict[str, np.ndarray] = {}
    for f in RESULT_FIELDS:
        vals = [row[f.name] for row in rows]
        if f.kind == "str":
            out[f.name] = np.array([[("" if v is None else str(v)).encode("utf-8")] for v in vals], dtype=np.object_)
        elif f.kind == "float":
            out[f.name] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64).reshape(-1, 1)
        else:
            out[f.name] = np.array(vals, dtype=KINDS[f.kind]).reshape(-1, 1)
    return out


def fields_from_outputs(get: Callable[[str], np.ndarray | None], i: int = 0) -> dict[str, Value]:
    """Values of item ``i`` from output arrays ``get(name) -> [N,1]`` (a Triton client result's
    ``as_numpy``); a ValueError names a field the server did not send (an older server)."""
    values: dict[str, Value] = {}
    for f in RESULT_FIELDS:
        arr = get(f.name)
        if arr is None:
            raise ValueError(f"the server's answer lacks the field {f.name!r} (server older than this client?)")
        values[f.name] = _coerce(f, np.asarray(arr).reshape(-1)[i])
    return values


def _coerce(f: ResultField, v: Any) -> Value:
    """A value in the field's Python type; None stays None ("float": NaN from the wire is None)."""
    if v is None:
        if f.kind == "int":
            raise ValueError(f"field {f.name!r} (int) has no value")
        return None
    if f.kind == "str":
        return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)
    if f.kind == "int":
        return int(v)
    x = float(v)
    return None if np.isnan(x) else x
