"""Where the installed modules live in the repository (setup.cfg's ``package_dir``): the folders
runtime/, export/ and benchmarks/ install as rfnet.runtime, rfnet.export and rfnet.benchmarks."""
from __future__ import annotations

import configparser
import functools
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def package_dirs() -> dict[str, str]:
    """Top-level installed package -> repository folder: {"rfnet": "rfnet", "rfnet.runtime": "runtime", ...}."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    mapped = dict(line.split("=") for line in cfg["options"]["package_dir"].strip().splitlines())
    return {"rfnet": "rfnet", **{k.strip(): v.strip() for k, v in mapped.items()}}


def source_files() -> list[Path]:
    """Every .py file of the installed packages (each once)."""
    return sorted({p for folder in package_dirs().values() for p in (REPO / folder).rglob("*.py")})


def module_name(path: Path) -> str:
    """The installed dotted name of a repository file: runtime/backends/base.py -> rfnet.runtime.backends.base."""
    rel = path.resolve().relative_to(REPO)
    for package, folder in sorted(package_dirs().items(), key=lambda kv: -len(kv[1])):
        if rel.parts[0] == folder:
            parts = [package, *rel.with_suffix("").parts[1:]]
            name = ".".join(parts)
            return name[: -len(".__init__")] if name.endswith(".__init__") else name
    raise ValueError(f"{path} is not in an installed package")


def layer(module: str) -> str:
    """The layer of a dotted module name: rfnet.runtime.x -> runtime; rfnet.x -> rfnet; torch.nn -> torch."""
    parts = module.split(".")
    if parts[0] == "rfnet" and len(parts) > 1 and parts[1] in ("runtime", "export", "benchmarks"):
        return parts[1]
    return parts[0]


def link_tree(dest: Path) -> Path:
    """A tree of symbolic links laid out as the package installs, for mypy (which cannot map
    setup.cfg's package_dir): ``dest/rfnet/<entry>`` -> rfnet/<entry>, ``dest/rfnet/runtime`` ->
    runtime/, ... and ``dest/demo.py``. ``dest`` is replaced; returns it."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    (dest / "rfnet").mkdir(parents=True)
    for entry in (REPO / "rfnet").iterdir():
        if entry.name != "__pycache__":
            (dest / "rfnet" / entry.name).symlink_to(entry)
    for package, folder in package_dirs().items():
        if package != "rfnet":
            (dest / Path(*package.split("."))).symlink_to(REPO / folder, target_is_directory=True)
    (dest / "demo.py").symlink_to(REPO / "demo.py")
    return dest


if __name__ == "__main__":  # make typecheck: python -m tests.support.layout build/typecheck
    import sys

    print(link_tree(Path(sys.argv[1]).resolve()))
