"""`make run`: start everything locally and say where it is."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

from opspor_shared.auth import Role
from opspor_shared.devstack.net import choose_port
from opspor_shared.devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[3]
# One database for every `make run` of this checkout: its data stays between runs until
# `make run FRESH=1`.
DATABASE = "opspor"


# What `make run FRESH=1` throws away besides the database: earlier mail, logs and the local
# issuer's keys (tokens from an earlier run stop working). The embedded server's data
# directory (var/pgdata) stays; dropping the database is enough.
FRESH_DIRS = ("mailbox", "logs", "auth", "certs")


def fresh_start(var_dir: Path, database_name: str) -> bool:
    """Drops the dev database and var state, so the next start begins empty. A database given
    through DATABASE_URL is never dropped: it is someone's real server. Answers whether the
    database is recreated."""
    for name in FRESH_DIRS:
        shutil.rmtree(var_dir / name, ignore_errors=True)
    return not os.environ.get("DATABASE_URL")


def _tokens(stack: Stack) -> str:
    """Ready tokens (12 hours) for trying the API, and how to mint others."""
    ttl = 12 * 3600
    admin = stack.token(Role.MUNICIPALITY_ADMIN, "aalborg", ttl_seconds=ttl)
    system = stack.token(Role.SCHOOL_SYSTEM, "aalborg", ("vestbjerg",), ttl_seconds=ttl)
    return (
        "\nTokens (local issuer, valid 12 h). Paste one as it is into the docs page's Authorize\n"
        "button (it adds 'Bearer ' itself); with curl send "
        '-H "Authorization: Bearer $TOKEN".\n'
        f"  municipality_admin of aalborg:       {admin}\n"
        f"  school_system of aalborg/vestbjerg:  {system}\n"
        "  Others: .venv/bin/opspor-token --key-dir var/auth issue --role "
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
    wanted = int(os.environ.get("API_PORT", "8000"))
    api_port = choose_port(wanted)
    if api_port != wanted:
        print(f"API_PORT {wanted} is taken; the API uses {api_port}.", flush=True)
    var_dir = ROOT / "var"
    fresh = os.environ.get("FRESH", "") not in ("", "0")
    recreate = fresh_start(var_dir, DATABASE) if fresh else False
    stack = Stack(
        var_dir=var_dir,
        database_name=DATABASE,
        recreate_database=recreate,
        api_port=api_port,
        mailbox_port=choose_port(8025),
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
            f"             mail waits the settle period, NOTICE_SETTLE_SECONDS="
            f"{os.environ.get('NOTICE_SETTLE_SECONDS', '900')} (0: at once)\n"
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
