from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.3).close()
    except OSError:
        return False
    return True


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on the port now (binding is the only honest check)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int, host: str = "127.0.0.1", tries: int = 20) -> int:
    """The preferred port if it is free, else the next free one above it (checked, not
    assumed), else any free port the system hands out."""
    for port in range(preferred, min(preferred + tries, 65536)):
        if port_free(host, port):
            return port
    return free_port()
