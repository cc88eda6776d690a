"""Imports go down the layers (docs/design.md, "Layers"), read from the source with ast."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.support.layout import REPO, layer, package_dirs

#: layer -> layers of this project (and libraries) it must never import; the layer of rfnet.runtime.x is
#: runtime (the repository's runtime/ folder), of rfnet.x rfnet (tests/support/layout.py)
FORBIDDEN = {
    "rfnet": {"export", "runtime", "benchmarks", "demo"},
    "runtime": {"export", "benchmarks", "demo", "torch", "torchvision"},
    "export": {"benchmarks", "demo"},
    "benchmarks": {"export", "demo"},
}
TORCH_FREE = ("rfnet/common", "rfnet/config.py", "rfnet/errors.py", "rfnet/metadata.py", "runtime", "export/build.py")


def _imports(path: Path, *, module_level: bool = False) -> set[str]:
    """Layers ``path`` imports (with ``module_level``: at import time only, not the
    lazy imports inside functions, such as rfnet.common.env's guarded torch check)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree)
    if module_level:
        nodes = (n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(top))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(layer(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(layer(node.module))
    return names


def test_no_package_imports_a_layer_above_it() -> None:
    offenders = []
    folders = {layer(package): folder for package, folder in package_dirs().items()}
    assert set(folders) == set(FORBIDDEN)
    for pkg, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / folders[pkg]).rglob("*.py")):
            bad = _imports(path) & forbidden
            if bad:
                offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert offenders == []


def test_torch_free_modules_do_not_mention_torch() -> None:
    paths = [p for entry in TORCH_FREE for p in ((REPO / entry).rglob("*.py") if (REPO / entry).is_dir()
                                                  else [REPO / entry])]
    assert len(paths) > 20
    assert [str(p.relative_to(REPO)) for p in paths if _imports(p, module_level=True) & {"torch", "torchvision"}] == []
