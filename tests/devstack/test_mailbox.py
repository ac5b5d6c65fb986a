"""The local secure mailbox: STARTTLS required, mail stored with its envelope, certificates
generated once and reused."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509

from opspor_shared.devstack.certs import ensure_certs
from opspor_shared.devstack.mailbox import Mailbox

ROOT = Path(__file__).resolve().parents[2]


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "opspor@aalborg.example"
    msg["To"] = "skole@aalborg.example"
    msg["Subject"] = "Bekymrende fravær"
    msg.set_content("Elevreference: pupil-1\n")
    return msg


def _client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def test_certificates_are_generated_then_reused(tmp_path: Path) -> None:
    first = ensure_certs(tmp_path)
    contents = [p.read_bytes() for p in (first.ca_file, first.cert_file, first.key_file)]
    assert oct(first.key_file.stat().st_mode & 0o777) == "0o600"

    again = ensure_certs(tmp_path)

    assert again == first
    assert [p.read_bytes() for p in (again.ca_file, again.cert_file, again.key_file)] == contents
    cert = x509.load_pem_x509_certificate(first.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_invalid_or_mismatched_certificates_are_replaced(tmp_path: Path) -> None:
    first = ensure_certs(tmp_path)
    ca_before = first.ca_file.read_bytes()

    first.cert_file.write_bytes(b"not a certificate")
    assert ensure_certs(tmp_path).ca_file.read_bytes() != ca_before

    ca_before = first.ca_file.read_bytes()
    other = ensure_certs(tmp_path, dns_names=("mailbox.internal",))
    assert other.ca_file.read_bytes() != ca_before

    ca_before = first.ca_file.read_bytes()
    ensure_certs(tmp_path / "elsewhere").key_file.replace(first.key_file)  # key of another cert
    assert ensure_certs(tmp_path, dns_names=("mailbox.internal",)).ca_file.read_bytes() != (
        ca_before
    )


async def test_stores_message_with_envelope_and_tls(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path / "certs")
    with Mailbox(tmp_path / "mail", certs) as box:
        assert box.port != 0
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=box.port,
            start_tls=True,
            tls_context=_client_context(box.ca_file),
            timeout=5,
        )
        async with client:
            await client.send_message(
                _message(), recipients=["skole@aalborg.example", "ppr@aalborg.example"]
            )
        [stored] = box.messages()

    assert stored.envelope_from == "opspor@aalborg.example"
    assert stored.envelope_to == ("skole@aalborg.example", "ppr@aalborg.example")
    assert stored.tls is not None and stored.tls.startswith("TLSv1.")
    assert stored.message["Subject"] == "Bekymrende fravær"
    assert "pupil-1" in stored.message.get_content()
    assert list((tmp_path / "mail").glob(".*.tmp")) == []


async def test_mail_and_data_are_refused_before_starttls(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path / "certs")
    with Mailbox(tmp_path / "mail", certs) as box:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=box.port, start_tls=False, timeout=5)
        await client.connect()
        try:
            ehlo = await client.ehlo()
            assert "STARTTLS" in ehlo.message
            assert client.supports_extension("starttls")
            replies = [
                await client.execute_command(b"MAIL", b"FROM:<opspor@aalborg.example>"),
                await client.execute_command(b"RCPT", b"TO:<skole@aalborg.example>"),
                await client.execute_command(b"DATA"),
            ]
        finally:
            client.close()
        assert [r.code for r in replies] == [530, 530, 530]
        assert box.messages() == []


async def test_two_mailboxes_on_port_zero_get_different_ports(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path / "certs")
    with Mailbox(tmp_path / "a", certs) as a, Mailbox(tmp_path / "b", certs) as b:
        assert a.port != b.port and 0 not in (a.port, b.port)
    with pytest.raises(RuntimeError):
        _ = Mailbox(tmp_path / "c", certs).port


def test_cli_prints_port_and_ca_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opspor_shared.devstack.mailbox",
            "--dir",
            str(tmp_path / "mail"),
            "--certs",
            str(tmp_path / "certs"),
            "--port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = _read_line(process, seconds=20)
        started = json.loads(line)
        assert started["event"] == "mailbox_listening"
        assert Path(started["ca_file"]) == (tmp_path / "certs" / "ca.pem").resolve()
        with socket.create_connection(("127.0.0.1", started["port"]), timeout=5) as sock:
            assert sock.recv(1024).startswith(b"220 ")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def _read_line(process: subprocess.Popen[bytes], *, seconds: float) -> str:
    result: list[bytes] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    if not result or not result[0]:
        raise AssertionError("the mailbox printed nothing in time")
    return result[0].decode()
