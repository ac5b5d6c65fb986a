"""The local secure mailbox: an SMTP server that refuses everything but STARTTLS sessions.

It stands in for a municipality's relay in `make run` and in tests. Each accepted message is
stored as one `.eml` file whose first headers record the envelope and the TLS session:

    X-Opspor-Envelope-From: alerter@example.org
    X-Opspor-Envelope-To: school@example.org
    X-Opspor-TLS: TLSv1.3 TLS_AES_256_GCM_SHA384

    python -m opspor_shared.devstack.mailbox --dir var/mailbox --certs var/certs --port 8025
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import ssl
import sys
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from opspor_shared.devstack.certs import CertPaths, ensure_certs

ENVELOPE_FROM_HEADER = "X-Opspor-Envelope-From"
ENVELOPE_TO_HEADER = "X-Opspor-Envelope-To"
TLS_HEADER = "X-Opspor-TLS"


@dataclass(frozen=True)
class StoredMessage:
    path: Path
    envelope_from: str
    envelope_to: tuple[str, ...]
    tls: str | None
    message: EmailMessage


def tls_description(session: Session) -> str | None:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' for a STARTTLS session, None for plaintext."""
    extra: dict[str, Any] | None = session.ssl
    if not extra:
        return None
    cipher = extra.get("cipher")
    if cipher:
        return f"{cipher[1]} {cipher[0]}"
    return "TLS"


class MailboxHandler:
    """Stores every accepted message under `directory`; refuses DATA without TLS."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tls = tls_description(session)
        if tls is None:
            # aiosmtpd's require_starttls already refuses this; a second lock costs nothing.
            return "530 5.7.0 Must issue a STARTTLS command first"
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}.eml"
        self.store(name, envelope, tls)
        return f"250 2.0.0 OK queued as {name}"

    def store(self, name: str, envelope: Envelope, tls: str) -> Path:
        content = envelope.original_content or b""
        head = (
            f"{ENVELOPE_FROM_HEADER}: {envelope.mail_from or ''}\r\n"
            f"{ENVELOPE_TO_HEADER}: {', '.join(envelope.rcpt_tos)}\r\n"
            f"{TLS_HEADER}: {tls}\r\n"
        ).encode()
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(head + content)
        # Readers poll the directory; the rename makes a message appear whole or not at all.
        os.replace(tmp, path)
        return path


def read_messages(directory: Path) -> list[StoredMessage]:
    """Messages in arrival order."""
    if not directory.exists():
        return []
    out = []
    for path in sorted(directory.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        to = str(msg.get(ENVELOPE_TO_HEADER, ""))
        out.append(
            StoredMessage(
                path=path,
                envelope_from=str(msg.get(ENVELOPE_FROM_HEADER, "")),
                envelope_to=tuple(a.strip() for a in to.split(",") if a.strip()),
                tls=str(msg[TLS_HEADER]) if msg.get(TLS_HEADER) else None,
                message=msg,
            )
        )
    return out


def server_tls_context(certs: CertPaths) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certs.cert_file, certs.key_file)
    return context


class _Controller(Controller):
    """Controller that also works with port 0: it learns the bound port before the probe."""

    def _trigger_server(self) -> None:
        server = self.server
        if self.port == 0 and isinstance(server, asyncio.Server):
            self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class Mailbox:
    """An aiosmtpd server with STARTTLS required, running in its own thread.

    `handler` replaces the storing handler (tests use it to answer 4xx/5xx); extra keyword
    arguments go to aiosmtpd's SMTP class (for example `authenticator`).
    """

    def __init__(
        self,
        directory: Path,
        certs: CertPaths,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        handler: object | None = None,
        **smtp_options: Any,
    ) -> None:
        self.directory = directory
        self.certs = certs
        self.host = host
        self._requested_port = port
        self.handler = handler if handler is not None else MailboxHandler(directory)
        self._smtp_options = smtp_options
        self._controller: _Controller | None = None

    def start(self) -> Mailbox:
        if self._controller is not None:
            raise RuntimeError("mailbox already started")
        controller = _Controller(
            self.handler,
            hostname=self.host,
            port=self._requested_port,
            server_hostname="localhost",
            tls_context=server_tls_context(self.certs),
            require_starttls=True,
            **self._smtp_options,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("mailbox not started")
        port: int = self._controller.port
        return port

    @property
    def ca_file(self) -> Path:
        return self.certs.ca_file

    def messages(self) -> list[StoredMessage]:
        return read_messages(self.directory)

    def __enter__(self) -> Mailbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local TLS-only secure mailbox (aiosmtpd).")
    parser.add_argument("--dir", type=Path, default=Path("var/mailbox"), help="where mail goes")
    parser.add_argument("--certs", type=Path, default=Path("var/certs"), help="CA and cert dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025, help="0 picks a free port")
    args = parser.parse_args(argv)

    # Block the signals before the server thread starts, so only sigwait below receives them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    certs = ensure_certs(args.certs)
    mailbox = Mailbox(args.dir, certs, host=args.host, port=args.port).start()
    try:
        line = {
            "event": "mailbox_listening",
            "host": args.host,
            "port": mailbox.port,
            "ca_file": str(certs.ca_file.resolve()),
            "dir": str(args.dir.resolve()),
        }
        print(json.dumps(line), flush=True)
        received = signal.Signals(signal.sigwait(stop_signals))
        print(json.dumps({"event": "mailbox_stopping", "signal": received.name}), flush=True)
    finally:
        mailbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
