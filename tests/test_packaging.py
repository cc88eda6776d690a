"""What ``pip install .`` puts in a user's site-packages: only the project's own top-level name,
``rfnet``; the repository's runtime/, export/ and benchmarks/ install as rfnet.runtime,
rfnet.export and rfnet.benchmarks (setup.cfg's package_dir), every module of them included."""
from __future__ import annotations

import configparser
import zipfile
from pathlib import Path

from tests.support.layout import REPO, module_name, package_dirs, source_files
from tests.support.wheel import build_wheel, top_level_names


def test_setup_cfg_lists_every_package_folder() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {module_name(p) for p in source_files() if p.name == "__init__.py"}
    assert listed == found
    assert set(package_dirs()) == {"rfnet", "rfnet.runtime", "rfnet.export", "rfnet.benchmarks"}


def test_the_wheel_installs_only_rfnet_and_every_module(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert top_level_names(names) == {"rfnet"}, sorted(top_level_names(names))
    expected = {module_name(p).replace(".", "/") + ("/__init__.py" if p.name == "__init__.py" else ".py")
                for p in source_files()}
    assert {"rfnet/runtime/infer.py", "rfnet/export/trt/trt_builder.py", "rfnet/benchmarks/bench.py"} <= expected
    assert sorted(expected - set(names)) == []
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "rfnet = rfnet.__main__:main" in entry_points
