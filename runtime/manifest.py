"""Engine manifest: the JSON record written beside every TensorRT engine (torch-free, TensorRT-free).

A serialized TensorRT engine only loads on the TensorRT version and the GPU model it was built
with; loading it elsewhere fails with an opaque deserialisation error (or, across GPU models with
the same compute capability, works with a warning and possibly poor tactics). ``export/build.py``
therefore writes ``X.engine.json`` beside ``X.engine`` and the runtime calls
:func:`check_compatible` *before* deserialising, so the user gets a message that says what
differs and how to fix it (rebuild on this machine).

Fields (see docs/design.md "Engine manifest"): ``format``, ``format_version``, ``engine_file``,
``engine_sha256``, ``tensorrt_version``, ``gpu_name``, ``compute_capability`` ("8.7"),
``precision``, ``strongly_typed``, ``inputs``/``outputs`` (lists of ``{name, shape, dtype}``;
``-1`` marks a dynamic dimension), ``profiles`` (``{input: {min, opt, max}}``), ``onnx_file``,
``onnx_sha256``, ``calibration`` (``{cache_sha256, data_sha256, num_images}`` or null),
``build_flags``, ``dla_core``, ``layer_placement`` (``{"gpu": n, "dla": n}`` or null),
``build_time_s``, ``created_utc`` and the deployment fields copied from the ONNX metadata
(``preset``, ``input_size``, ``mean``, ``std``, ``mask_size``, ``top_k``, ``class_names``,
``precision``, ``mask_box_scale`` (absent in manifests written before it existed: 1.0) and
``min_disc_score`` (absent before it existed: ``rfnet.config.DEFAULT_MIN_DISC_SCORE``), the
verdict's ``grading_limits``, ``vcdr_expert_scale``, ``referral_vcdr`` and ``crop_margin`` (absent: 1);
:meth:`rfnet.common.contract.ModelMetadata.deploy_fields` writes them,
:func:`rfnet.common.contract.metadata_from_manifest` reads them).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

from rfnet.common.contract import MANIFEST_FORMAT, MANIFEST_REQUIRED_FIELDS, PRECISIONS
from rfnet.common.fileio import atomic_write_json
from rfnet.runtime.errors import DeploymentError

logger = logging.getLogger(__name__)

FORMAT = MANIFEST_FORMAT
FORMAT_VERSION = 1

#: Every manifest has these keys (values may be null where the field says so).
REQUIRED_FIELDS: tuple[str, ...] = (
    "format",
    "format_version",
    "engine_file",
    "engine_sha256",
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "strongly_typed",
    "inputs",
    "outputs",
    "profiles",
    "onnx_file",
    "onnx_sha256",
    "calibration",
    "build_flags",
    "dla_core",
    "layer_placement",
    "build_time_s",
    "created_utc",
    # the deployment fields of the ONNX metadata; ``precision`` is the engine's
    *MANIFEST_REQUIRED_FIELDS,
)

_REBUILD_HINT = (
    "TensorRT engines only load on the TensorRT version and GPU model they were built with: "
    "rebuild it on this machine with `python export/build.py --onnx MODEL.onnx --precision ... "
    "--output {engine}`"
)


class ManifestError(DeploymentError, ValueError):
    """The manifest is missing or invalid; the message names the file and the problem."""


class ManifestMismatchError(ManifestError):
    """The engine was built for another TensorRT version or GPU than the one it runs on."""


def manifest_path(engine: str | os.PathLike[str]) -> Path:
    """``X.engine`` -> ``X.engine.json`` (the manifest lives beside the engine)."""
    p = Path(engine)
    return p.with_name(p.name + ".json")


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed (engines and ONNX files can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_tensor_list(value: Any, key: str) -> list[str]:
    problems: list[str] = []
    if not isinstance(value, list) or not value:
        return [f"{key!r} must be a non-empty list of {{name, shape, dtype}}"]
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            problems.append(f"{key}[{i}] must be an object")
            continue
        if not isinstance(t.get("name"), str) or not t.get("name"):
            problems.append(f"{key}[{i}].name must be a non-empty string")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            problems.append(f"{key}[{i}].shape must be a list of integers (-1 = dynamic)")
        if not isinstance(t.get("dtype"), str):
            problems.append(f"{key}[{i}].dtype must be a string")
    return problems


def validate_manifest(manifest: Mapping[str, Any], source: str = "manifest") -> None:
    """Raise :class:`ManifestError` listing every problem (missing keys, wrong types)."""
    if not isinstance(manifest, Mapping):
        raise ManifestError(f"{source}: expected a JSON object, got {type(manifest).__name__}")
    problems: list[str] = []
    missing = [k for k in REQUIRED_FIELDS if k not in manifest]
    if missing:
        problems.append(f"missing fields {missing}")
    if manifest.get("format", FORMAT) != FORMAT:
        problems.append(f"'format' is {manifest.get('format')!r}, expected {FORMAT!r}")
    fv = manifest.get("format_version", FORMAT_VERSION)
    if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
        problems.append(f"'format_version' must be a positive integer, got {fv!r}")
    elif fv > FORMAT_VERSION:
        problems.append(
            f"'format_version' {fv} is newer than this runtime understands ({FORMAT_VERSION}); update rfnet-trt"
        )
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "engine_file"):
        if key in manifest and not isinstance(manifest[key], str):
            problems.append(f"{key!r} must be a string, got {type(manifest[key]).__name__}")
    cc = manifest.get("compute_capability")
    if isinstance(cc, str) and not re.fullmatch(r"\d+\.\d+", cc):
        problems.append(f"'compute_capability' must look like '8.7', got {cc!r}")
    if "precision" in manifest and manifest["precision"] not in PRECISIONS:
        problems.append(f"'precision' must be one of {list(PRECISIONS)}, got {manifest['precision']!r}")
    if "strongly_typed" in manifest and not isinstance(manifest["strongly_typed"], bool):
        problems.append("'strongly_typed' must be true or false")
    for key in ("inputs", "outputs"):
        if key in manifest:
            problems.extend(_check_tensor_list(manifest[key], key))
    if "profiles" in manifest and not isinstance(manifest["profiles"], dict):
        problems.append("'profiles' must be an object {input: {min, opt, max}}")
    cal = manifest.get("calibration")
    if cal is not None and not (isinstance(cal, dict) and {"cache_sha256", "data_sha256", "num_images"} <= set(cal)):
        problems.append("'calibration' must be null or {cache_sha256, data_sha256, num_images}")
    lp = manifest.get("layer_placement")
    if lp is not None and not (isinstance(lp, dict) and {"gpu", "dla"} <= set(lp)):
        problems.append("'layer_placement' must be null or {gpu: n, dla: n}")
    dla = manifest.get("dla_core")
    if dla is not None and (not isinstance(dla, int) or isinstance(dla, bool) or dla < 0):
        problems.append(f"'dla_core' must be null or a non-negative integer, got {dla!r}")
    if problems:
        raise ManifestError(f"{source}: invalid engine manifest: " + "; ".join(problems))


def write_manifest(engine: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Validate and atomically write ``manifest`` to :func:`manifest_path` (``engine``); return that path.

    ``format``/``format_version``/``engine_file`` are filled in when absent.
    """
    data = dict(manifest)
    data.setdefault("format", FORMAT)
    data.setdefault("format_version", FORMAT_VERSION)
    data.setdefault("engine_file", Path(engine).name)
    path = manifest_path(engine)
    validate_manifest(data, str(path))
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: manifest is not plain JSON: {exc}") from exc
    atomic_write_json(path, data)
    logger.debug("wrote engine manifest %s", path)
    return path


def load_manifest(engine: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the manifest of ``engine`` (``ManifestError`` naming the file otherwise)."""
    path = manifest_path(engine)
    if not path.is_file():
        raise ManifestError(
            f"{path}: engine manifest not found; every engine needs the JSON that export/build.py "
            f"writes beside it (rebuild {Path(engine).name} with export/build.py)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read engine manifest: {exc}") from exc
    validate_manifest(data, str(path))
    return dict(data)


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> (10, 3, 0, 30); ``"8.6.1.post1"`` -> (8, 6, 1): numeric release parts only."""
    parts: list[int] = []
    for piece in str(version).strip().split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def _same_tensorrt(built: str, running: str) -> bool:
    """Engines are tied to the exact TensorRT release: compare every numeric part both strings have.

    At least major.minor.patch must be present on both sides; a 4th (build) part is compared
    when both give it (``tensorrt.__version__`` sometimes omits it).
    """
    a, b = _version_tuple(built), _version_tuple(running)
    if len(a) < 3 or len(b) < 3:
        return str(built).strip() == str(running).strip()
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _norm_gpu(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def check_compatible(
    manifest: Mapping[str, Any],
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    engine: str | os.PathLike[str] | None = None,
) -> None:
    """Raise :class:`ManifestMismatchError` unless the engine was built for this TensorRT and GPU.

    Compares the TensorRT release (numeric parts), the compute capability and the GPU name
    (case/whitespace-insensitive). ``engine`` only improves the message.
    """
    what = str(engine) if engine is not None else str(manifest.get("engine_file", "engine"))
    diffs: list[str] = []
    built_trt = str(manifest.get("tensorrt_version", "?"))
    if not _same_tensorrt(built_trt, tensorrt_version):
        diffs.append(f"TensorRT {built_trt} (engine) vs {tensorrt_version} (this machine)")
    built_cc = str(manifest.get("compute_capability", "?"))
    if built_cc.strip() != str(compute_capability).strip():
        diffs.append(f"compute capability {built_cc} (engine) vs {compute_capability} (this GPU)")
    built_gpu = str(manifest.get("gpu_name", "?"))
    if _norm_gpu(built_gpu) != _norm_gpu(gpu_name):
        diffs.append(f"GPU {built_gpu!r} (engine) vs {gpu_name!r} (this machine)")
    if diffs:
        raise ManifestMismatchError(
            f"{what}: engine does not match this machine: " + "; ".join(diffs) + ". "
            + _REBUILD_HINT.format(engine=what)
        )


def check_engine_file(engine: str | os.PathLike[str], manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestMismatchError` if ``engine``'s bytes are not the ones the manifest describes.

    Catches a manifest left over from an earlier build (or an engine copied without its manifest).
    """
    p = Path(engine)
    expected = manifest.get("engine_sha256")
    actual = sha256_file(p)
    if expected != actual:
        raise ManifestMismatchError(
            f"{p}: engine file does not match its manifest {manifest_path(p)} "
            f"(sha256 {actual[:12]}... vs {str(expected)[:12]}... recorded); rebuild the engine with export/build.py"
        )
