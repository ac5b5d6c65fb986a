"""Kafka over TLS for real: the embedded broker behind stunnel4 with a generated CA. The
services' own client builders produce and consume through it; a client that trusts another CA
is refused."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from opspor_shared.devstack.certs import CertPaths, ensure_certs
from opspor_shared.devstack.kafka import EmbeddedBroker
from opspor_shared.devstack.net import free_port, wait_for_port
from opspor_shared.kafka import ensure_topics, kafka_ready, make_consumer, make_producer
from opspor_shared.kafka_security import client_kwargs
from opspor_shared.settings import ServiceSettings
from tests.auth import issuers_setting


def stunnel_binary() -> str:
    """Debian's stunnel4; CI runs as root and installs it when missing."""
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if found is None:
        assert os.geteuid() == 0, "stunnel4 is missing: apt-get install stunnel4 (as root)"
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "stunnel4"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, check=True, capture_output=True, timeout=600)
        found = shutil.which("stunnel4") or shutil.which("stunnel")
    assert found is not None
    return found


@contextlib.contextmanager
def tls_terminated_broker(
    directory: Path, certs: CertPaths, client_ca: Path | None = None
) -> Iterator[str]:
    """Tansu behind stunnel; with `client_ca`, stunnel demands a client certificate (mTLS).
    Yields the bootstrap servers of the TLS listener, which the broker advertises."""
    binary = stunnel_binary()
    tls_port = free_port()
    with EmbeddedBroker(log_file=directory / "tansu.log", advertised_port=tls_port) as broker:
        config = directory / "stunnel.conf"
        mutual = f"CAfile = {client_ca}\nverifyChain = yes\n" if client_ca else ""
        config.write_text(
            "foreground = yes\n"
            "pid =\n"
            "debug = 4\n"
            f"output = {directory / 'stunnel.log'}\n"
            "[kafka]\n"
            f"accept = 127.0.0.1:{tls_port}\n"
            f"connect = 127.0.0.1:{broker.port}\n"
            f"cert = {certs.cert_file}\n"
            f"key = {certs.key_file}\n" + mutual
        )
        process = subprocess.Popen(
            [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port("127.0.0.1", tls_port)
            yield f"127.0.0.1:{tls_port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, CertPaths]]:
    """(bootstrap servers of the TLS listener, the CA and server certificate)."""
    directory = tmp_path_factory.mktemp("kafka-tls")
    certs = ensure_certs(directory / "certs")
    with tls_terminated_broker(directory, certs) as bootstrap:
        yield bootstrap, certs


def client_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A client CA and a client certificate it signed: (CA file, certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Opspor test client CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opspor-worker")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "client-ca.pem", directory / "client.pem", directory / "client.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def tls_settings(bootstrap: str, ca_file: Path, **overrides: object) -> ServiceSettings:
    values: dict[str, object] = {
        "database_url": "postgresql+asyncpg://unused/unused",
        "kafka_bootstrap_servers": bootstrap,
        "kafka_enable_idempotence": False,
        "kafka_session_timeout_ms": 2000,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_ca_file": ca_file,
        "topic_partitions": 1,
        "auth_issuers": issuers_setting(),
    }
    return ServiceSettings.model_validate(values | overrides)


async def produce_and_consume(settings: ServiceSettings) -> list[bytes]:
    topic = f"absence.tls.v1.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    producer = make_producer(settings, "tls-test")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=b"over tls", key=b"elev-1")
    finally:
        await producer.stop()
    consumer = make_consumer(settings, f"tls-test-{topic}")
    consumer.subscribe([topic])
    await consumer.start()
    received: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                received += [r.value or b"" for r in records]
    finally:
        await consumer.stop()
    return received


async def test_producer_and_consumer_talk_to_the_broker_through_tls(
    tls_broker: tuple[str, CertPaths],
) -> None:
    bootstrap, certs = tls_broker
    settings = tls_settings(bootstrap, certs.ca_file)
    assert await kafka_ready(settings)
    assert await produce_and_consume(settings) == [b"over tls"]


async def test_mutual_tls_needs_the_client_certificate(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path / "certs")
    client_ca, client_cert, client_key = client_certificate(tmp_path / "client")
    with tls_terminated_broker(tmp_path, certs, client_ca=client_ca) as bootstrap:
        without = tls_settings(bootstrap, certs.ca_file)
        assert not await kafka_ready(without)
        settings = tls_settings(
            bootstrap,
            certs.ca_file,
            kafka_ssl_cert_file=client_cert,
            kafka_ssl_key_file=client_key,
        )
        assert await kafka_ready(settings)
        assert await produce_and_consume(settings) == [b"over tls"]


async def test_a_client_that_trusts_another_ca_is_refused(
    tls_broker: tuple[str, CertPaths], tmp_path: Path
) -> None:
    bootstrap, _ = tls_broker
    other = ensure_certs(tmp_path / "other-ca")
    settings = tls_settings(bootstrap, other.ca_file)
    assert not await kafka_ready(settings)
    producer = make_producer(settings, "tls-wrong-ca")
    with pytest.raises(Exception):  # noqa: B017 - aiokafka wraps the TLS error
        await producer.start()
    await producer.stop()
    # And a client without TLS does not get through the TLS listener either.
    plain = tls_settings(
        bootstrap, other.ca_file, kafka_security_protocol="PLAINTEXT", kafka_ssl_ca_file=None
    )
    assert not await kafka_ready(plain)


def test_sasl_settings_are_complete_or_refused(tmp_path: Path) -> None:
    ca = ensure_certs(tmp_path / "certs").ca_file
    ok = tls_settings(
        "broker:9093",
        ca,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="opspor",
        kafka_sasl_password="s3cret",
    )
    assert "s3cret" not in repr(ok)
    for broken, message in (
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_mechanism"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_ssl_ca_file": None,
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
            },
            "SASL PLAIN needs TLS",
        ),
        ({"kafka_ssl_cert_file": ca}, "go together"),
        ({"kafka_ssl_ca_file": tmp_path / "missing.pem"}, "no file"),
    ):
        with pytest.raises(ValidationError, match=message):
            tls_settings("broker:9093", ca, **broken)
    kwargs = {k: v for k, v in client_kwargs(ok).items() if k != "ssl_context"}
    assert kwargs == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "opspor",
        "sasl_plain_password": "s3cret",
    }
