"""benchmarks/peer.py: the peer detector's timing on a tiny image (random weights, 1 thread)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfnet.benchmarks import peer
from rfnet.common.imageio import write_image

pytest.importorskip("torchvision")


def test_peer_timing_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    write_image(images / "a.png", np.full((48, 64, 3), 90, np.uint8))
    out = tmp_path / "peer.json"
    assert peer.main(["--images", str(images), "--threads", "1", "--warmup", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "fasterrcnn_mobilenet_v3_large_fpn" and result["weights"] is None
    assert result["images"] == 1 and result["images_per_s"] > 0 and result["latency_ms"]["n"] == 1
    assert "images/s end to end" in capsys.readouterr().out


def test_peer_refuses_bad_arguments(tmp_path: Path) -> None:
    assert peer.main(["--images", str(tmp_path / "none"), "--threads", "1"]) == 2
    assert peer.main(["--images", str(tmp_path), "--threads", "0"]) == 2
