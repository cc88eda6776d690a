"""How much of the machine a timed run had (torch-free), from Linux's ``/proc/stat``.

On a shared or virtual machine a throughput figure means little without knowing what else ran:
CPU time the hypervisor gave to other guests (*steal*) and CPU time other processes of this
machine used (a training in the background) both slow a run without any change in the code.
:func:`machine_load` turns two snapshots into shares of the machine's CPU time over the run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: /proc/stat's aggregate line: user nice system idle iowait irq softirq steal (guest time is
#: already inside user and nice).
_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
#: Above this share of the machine's CPU time taken by others (steal + other processes), a timed
#: run says that its figure understates the speed.
BUSY_SHARE = 0.1


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide CPU time (clock ticks, all CPUs) and this process's own CPU time (seconds)."""

    busy: int
    idle: int
    steal: int
    own_s: float

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


def parse_proc_stat(text: str) -> tuple[int, int, int] | None:
    """(busy, idle, steal) ticks from the ``cpu`` line of ``/proc/stat`` text; None if absent."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = dict(zip(_FIELDS, (int(v) for v in parts[1:1 + len(_FIELDS)])))
            busy = sum(values.get(k, 0) for k in ("user", "nice", "system", "irq", "softirq"))
            return busy, values.get("idle", 0) + values.get("iowait", 0), values.get("steal", 0)
    return None


def snapshot(path: Path = Path("/proc/stat")) -> CpuSnapshot | None:
    """The machine's CPU counters now, or None where ``/proc/stat`` cannot be read (not Linux)."""
    try:
        import resource  # Unix only, as /proc/stat is

        parsed = parse_proc_stat(path.read_text())
    except (ImportError, OSError):
        return None
    if parsed is None:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(*parsed, own_s=usage.ru_utime + usage.ru_stime)


def machine_load(before: CpuSnapshot | None, after: CpuSnapshot | None,
                 ticks_per_s: float | None = None) -> dict[str, float] | None:
    """Shares of the machine's CPU time between two snapshots: ``steal`` (taken by the hypervisor),
    ``others`` (busy in processes other than this one) and ``own`` (this process), each in [0, 1];
    None when a snapshot is missing or no time passed."""
    if before is None or after is None or after.total <= before.total:
        return None
    hz = ticks_per_s or float(os.sysconf("SC_CLK_TCK"))
    total_s = (after.total - before.total) / hz
    own = min(max(after.own_s - before.own_s, 0.0), total_s)
    busy = (after.busy - before.busy) / hz
    return {"steal": round((after.steal - before.steal) / hz / total_s, 4),
            "others": round(max(busy - own, 0.0) / total_s, 4),
            "own": round(own / total_s, 4)}


def is_shared(load: dict[str, float] | None) -> bool:
    """Whether others (other processes and the hypervisor) took over :data:`BUSY_SHARE` of the machine."""
    return load is not None and load["steal"] + load["others"] > BUSY_SHARE


def describe(load: dict[str, float] | None) -> str:
    """One line for a report or a log: the shares of :func:`machine_load`, and what they mean for speed."""
    if load is None:
        return "not measured (no /proc/stat)"
    text = (f"{100 * load['own']:.0f} % this run, {100 * load['others']:.0f} % other processes, "
            f"{100 * load['steal']:.0f} % stolen by the hypervisor")
    return text + ("; the machine was shared, so the speed figures understate the model's" if is_shared(load) else "")
