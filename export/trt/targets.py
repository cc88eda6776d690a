"""Engine build presets: ``engines/targets/*.toml`` (torch-free, TensorRT-free).

A preset fixes the build settings that belong to a deployment target (precision, batch range,
workspace, DLA core); ``export/build.py --target FILE`` starts from it and any option given on
the command line wins. Keys (all optional except ``precision``)::

    description = "Jetson Orin Nano 8 GB: FP16, batch 1, small workspace"
    precision = "fp16"                      # fp32 | fp16 | int8
    workspace_gb = 1.0                      # builder workspace pool limit
    batch = { min = 1, opt = 1, max = 1 }   # optimisation profile of the batch dimension
    dla_core = 0                            # Jetson DLA core; GPU fallback is always enabled
    calib_batch = 8                         # images per INT8 calibration batch
    compute_capability = "8.7"              # expected GPU; build.py warns on another one

TOML is read with :mod:`tomllib` (Python >= 3.11) or the ``tomli`` backport on 3.10.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfnet.export.errors import ExportError
from rfnet.common.contract import PRECISIONS

_KEYS = {"description", "precision", "workspace_gb", "batch", "dla_core", "calib_batch", "compute_capability"}


class TargetError(ExportError, ValueError):
    """The preset file is missing or invalid; the message names the file and the key."""


@dataclass(frozen=True)
class BatchRange:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class Target:
    """One parsed preset."""

    name: str  # file stem, e.g. "jetson-orin-nano"
    path: Path
    description: str
    precision: str
    workspace_gb: float | None = None
    batch: BatchRange | None = None
    dla_core: int | None = None
    calib_batch: int | None = None
    compute_capability: str | None = None


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib as toml_mod  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10 only
        try:
            import tomli as toml_mod  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise TargetError(f"{path}: reading TOML on Python 3.10 needs `pip install tomli`") from None
    try:
        with open(path, "rb") as fh:
            return toml_mod.load(fh)
    except FileNotFoundError:
        raise TargetError(f"{path}: no such preset file (see engines/targets/)") from None
    except toml_mod.TOMLDecodeError as exc:
        raise TargetError(f"{path}: not valid TOML: {exc}") from exc


def _pos_int(data: dict[str, Any], key: str, where: str, *, minimum: int = 1) -> int | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TargetError(f"{where}: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_target(data: dict[str, Any], path: str | os.PathLike[str]) -> Target:
    """Validate the TOML mapping ``data`` read from ``path``."""
    p = Path(path)
    where = str(p)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise TargetError(f"{where}: unknown keys {unknown}; known keys: {sorted(_KEYS)}")
    precision = data.get("precision")
    if precision not in PRECISIONS:
        raise TargetError(f"{where}: 'precision' must be one of {list(PRECISIONS)}, got {precision!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise TargetError(f"{where}: 'description' must be a string")
    ws = data.get("workspace_gb")
    if ws is not None and (isinstance(ws, bool) or not isinstance(ws, (int, float)) or not 0 < ws <= 1024):
        raise TargetError(f"{where}: 'workspace_gb' must be a number in (0, 1024], got {ws!r}")
    batch = None
    if "batch" in data:
        b = data["batch"]
        if not isinstance(b, dict) or set(b) != {"min", "opt", "max"}:
            raise TargetError(f"{where}: 'batch' must be a table {{ min = .., opt = .., max = .. }}, got {b!r}")
        vals = [_pos_int(b, k, f"{where}: batch") for k in ("min", "opt", "max")]
        lo, opt, hi = (int(v) for v in vals if v is not None)
        if not lo <= opt <= hi:
            raise TargetError(f"{where}: batch needs min <= opt <= max, got {lo}/{opt}/{hi}")
        batch = BatchRange(lo, opt, hi)
    dla = _pos_int(data, "dla_core", where, minimum=0)
    if dla is not None:
        if precision == "fp32":
            raise TargetError(f"{where}: DLA runs only FP16 or INT8, not fp32")
        if batch is not None and batch.min != batch.max:
            raise TargetError(f"{where}: DLA needs a static batch (min == opt == max)")
    cc = data.get("compute_capability")
    if cc is not None and not (isinstance(cc, str) and re.fullmatch(r"\d+\.\d+", cc)):
        raise TargetError(f"{where}: 'compute_capability' must look like \"8.7\", got {cc!r}")
    return Target(
        name=p.stem,
        path=p,
        description=description,
        precision=precision,
        workspace_gb=float(ws) if ws is not None else None,
        batch=batch,
        dla_core=dla,
        calib_batch=_pos_int(data, "calib_batch", where),
        compute_capability=cc,
    )


def load_target(path: str | os.PathLike[str]) -> Target:
    """Read and validate one preset file (:class:`TargetError` naming the file otherwise)."""
    p = Path(path)
    return parse_target(_load_toml(p), p)


def list_targets(folder: str | os.PathLike[str]) -> list[Target]:
    """All presets ``*.toml`` in ``folder``, sorted by name."""
    return [load_target(p) for p in sorted(Path(folder).glob("*.toml"))]
