"""Schemathesis hooks for the CLI run in test_fuzz.py (loaded through SCHEMATHESIS_HOOKS): each
request carries a token of the role that uses its route, read from OPSPOR_FUZZ_TOKENS (a JSON
file of role -> Authorization header written by the test)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import schemathesis

from tests.auth import natural_role

_TOKENS: dict[str, str] = json.loads(Path(os.environ["OPSPOR_FUZZ_TOKENS"]).read_text())


@schemathesis.auth(refresh_interval=None)
class RouteRoleAuth:
    def get(self, case: Any, ctx: Any) -> str:
        return _TOKENS[str(natural_role(case.operation.method.upper(), case.operation.path))]

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}
