"""The runtime must work where PyTorch cannot be imported (a clinic PC, a Jetson image).

A fresh interpreter installs a ``sys.meta_path`` finder that raises ImportError for
``torch``/``torchvision`` (and their submodules) before anything else is imported, then runs
``rfnet.runtime.infer.main`` end to end and checks that no torch module was ever loaded.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

BOOTSTRAP = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        blocked = ("torch", "torchvision")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"importing {name!r} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker does not work")

    # every runtime module, including the TensorRT backend (whose own imports are lazy)
    import runtime, rfnet.runtime.manifest, rfnet.runtime.outputs, rfnet.runtime.pipeline  # noqa: E401
    import rfnet.runtime.backends.base, rfnet.runtime.backends.onnxrt, rfnet.runtime.backends.trt_io, rfnet.runtime.backends.trt_loader, rfnet.runtime.backends.cuda_graphs, rfnet.runtime.backends.trt_pycuda
    from rfnet.runtime.infer import main

    rc = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BlockTorch.blocked)
    print("LEAKED", leaked)
    raise SystemExit(rc if not leaked else 99)
    """
)


def test_runtime_runs_without_torch(contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, "--model", str(contract_onnx), "--input", str(image_dir),
         "--output", str(out), "--batch", "2", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LEAKED []" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processed"] == 4 and summary["num_failed"] == 0
    assert len(list((out / "refuge").glob("*.bmp"))) == 4


def test_script_entry_point_runs(contract_onnx: Path, image_dir: Path, tmp_path: Path) -> None:
    """`python runtime/infer.py` (runtime/ first on sys.path: no module there may shadow a library)."""
    script = Path(__file__).resolve().parents[2] / "runtime" / "infer.py"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(script), "--model", str(contract_onnx), "--input", str(image_dir / "a_wide.png"),
         "--output", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "refuge" / "a_wide.bmp").is_file() and (out / "overlay" / "a_wide.jpg").is_file()
