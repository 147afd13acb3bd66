"""The one settings object.

Precedence, highest first: command-line flags (passed as overrides), environment variables with the
``FRAUD_`` prefix, a YAML config file (``--config`` or ``FRAUD_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from streams.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUD_", frozen=True, extra="ignore")

    # --- Kafka connection -------------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = start the embedded broker"
    )
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000

    # --- topics (names live here and only here) --------------------------------------------
    topic_transactions: str = "transactions"
    topic_flagged: str = "transactions.flagged"
    topic_decisions: str = "decisions"
    topic_labels: str = "labels"
    topic_dlq: str = "transactions.dlq"
    topic_flagged_dlq: str = "transactions.flagged.dlq"
    partitions: int = 4
    replication_factor: int = 1

    # --- stage 1 ----------------------------------------------------------------------------
    stage1_group: str = "stage1"
    stage1_batch_size: int = 2000
    stage1_batch_wait_ms: int = 5
    rules_dir: Path = Path("rules")
    rules_reload: bool = True
    flag_probability_threshold: float = Field(
        default=0.5, description="forward when the online fraud probability reaches this"
    )
    flag_budget: float = Field(
        default=0.05,
        description="also forward the top share of recent traffic by online fraud probability",
    )
    flag_anomaly_threshold: float = Field(
        default=0.999, description="forward when the anomaly percentile reaches this"
    )
    label_cache_size: int = Field(
        default=500_000, description="feature vectors kept to learn from delayed labels"
    )
    anomaly_trees: int = 3
    anomaly_height: int = 6
    anomaly_learn_every: int = 4

    # --- stage 2 ----------------------------------------------------------------------------
    stage2_app_id: str = "stage2"
    stage2_batch_size: int = 500
    stage2_batch_wait_ms: int = 10
    model_dir: Path = Path("models/default")
    challenger_dir: Path | None = None
    policy_file: Path = Path("config/policy.yaml")
    stage2_max_attempts: int = 3

    # --- operations -------------------------------------------------------------------------
    metrics_port: int | None = None
    log_format: Literal["plain", "json"] = "plain"
    log_level: str = "INFO"
    pseudonymize_key: SecretStr | None = None
    exactly_once: bool = False

    config_file: Path | None = Field(default=None, alias="FRAUD_CONFIG")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("FRAUD_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config))
        return tuple(sources)

    # --- derived client configuration -----------------------------------------------------
    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and admin clients."""
        if not self.bootstrap_servers:
            raise ConfigError("no Kafka bootstrap servers configured")
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def masked(self) -> dict[str, Any]:
        """Effective settings for display, with every secret masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(getattr(self, name), SecretStr):
                value = "********"
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` with value None are ignored (unset CLI flags)."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")
        os.environ["FRAUD_CONFIG"] = str(config_file)
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except Exception as exc:  # pydantic.ValidationError, YAML errors
        raise ConfigError(f"invalid settings: {exc}") from exc
