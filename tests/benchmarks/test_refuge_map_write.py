"""benchmarks/refuge_map_write.py: the generated maps, the printed figures, bad arguments."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rfnet.benchmarks.refuge_map_write import generated_maps, main
from rfnet.common.bmp import encode_grey_bmp
from rfnet.common.fileio import atomic_write_bytes


def test_generated_maps_are_refuge_maps() -> None:
    maps = generated_maps(3, 120, 160)
    assert len(maps) == 3
    for m in maps:
        assert m.shape == (120, 160) and set(np.unique(m)) == {0, 128, 255}


def test_prints_both_ways_for_a_folder_of_maps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, m in enumerate(generated_maps(2, 90, 130)):
        atomic_write_bytes(tmp_path / f"m{i}.bmp", encode_grey_bmp(m))
    assert main(["--maps", str(tmp_path), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 maps of 90 x 130, 2 alternating rounds")
    sizes = {name: int(kb) for name, kb in re.findall(r"^\s+(plain \(OpenCV\)|RLE8)\s.* file (\d+) kB$", out, re.M)}
    assert set(sizes) == {"plain (OpenCV)", "RLE8"} and sizes["RLE8"] < sizes["plain (OpenCV)"]


def test_a_folder_without_maps_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["--maps", str(tmp_path)]) == 2


def test_rejects_no_rounds() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--rounds", "0"])
    assert exc.value.code == 2
