"""A private certificate authority for tests: a CA, server certificates it signs, PEM and PKCS12.

What a merchant's platform has when its brokers, registry or a TLS-intercepting proxy present
certificates of a private CA: the tests trust it through the service's settings, and also make
the certificates that must be refused (another CA's, an expired one, one for another host).
Keys are ECDSA P-256 (fast to make); files are written with mode 0600 for keys and keystores.

Python API: ``PrivateCa.create(directory)``, then ``ca.issue(...)`` per server certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PrivateCa", "ServerCertificate"]

_DAY = datetime.timedelta(days=1)


def _write(path: Path, data: bytes, *, secret: bool = False) -> Path:
    path.write_bytes(data)
    if secret:
        os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class ServerCertificate:
    """A server's files: ``cert_path`` (its certificate, PEM), ``key_path`` (its unencrypted
    PKCS#8 key, PEM), ``chain_path`` (certificate then key, PEM: what ``ssl`` servers load) and
    ``keystore_path`` (PKCS12 with ``keystore_password``: what a JVM server loads)."""

    cert_path: Path
    key_path: Path
    chain_path: Path
    keystore_path: Path
    keystore_password: str


@dataclass(frozen=True)
class PrivateCa:
    """A self-signed CA in ``directory``: ``ca_path`` is its certificate (PEM), the file a
    client is told to trust."""

    directory: Path
    name: str
    ca_path: Path
    _key: ec.EllipticCurvePrivateKey
    _cert: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str = "test-private-ca") -> PrivateCa:
        """A new CA named ``name`` (its common name and file stem), valid for ten days."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 10 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        ca_path = _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, name, ca_path, key, cert)

    def issue(
        self,
        stem: str,
        *,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        expired: bool = False,
        keystore_password: str = "keystore-secret",  # noqa: S107 - test material
    ) -> ServerCertificate:
        """A server certificate for ``hosts`` (IP addresses or DNS names, as subject
        alternative names), signed by this CA, its files named ``<stem>.*``; ``expired``: it
        expired yesterday (valid for the ten days before)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 10 * _DAY, now - _DAY) if expired else (now - _DAY, now + 10 * _DAY)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # PBES1 3DES/SHA-1, the PKCS12 encryption every JVM reads.
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the keystore format's MAC, test material
            .build(keystore_password.encode())
        )
        keystore = pkcs12.serialize_key_and_certificates(
            stem.encode(), key, cert, [self._cert], encryption
        )
        directory = self.directory
        return ServerCertificate(
            cert_path=_write(directory / f"{stem}.crt.pem", cert_pem),
            key_path=_write(directory / f"{stem}.key.pem", key_pem, secret=True),
            chain_path=_write(directory / f"{stem}.chain.pem", cert_pem + key_pem, secret=True),
            keystore_path=_write(directory / f"{stem}.p12", keystore, secret=True),
            keystore_password=keystore_password,
        )
