"""Optional sampling profiles of the service processes with py-spy (`--py-spy PATH`).

py-spy is not a project dependency; install it anywhere (for example a throwaway venv under
/tmp) and pass the binary. Each phase writes collapsed stacks per service under
var/bench/profiles/ and a text summary (inclusive and self share per function) next to them.
Sampling runs with --nonblocking, but still costs some CPU on a 2-core machine: compare
figures from profiled runs with unprofiled ones only with care.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

_LINE = re.compile(r" \(([^()]*):\d+\)")


class Profiler:
    def __init__(self, py_spy: Path | None, out_dir: Path, pids: Mapping[str, int]) -> None:
        self.py_spy = py_spy
        self.out_dir = out_dir
        self.pids = dict(pids)
        self._running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, phase: str) -> None:
        if self.py_spy is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.out_dir / f"{phase}-{name}.txt"
            proc = subprocess.Popen(
                [
                    str(self.py_spy),
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    "97",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._running.append((proc, out))

    def stop(self) -> list[Path]:
        written = []
        for proc, out in self._running:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                summary = out.with_suffix(".summary.txt")
                summary.write_text(summarize(out.read_text()))
                written.append(summary)
        self._running = []
        return written


def _frame_name(frame: str) -> str:
    """'execute (sqlalchemy/engine/base.py:1415)' -> 'execute (sqlalchemy/engine/base.py)'."""
    return _LINE.sub(lambda m: f" ({_short(m.group(1))})", frame)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/services/", "/shared/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize(collapsed: str, top: int = 40) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (active threads only, idle excluded by py-spy)", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines) + "\n"
