"""Who holds a claimed notice: one identity per alerter process instance.

A claim's owner is "host:pid:random". A restarted alerter on the same host takes back the
claims of an instance that is no longer running at once, instead of waiting for the lease to
run out (about two minutes of delay for those notices before). An instance is gone when its
pid is not running on this host, or is our own pid (containers restart with the same pid 1)
under another random part. Claims of other hosts, or of live processes, wait for their lease:
the only safe reading when we cannot see the process.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Instance:
    host: str
    pid: int
    nonce: str

    @property
    def owner(self) -> str:
        return f"{self.host}:{self.pid}:{self.nonce}"

    @property
    def host_prefix(self) -> str:
        return f"{self.host}:"

    @classmethod
    def this_process(cls) -> Instance:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12])


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def dead_owners(me: Instance, owners: Iterable[str]) -> list[str]:
    """The owners among `owners` that were instances on this host and are gone."""
    dead = []
    for owner in owners:
        host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if host != me.host or not pid_text.isdigit() or owner == me.owner:
            continue
        pid = int(pid_text)
        if pid == me.pid or not _running(pid):
            dead.append(owner)
    return dead
