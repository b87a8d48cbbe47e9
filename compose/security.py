"""Certificates and passwords for the local stack's secure mode.

`assetlog stack up --secure` runs the broker with a SASL_SSL listener
(SCRAM-SHA-512) and PostgreSQL with TLS and scram-sha-256 passwords, so the
authenticated paths every deployment needs are exercised for real, not only
passed through. The material is made once per stack folder: a private CA, one
server certificate for 127.0.0.1 and localhost signed by it, and random
passwords. Nothing here is meant for production: a real deployment brings its
own CA and users.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assetlog.compose.processes import StackError

KAFKA_ADMIN_USER = "admin"  # the broker's own inter-broker identity
KAFKA_CLIENT_USER = "assetlog"  # what producers, consumers and replay log in as
SCRAM_MECHANISM = "SCRAM-SHA-512"


def _crypto():
    """`cryptography` is needed only to make the secure stack's certificates."""
    try:
        # deferred: cryptography, an optional extra (`assetlog[stack]`) only `--secure` needs
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise StackError("the secure stack needs the `cryptography` package: pip install 'assetlog[stack]'") from exc
    return x509, hashes, serialization, ec, NameOID


def _certificate(folder: Path, stem: str, subject_name: str, issuer: tuple[Any, Any] | None,
                 extensions: list[tuple[Any, bool]]) -> tuple[Path, Path]:
    """A new EC key and a ten-year certificate for it, written as `<stem>.pem` and `<stem>.key`.

    `issuer` is the signing (certificate, key); None makes the certificate self-signed (a CA).
    """
    x509, hashes, serialization, ec, NameOID = _crypto()
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    certificate = builder.sign(signing_key, hashes.SHA256())
    cert_file, key_file = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return cert_file, key_file


def make_certificate_authority(folder: Path, name: str = "Assetlog local stack CA") -> tuple[Path, Path]:
    """A self-signed CA in `folder` (ca.pem, ca.key); returns both paths."""
    x509 = _crypto()[0]
    return _certificate(folder, "ca", name, None, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                       decipher_only=False), True),
    ])


def make_server_certificate(folder: Path, ca_file: Path, ca_key_file: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost signed by the CA (server.pem, server.key)."""

    x509, _, serialization, _, _ = _crypto()
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    return _certificate(folder, "server", "localhost", (ca, ca_key), [
        (x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
         False),
        (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
         False),
    ])


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class SecurityMaterial:
    """One secure stack's CA, server certificate and passwords, under `folder`."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert_file(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key_file(self) -> Path:
        return self.folder / "server.key"

    @property
    def _passwords_file(self) -> Path:
        return self.folder / "passwords.json"

    def passwords(self) -> dict[str, str]:
        try:
            return json.loads(self._passwords_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StackError(f"the secure stack's passwords in {self._passwords_file} are missing or damaged: "
                             "run `assetlog stack down --secure --purge`, then `assetlog stack up --secure`") from exc

    @classmethod
    def ensure(cls, folder: Path) -> SecurityMaterial:
        """Make the material once; later calls reuse it (the servers keep their users)."""
        material = cls(folder)
        if material._passwords_file.exists():
            return material
        folder.mkdir(parents=True, exist_ok=True)
        ca_file, ca_key = make_certificate_authority(folder)
        make_server_certificate(folder, ca_file, ca_key)
        passwords = {name: secrets.token_urlsafe(18)
                     for name in ("kafka_admin", "kafka_client", "postgres", "postgres_reader")}
        _write_private(material._passwords_file, json.dumps(passwords).encode())
        return material

    def kafka_client_settings(self) -> dict[str, str]:
        """The documented `ASSETLOG_KAFKA_*` variables a client of this broker sets."""
        return {
            "ASSETLOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ASSETLOG_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "ASSETLOG_KAFKA_SASL_USERNAME": KAFKA_CLIENT_USER,
            "ASSETLOG_KAFKA_SASL_PASSWORD": self.passwords()["kafka_client"],
            "ASSETLOG_KAFKA_SSL_CA_LOCATION": str(self.ca_file),
        }

    def librdkafka_settings(self) -> dict[str, str]:
        """The same settings as librdkafka keys, for the stack's own readiness checks."""
        return {name.removeprefix("ASSETLOG_KAFKA_").lower().replace("_", "."): value
                for name, value in self.kafka_client_settings().items()}


__all__ = ["KAFKA_ADMIN_USER", "KAFKA_CLIENT_USER", "SCRAM_MECHANISM", "SecurityMaterial",
           "make_certificate_authority", "make_server_certificate"]
