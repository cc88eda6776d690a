"""rfnet.common and the torch-free parts of rfnet.data import without torch (runtime side)."""
from __future__ import annotations

import subprocess
import sys

MODULES = [
    "rfnet.common.imageio",
    "rfnet.common.preprocess",
    "rfnet.common.postprocess",
    "rfnet.common.metrics",
    "rfnet.common.viz",
    "rfnet.data",
    "rfnet.data.augment",
    "rfnet.data.synthetic",
    "rfnet.data.refuge",
    "rfnet.data.drishti",
    "rfnet.data.rimone",
    "rfnet.data.folder",
]


def test_no_torch_import() -> None:
    code = (
        "import sys\n"
        f"for m in {MODULES!r}: __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m == 'matplotlib')\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at module load: {out}"
