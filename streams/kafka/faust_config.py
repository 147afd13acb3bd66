"""faust (aiokafka driver) connection settings from the one settings object.

The same security settings as the confluent-kafka clients (``Settings.kafka_common``):
``effective_security_protocol()`` decides the protocol for both, so a worker's faust side and
its confluent side never disagree. aiokafka supports SASL PLAIN and SCRAM-SHA-256/512, over
plaintext or TLS, and TLS alone.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path
from typing import Any

import faust

from streams.errors import ConfigError
from streams.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context verifying the broker with ``ssl_ca_location`` (else system CAs)."""
    try:
        return ssl.create_default_context(cafile=settings.ssl_ca_location)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load FRAUD_SSL_CA_LOCATION {settings.ssl_ca_location}: {exc}"
        ) from None


def broker_credentials(settings: Settings) -> Any | None:
    """faust credentials for the effective security protocol; None for PLAINTEXT."""
    protocol = settings.effective_security_protocol()
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL_"):
        assert settings.sasl_mechanism and settings.sasl_password  # checked by Settings
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism.upper(),
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def faust_broker_settings(settings: Settings) -> dict[str, Any]:
    """``faust.App`` keyword arguments: broker URLs, credentials, group timing."""
    if not settings.bootstrap_servers:
        raise ConfigError("no Kafka bootstrap servers configured")
    servers = [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()]
    conf: dict[str, Any] = {
        "broker": ";".join(f"kafka://{s.split('://', 1)[-1]}" for s in servers),
        "broker_session_timeout": settings.session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.heartbeat_interval_ms / 1000,
    }
    credentials = broker_credentials(settings)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    return conf


def data_dir(app_id: str) -> Path:
    """faust's data directory for ``app_id``, under the system temp directory (never the
    current one), with its parent created (faust creates only the last level)."""
    base = Path(tempfile.gettempdir()) / "fraudstream"
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{app_id}-data"
