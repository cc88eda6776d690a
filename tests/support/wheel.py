"""Build the project's wheel from a copy of the sources, offline (tests/test_packaging.py,
tests/runtime/test_base_install.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.layout import REPO

SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "rfnet", "export", "runtime", "benchmarks")


def run_clean(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` without the test environment's PYTHONPATH / VIRTUAL_ENV (nothing leads back to the checkout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)  # type: ignore[call-overload]


def build_wheel(tmp: Path) -> Path:
    """The rfnet-trt wheel built (no dependencies, no network, no build isolation) in ``tmp/dist``."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    proc = run_clean([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                      "--wheel-dir", str(tmp / "dist"), str(src)])
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp / "dist").glob("rfnet_trt-*.whl")
    return wheel


def top_level_names(files: list[str]) -> set[str]:
    """The importable top-level names among a distribution's installed files (``rfnet/x.py`` -> rfnet;
    dist-info, data folders, scripts and caches excluded)."""
    names = set()
    for name in files:
        first, _, rest = name.replace("\\", "/").partition("/")
        if first.endswith((".dist-info", ".data")) or first.startswith(("..", "__pycache__")):
            continue
        if rest or first.endswith(".py"):
            names.add(first.removesuffix(".py"))
    return names
