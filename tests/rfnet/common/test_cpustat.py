"""rfnet.common.cpustat: the machine's CPU time shares behind a timed run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rfnet.common import cpustat

PROC_STAT = """cpu  1000 50 200 5000 100 10 40 300 0 0
cpu0 500 25 100 2500 50 5 20 150 0 0
intr 12345
"""


def test_parse_proc_stat_sums_busy_idle_and_steal_ticks() -> None:
    # busy = user + nice + system + irq + softirq; idle = idle + iowait; steal apart
    assert cpustat.parse_proc_stat(PROC_STAT) == (1000 + 50 + 200 + 10 + 40, 5000 + 100, 300)
    assert cpustat.parse_proc_stat("intr 1\n") is None


def test_machine_load_splits_the_interval_into_steal_others_and_own() -> None:
    """100 Hz, 10 s of two CPUs = 2000 ticks: 200 stolen, 1200 busy of which 4 s (400 ticks) this process."""
    before = cpustat.CpuSnapshot(busy=1000, idle=5000, steal=100, own_s=1.0)
    after = cpustat.CpuSnapshot(busy=2200, idle=5600, steal=300, own_s=5.0)
    load = cpustat.machine_load(before, after, ticks_per_s=100)
    assert load == {"steal": pytest.approx(0.1), "others": pytest.approx(0.4), "own": pytest.approx(0.2)}
    assert cpustat.machine_load(None, after) is None and cpustat.machine_load(after, after) is None


def test_snapshot_reads_a_stat_file_and_is_none_without_one(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(PROC_STAT)
    snap = cpustat.snapshot(stat)
    if sys.platform == "win32":  # no resource module: not measured
        assert snap is None
        return
    assert snap is not None and (snap.busy, snap.idle, snap.steal) == (1300, 5100, 300) and snap.own_s > 0
    assert cpustat.snapshot(tmp_path / "missing") is None
    stat.write_text("intr 1\n")
    assert cpustat.snapshot(stat) is None


def test_a_run_on_a_shared_machine_says_its_speed_is_understated() -> None:
    quiet = {"steal": 0.01, "others": 0.05, "own": 0.9}
    busy = {"steal": 0.06, "others": 0.05, "own": 0.8}  # 11 % taken by others
    assert not cpustat.is_shared(quiet) and cpustat.is_shared(busy) and not cpustat.is_shared(None)
    assert cpustat.describe(quiet) == "90 % this run, 5 % other processes, 1 % stolen by the hypervisor"
    assert cpustat.describe(busy).endswith("the machine was shared, so the speed figures understate the model's")
    assert cpustat.describe(None) == "not measured (no /proc/stat)"
