"""Metric names the operator's dashboard and alert rules use, and the names a service exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "opspor.json"
# Built by another part of the system (cases, DOMAIN.md s.7); wired at merge.
WIRED_ELSEWHERE: frozenset[str] = frozenset()
_NAME = re.compile(r"\bopspor_[a-z0-9_]+\b")


def queries() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    found = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    found += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return found


def names_used() -> set[str]:
    return {n for q in queries() for n in _NAME.findall(q)}


def exposed(text: str) -> set[str]:
    """Every series name a /metrics text can carry, from its TYPE lines (a labelled metric that
    saw no value yet still has one) and its samples."""
    out: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            out.add(name)
            if kind == "counter":
                out.add(f"{name}_total")
            elif kind == "histogram":
                out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            out.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return out
