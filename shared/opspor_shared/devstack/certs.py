"""A local certificate authority and a server certificate for the development mailbox.

The alerter verifies the mailbox certificate against `ca.pem` exactly as it verifies a
municipality's relay against the system trust store, so local runs exercise the same TLS path.
Files that are still valid are reused: a running alerter keeps trusting the CA it loaded.
The CA's private key is never written; when anything is invalid, everything is regenerated.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CERT_FILE = "mailbox.pem"
KEY_FILE = "mailbox.key"

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=397)
# A certificate that expires within this margin is replaced rather than reused.
RENEW_BEFORE = timedelta(days=7)


@dataclass(frozen=True)
class CertPaths:
    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_certs(
    directory: Path,
    *,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
) -> CertPaths:
    """Return valid CA and server certificate files in `directory`, creating them if needed."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
    if not _valid(paths, dns_names, ip_addresses):
        _generate(paths, dns_names, ip_addresses)
    return paths


def _valid(paths: CertPaths, dns_names: Sequence[str], ip_addresses: Sequence[str]) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(paths.ca_file.read_bytes())
        cert = x509.load_pem_x509_certificate(paths.cert_file.read_bytes())
        key = serialization.load_pem_private_key(paths.key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    now = datetime.now(UTC)
    for c in (ca, cert):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc - RENEW_BEFORE:
            return False
    try:
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    wanted_ips = {ipaddress.ip_address(ip) for ip in ip_addresses}
    if not set(dns_names) <= set(san.get_values_for_type(x509.DNSName)):
        return False
    if not wanted_ips <= set(san.get_values_for_type(x509.IPAddress)):
        return False
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _generate(paths: CertPaths, dns_names: Sequence[str], ip_addresses: Sequence[str]) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate small clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Opspor development"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Opspor local CA {now:%Y%m%d%H%M%S}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, (list(dns_names) or ["mailbox"])[0])]
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first, certificates last: a reader never pairs a new certificate with an old key.
    _write_atomic(paths.key_file, key_pem, mode=0o600)
    _write_atomic(paths.cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _write_atomic(paths.ca_file, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
