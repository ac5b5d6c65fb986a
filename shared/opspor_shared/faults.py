"""Fault injection for the fault suite (tests/faults): OPSPOR_FAULT=<point> makes the process
exit abruptly (os._exit, like kill -9: no cleanup, no commit) the first time it reaches that
hand-off point. Unset in every real deployment; only tests set it.

Points: api_after_commit_before_publish, relay_after_publish_before_delete,
consumer_after_handle_before_commit, alerter_after_accept_before_record.
"""

from __future__ import annotations

import os
import sys

FAULT_EXIT_CODE = 137  # what a shell reports for kill -9


def fault_point(name: str) -> None:
    if os.environ.get("OPSPOR_FAULT") == name:
        sys.stderr.write(f"fault injected at {name}\n")
        sys.stderr.flush()
        os._exit(FAULT_EXIT_CODE)
