"""`make run`: start everything locally and say where it is."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from opspor_shared.auth import Role
from opspor_shared.devstack.net import port_open
from opspor_shared.devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[3]


def _port(preferred: int) -> int:
    return 0 if port_open("127.0.0.1", preferred) else preferred


def _tokens(stack: Stack) -> str:
    """Ready tokens (12 hours) for trying the API, and how to mint others."""
    ttl = 12 * 3600
    admin = stack.headers(Role.MUNICIPALITY_ADMIN, "aalborg", ttl_seconds=ttl)
    system = stack.headers(Role.SCHOOL_SYSTEM, "aalborg", ("vestbjerg",), ttl_seconds=ttl)
    return (
        "\nTokens (local issuer, 12 h; paste into the docs page's Authorize button):\n"
        f"  municipality_admin of aalborg:       {admin['Authorization']}\n"
        f"  school_system of aalborg/vestbjerg:  {system['Authorization']}\n"
        "  Others: .venv/bin/python -m opspor_api.tokens --key-dir var/auth issue --role "
        "school_staff --municipality aalborg --school vestbjerg --ttl 3600\n"
        "  (roles: school_system, school_staff, ppr, municipality_admin, operations)\n\n"
    )


def _web(stack: Stack) -> str:
    if stack.oidc is None:
        return f"  Web page:  {stack.api_url}/ui/  (sign-in through OIDC_ISSUER)\n"
    users = "\n".join(
        f"               {sub:<18} {claims}" for sub, claims in stack.oidc.users.items()
    )
    return (
        f"  Web page:  {stack.api_url}/ui/\n"
        f"  Sign-in:   local OpenID Connect provider {stack.oidc.issuer} (oidc-provider-mock);\n"
        "             pick a user on its page (one per role):\n"
        f"{users}\n"
    )


def main() -> None:
    api_port = int(os.environ.get("API_PORT", "8000"))
    stack = Stack(
        var_dir=ROOT / "var",
        api_port=_port(api_port) or api_port + 1,
        mailbox_port=_port(8025),
    )
    # Handlers, not a blocked signal mask: child processes inherit the mask, and services that
    # cannot see SIGTERM cannot shut down cleanly.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack.start()
    try:
        mailbox = (
            f"{stack.mailbox.directory} (SMTP with STARTTLS on 127.0.0.1:{stack.mailbox.port}, "
            f"CA {stack.mailbox.ca_file})"
            if stack.mailbox
            else "your SMTP relay (SMTP_HOST)"
        )
        print(
            "\nOpspor is running.\n"
            f"  API docs:  {stack.api_url}/docs   (OpenAPI: {stack.api_url}/openapi.json)\n"
            + _web(stack)
            + f"  Mailbox:   {mailbox}\n"
            f"  Database:  {stack.database_url.split('@')[-1]}\n"
            f"  Kafka:     {stack.bootstrap_servers}\n"
            f"  Ops:       "
            + ", ".join(f"{n} {s.url}/metrics" for n, s in stack.services.items())
            + f"\n  Logs:      {stack.var_dir / 'logs'}\n"
            + _tokens(stack)
            + "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stop.wait(1.0):
            pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
