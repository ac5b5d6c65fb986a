"""Reading import files: CSV (a header row) or JSON Lines, one record per line.

Records keep their line number, so every problem the api reports can be traced back to the
line and field of the file. Values stay as written (strings in CSV): the api validates them,
exactly as it validates a school system's request.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Format = Literal["csv", "jsonl"]
# Cells holding JSON in CSV files (a school year's closures and extra days).
JSON_COLUMNS = frozenset({"closures", "extra_days"})


@dataclass(frozen=True)
class Record:
    line: int
    body: dict[str, Any] | None  # None: the line itself is unreadable (see problem)
    problem: tuple[str, str] | None = None  # (field, detail)


def detect_format(path: Path) -> Format:
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def fingerprint(path: Path) -> str:
    """Identifies the file a checkpoint belongs to: its size and a hash of its content."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.stat().st_size}:{digest.hexdigest()}"


def count_records(path: Path, fmt: Format) -> int:
    with path.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    return max(lines - 1, 0) if fmt == "csv" else lines


def read_records(path: Path, fmt: Format) -> Iterator[Record]:
    if fmt == "jsonl":
        yield from _jsonl(path)
    else:
        yield from _csv(path)


def _jsonl(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                body = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Record(number, None, ("(line)", f"not valid JSON: {exc.msg}"))
                continue
            if not isinstance(body, dict):
                yield Record(number, None, ("(line)", "not a JSON object"))
                continue
            yield Record(number, body)


def _csv(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, strict=True)
        for row in reader:
            number = reader.line_num
            if None in row:
                yield Record(number, None, ("(line)", "more cells than the header has columns"))
                continue
            body: dict[str, Any] = {}
            problem = None
            for column, value in row.items():
                if value is None or value == "":
                    continue  # an empty cell is an absent field: the api's default applies
                if column in JSON_COLUMNS:
                    try:
                        body[column] = json.loads(value)
                    except json.JSONDecodeError as exc:
                        problem = (column, f"not valid JSON: {exc.msg}")
                else:
                    body[column] = value
            yield Record(number, None if problem else body, problem)
