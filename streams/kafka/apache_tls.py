"""A throw-away TLS setup for a local Apache Kafka: a test CA and one broker certificate.

Made with ``openssl`` at start, into the cluster's folder: the CA (``ca.pem``, what clients
give as ``ssl.ca.location`` / ``FRAUD_SSL_CA_LOCATION``), a broker key and certificate signed by
it for ``127.0.0.1`` and ``localhost`` (subjectAltName, so clients verifying the host name
accept it), and a PKCS12 keystore holding both for the JVM. Valid for two days; nothing here is
meant for production, where the certificates come from the operator's own CA.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.errors import BrokerError

VALID_DAYS = "2"
BROKER_EXTENSIONS = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
)


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # PEM: what clients trust
    keystore: Path  # PKCS12: the broker's key and certificate chain
    password: str  # the keystore's (and its key's) password

    def server_properties(self) -> dict[str, str]:
        """The broker's ``ssl.*`` settings (no client certificates asked for)."""
        return {
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.password,
            "ssl.key.password": self.password,
            "ssl.client.auth": "none",
        }


def _openssl(directory: Path, *args: str, password: str = "") -> None:
    env = {**os.environ, "FRAUD_KEYSTORE_PASSWORD": password}  # not on the command line
    result = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60, env=env
    )
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        raise BrokerError(
            f"making the test TLS certificates failed (openssl {args[0]}): "
            f"{lines[-1] if lines else result.returncode}"
        )


def make_test_tls(directory: Path) -> TlsFiles:
    """A CA and a broker certificate for 127.0.0.1 in ``directory`` (created)."""
    if shutil.which("openssl") is None:
        raise BrokerError("TLS for the local Apache Kafka needs the openssl command")
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    (directory / "broker.ext").write_text(BROKER_EXTENSIONS)
    days = ("-days", VALID_DAYS)
    _openssl(
        directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", *days, "-subj", "/CN=fraudstream test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
        "-out", "broker.csr", "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    _openssl(
        directory, "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.pem", *days, "-extfile", "broker.ext",
    )  # fmt: skip
    _openssl(
        directory, "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
        "-certfile", "ca.pem", "-name", "broker", "-out", "broker.p12",
        "-passout", "env:FRAUD_KEYSTORE_PASSWORD", password=password,
    )  # fmt: skip
    return TlsFiles(directory / "ca.pem", directory / "broker.p12", password)
