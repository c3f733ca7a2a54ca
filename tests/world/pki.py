"""A throw-away certificate authority for the test world.

Every TLS server in the world (the MTA-STS policy web server, and later the
SMTP servers) gets its certificates from one trustme CA, so the daemon under
test can be pointed at a single ``ca.pem`` instead of the system trust store.
Bad certificates (wrong name, expired, self-signed) are produced on purpose so
tests can prove the daemon rejects them.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import threading
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: The certificate kinds a server can present.
KINDS = ("good", "wrong-name", "expired", "self-signed", "expiring")

#: How long an "expiring" certificate has left: valid now, inside any sensible warning window.
EXPIRING_IN = datetime.timedelta(days=5)

#: The name a "wrong-name" certificate is issued for: never a world host.
WRONG_NAME = "wrong-name.invalid"


class TestPKI:
    """One test CA plus cached leaf certificates, keyed by (host, kind)."""

    __test__ = False  # pytest: this is a helper, not a test class

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="mtasts-resolver test world")
        self._ca_file = self.workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self._ca_file))
        # write_cert/server_context are called from policy-server threads.
        self._lock = threading.Lock()
        self._files: dict[tuple[str, str], tuple[Path, Path]] = {}
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA: the only trust anchor clients should use."""
        return self._ca_file

    def write_cert(self, host: str, kind: str = "good") -> tuple[Path, Path]:
        """Write (once) and return ``(cert_path, key_path)`` for host/kind.

        The cert file holds the leaf followed by the CA, which is what
        Postfix/Exim ``*_cert_file`` options and ``load_cert_chain`` expect.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown certificate kind {kind!r}, want one of {KINDS}")
        host = host.lower().rstrip(".")
        with self._lock:
            key = (host, kind)
            if key not in self._files:
                cert_pem, key_pem = self._issue(host, kind)
                stem = f"{kind}--{host}"
                cert_path = self.workdir / f"{stem}.crt"
                key_path = self.workdir / f"{stem}.key"
                cert_path.write_bytes(cert_pem)
                key_path.write_bytes(key_pem)
                key_path.chmod(0o600)
                self._files[key] = (cert_path, key_path)
            return self._files[key]

    def server_context(self, host: str, kind: str = "good") -> ssl.SSLContext:
        """A cached server-side SSLContext presenting host's ``kind`` cert."""
        host = host.lower().rstrip(".")
        cert_path, key_path = self.write_cert(host, kind)
        with self._lock:
            ctx = self._contexts.get((host, kind))
            if ctx is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(str(cert_path), str(key_path))
                self._contexts[(host, kind)] = ctx
            return ctx

    def cert_der(self, host: str, kind: str = "good") -> bytes:
        """DER of the leaf certificate, e.g. to compute TLSA "3 0 x" data."""
        cert_path, _ = self.write_cert(host, kind)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )

    def tlsa_data(self, host: str, kind: str = "good", selector: int = 1) -> str:
        """Hex SHA-256 of the leaf cert (selector 0) or its SPKI (selector 1).

        This is the data field of a ``3 <selector> 1`` (DANE-EE) TLSA record.
        """
        cert_path, _ = self.write_cert(host, kind)
        return _sha256_hex(x509.load_pem_x509_certificate(cert_path.read_bytes()), selector)

    def ca_tlsa_data(self, selector: int = 1) -> str:
        """Hex SHA-256 of the CA cert/SPKI, for ``2 <selector> 1`` (DANE-TA)."""
        return _sha256_hex(x509.load_pem_x509_certificate(self.ca.cert_pem.bytes()), selector)

    def _issue(self, host: str, kind: str) -> tuple[bytes, bytes]:
        """Create the PEM cert chain and key for one (host, kind)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        if kind == "self-signed":
            return _self_signed(host, now)
        if kind == "good":
            leaf = self.ca.issue_cert(host)
        elif kind == "wrong-name":
            leaf = self.ca.issue_cert(WRONG_NAME)
        elif kind == "expiring":  # valid, but not for long
            leaf = self.ca.issue_cert(host, not_before=now - datetime.timedelta(days=30), not_after=now + EXPIRING_IN)
        else:  # expired: valid name and chain, but not_after is in the past
            leaf = self.ca.issue_cert(
                host,
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            )
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return chain + self.ca.cert_pem.bytes(), leaf.private_key_pem.bytes()


def _sha256_hex(cert: x509.Certificate, selector: int) -> str:
    if selector == 0:
        data = cert.public_bytes(serialization.Encoding.DER)
    elif selector == 1:
        data = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        raise ValueError("TLSA selector must be 0 or 1")
    return hashlib.sha256(data).hexdigest()


def _self_signed(host: str, now: datetime.datetime) -> tuple[bytes, bytes]:
    """A certificate for host that is its own issuer (trustme cannot do this)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
