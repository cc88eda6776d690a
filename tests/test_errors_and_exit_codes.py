"""One base exception per package (all under rfnet.errors.RFNetError) and ExitCode in every CLI."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from rfnet.benchmarks.errors import BenchmarkError
from rfnet.export.errors import ExportError
from rfnet.errors import RFNetError
from rfnet.runtime.errors import DeploymentError
from tests.support.layout import module_name, source_files

REPO = Path(__file__).resolve().parents[1]
#: Modules whose errors may stand outside the tree (none).
PENDING: set[str] = set()
#: CLIs still returning literal exit codes (none).
PENDING_MAINS: set[str] = set()
TORCH_MODULES = ("rfnet.model", "rfnet.training", "rfnet.checkpoint", "rfnet.train", "rfnet.predict", "rfnet.evaluate",
                 "rfnet.summary", "rfnet.data.torch_dataset", "rfnet.export.export_onnx")


def _modules() -> list[str]:
    return [module_name(p) for p in source_files()]


def test_package_bases_share_one_root() -> None:
    for base in (ExportError, DeploymentError, BenchmarkError):
        assert issubclass(base, RFNetError)


def test_every_project_exception_derives_from_rfnet_error() -> None:
    has_torch = importlib.util.find_spec("torch") is not None
    checked, offenders = 0, []
    for name in _modules():
        if name in PENDING or (not has_torch and name.startswith(TORCH_MODULES)):
            continue
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                checked += 1
                if not issubclass(cls, RFNetError):
                    offenders.append(f"{name}.{cls_name}")
    assert checked >= 25 and offenders == []


def test_every_main_returns_exit_codes_from_the_table() -> None:
    mains, offenders = 0, []
    for p in [*source_files(), REPO / "demo.py"]:
        path, text = p.relative_to(REPO).as_posix(), p.read_text()
        if "def main(" not in text or path in PENDING_MAINS:
            continue
        mains += 1
        body = text[text.index("def main("):]
        if re.search(r"^\s+return\s+\d+\b", body, re.M) or "ExitCode" not in text:
            offenders.append(path)
    assert mains >= 10 and offenders == []
