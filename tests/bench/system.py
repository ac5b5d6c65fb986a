"""The machine the figures were taken on, and CPU time per component during a phase.

CPU accounting reads /proc: utime + stime of each process (clock ticks), and the machine-wide
busy time from /proc/stat. Comparing both shows whether something outside the benchmark
(other engineers' test runs on the shared PostgreSQL, for example) was using the cores.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def describe_machine() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    mhz = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "cpu MHz" in line),
        None,
    )
    meminfo = {
        line.split(":")[0]: line.split(":")[1].strip()
        for line in _read("/proc/meminfo").splitlines()
        if ":" in line
    }
    total_kib = int(meminfo.get("MemTotal", "0 kB").split()[0])
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "cpu_mhz": float(mhz) if mhz else None,
        "ram_gib": round(total_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process; 0.0 once it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return 0.0
    # The command name may contain spaces; fields after the closing parenthesis are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of one process in MiB; 0.0 once it is gone."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def postgres_pids() -> list[int]:
    """Every process named `postgres` (server, backends, WAL writer, checkpointer...)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _read(f"/proc/{entry}/comm").strip() == "postgres":
            pids.append(int(entry))
    return pids


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    first = _read("/proc/stat").splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already included in user
    return (total - idle) / _TICKS, total / _TICKS


@dataclass
class CpuSnapshot:
    wall: float
    per_pid: dict[int, float]
    groups: dict[str, list[int]]
    busy: float
    total: float


@dataclass
class CpuMeter:
    """CPU seconds per named group of processes between `start()` and `stop()`.

    `groups` maps a component name to fixed pids; `postgres` is rediscovered each time,
    because backends come and go. Processes that appear only at the end count from zero.
    """

    groups: Mapping[str, Iterable[int]]
    snapshots: list[CpuSnapshot] = field(default_factory=list)
    rss_mib: dict[str, float] = field(default_factory=dict)  # at the last stop()

    def _snap(self) -> CpuSnapshot:
        groups = {name: list(pids) for name, pids in self.groups.items()}
        groups["postgres"] = postgres_pids()
        per_pid = {pid: process_cpu_seconds(pid) for pids in groups.values() for pid in pids}
        busy, total = machine_busy_seconds()
        return CpuSnapshot(time.monotonic(), per_pid, groups, busy, total)

    def start(self) -> None:
        self.snapshots = [self._snap()]

    def stop(self) -> dict[str, float]:
        """Average cores used per component over the interval, plus the machine's."""
        end = self._snap()
        begin = self.snapshots[0]
        wall = max(end.wall - begin.wall, 1e-9)
        out: dict[str, float] = {}
        for name, pids in end.groups.items():
            used = sum(end.per_pid[p] - begin.per_pid.get(p, 0.0) for p in pids)
            out[name] = round(used / wall, 2)
        busy = (end.busy - begin.busy) / wall
        out["outside_bench"] = round(max(0.0, busy - sum(out.values())), 2)
        self.rss_mib = {
            name: round(sum(rss_mib(p) for p in pids), 1)
            for name, pids in end.groups.items()
            if name != "postgres"
        }
        out["machine_busy"] = round(busy, 2)
        out["wall_seconds"] = round(wall, 2)
        return out
