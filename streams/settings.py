"""The one settings object.

Precedence, highest first: command-line flags (passed as overrides), environment variables with the
``FRAUD_`` prefix, a YAML config file (``--config`` or ``FRAUD_CONFIG``), then the defaults below.

The YAML file is named by the ``config_file`` init argument (what ``--config`` sets) or, without
it, by ``FRAUD_CONFIG``; nothing here writes to the environment. Its keys are the field names
below (``bootstrap_servers: ...``); an unknown key is an error, not silently ignored.

Secrets (``sasl_password``, ``pseudonymize_key``) are ``SecretStr``: ``repr``, ``str``,
``masked()`` and ``config show`` never print them; only ``kafka_common()`` and ``as_env()``
(for a child process) reveal them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from streams.errors import ConfigError

CONFIG_ENV = "FRAUD_CONFIG"
MASK = "********"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def config_path_from(init_kwargs: dict[str, Any] | None = None) -> Path | None:
    """The YAML file to read: the ``config_file`` init argument, else ``FRAUD_CONFIG``."""
    kwargs = init_kwargs or {}
    value = kwargs.get("config_file") or kwargs.get(CONFIG_ENV) or os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


class YamlFileSource(PydanticBaseSettingsSource):
    """Settings from one YAML mapping; unknown keys and a non-mapping document are errors."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path):
        super().__init__(settings_cls)
        self.path = path
        self.data = self._read()

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise ConfigError(f"config file not found: {self.path}")
        try:
            text = self.path.read_text(encoding="utf-8")
            loaded = YAML(typ="safe", pure=True).load(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc}") from None
        except MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{self.path}{where}: invalid YAML: {exc.problem}") from None
        except YAMLError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
            raise ConfigError(f"{self.path}: invalid YAML: {first}") from None
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{self.path}: a config file holds a mapping of setting: value")
        fields = self.settings_cls.model_fields
        unknown = sorted(str(k) for k in loaded if k not in fields or k == "config_file")
        if unknown:
            raise ConfigError(
                f"{self.path}: unknown setting(s) {', '.join(unknown)} "
                "(keys are the names `fraudstream config show` prints)"
            )
        return {str(k): v for k, v in loaded.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", frozen=True, extra="ignore", populate_by_name=True
    )

    # --- Kafka connection -------------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = start a broker (broker_kind)"
    )
    broker_kind: Literal["embedded", "kafka"] = Field(
        default="embedded",
        description="the broker started when no bootstrap servers are set: the embedded Tansu "
        "or Apache Kafka (KRaft) from the cached Maven jars (needs Java 17+)",
    )
    security_protocol: str | None = Field(
        default=None,
        description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL; unset = SASL_PLAINTEXT when "
        "SASL credentials are set (SASL_SSL with a CA), SSL with a CA alone, else PLAINTEXT",
    )
    sasl_mechanism: str | None = Field(
        default=None, description="PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512"
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = Field(default=None, description="CA bundle (PEM) for TLS")
    connect_timeout_s: float = Field(
        default=5.0, description="how long a command waits for a configured broker to answer"
    )
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    linger_ms: int = Field(
        default=5,
        ge=0,
        description="how long a producer fills a batch before sending it (librdkafka "
        "linger.ms; 5 is librdkafka's and Apache Kafka 4's default)",
    )
    fetch_wait_ms: int = Field(
        default=50,
        ge=0,
        description="longest a fetch of the confluent-kafka consumers (stage 1, its rebuilds, "
        "readers) waits for records (librdkafka fetch.wait.max.ms); Apache Kafka answers as soon "
        "as a record arrives, the embedded broker holds each fetch for the whole wait and "
        "returns next to nothing from waits under ~20 ms when its partitions are large",
    )

    # --- topics (names live here and only here) --------------------------------------------
    topic_transactions: str = "transactions"
    topic_flagged: str = "transactions.flagged"
    topic_decisions: str = "decisions"
    topic_labels: str = "labels"
    topic_dlq: str = "transactions.dlq"
    topic_flagged_dlq: str = "transactions.flagged.dlq"
    topic_checkpoints: str = "stage1.checkpoints"
    partitions: int = 4
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="the topics' min.insync.replicas (with acks=all, a write succeeds only once "
        "this many replicas have it; with fewer in sync producers wait and retry); unset = the "
        "broker's default (1 unless the broker sets it)",
    )

    # --- stage 1 ----------------------------------------------------------------------------
    stage1_group: str = "stage1"
    stage1_batch_size: int = 2000
    stage1_batch_wait_ms: int = Field(
        default=5,
        ge=0,
        description="longest a stage-1 poll waits when no record is ready (records that are "
        "ready are taken at once, up to stage1_poll_size: a poll never waits for a fuller batch)",
    )
    stage1_poll_size: int = Field(
        default=10_000,
        description="most records a stage-1 worker takes per poll (a backlog is read in big "
        "polls; steady traffic gives small ones); label release and calibrations stay at "
        "stage1_batch_size positions, so results do not depend on it",
    )
    rules_dir: Path = Path("rules")
    rules_reload: bool = True
    # block rules beat allow rules unless this is set (streams.rules.engine: precedence)
    rules_allow_beats_block: bool = False
    stage1_warm_start: bool = Field(
        default=True,
        description="start each partition's online classifier from the model directory's "
        "stage1_online.json (written by train) when there is one, instead of from nothing",
    )
    stage1_recall_target: float = Field(
        default=0.98,
        gt=0,
        le=1,
        description="share of the labelled frauds (of cards not known compromised) within the "
        "maximum budget's reach that stage 1 aims to forward; its recall controller sets the "
        "forward budget for it",
    )
    stage1_min_forward_share: float = Field(
        default=0.02, ge=0, le=1, description="the forward budget's floor (share of traffic)"
    )
    stage1_max_forward_share: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="the most stage 1 forwards by its model and rules together (share of "
        "traffic); the model never forwards beyond it, even when its scores jump",
    )
    stage1_rank_by_posterior: bool = Field(
        default=True,
        description="rank a transaction for the forward budget by the higher of its percentiles "
        "of the online classifier's probability and of the card-compromise posterior "
        "(CARD_COMPROMISE_LOGIT); off: by the classifier's alone",
    )
    flag_anomaly_threshold: float = Field(
        default=0.999, description="forward when the anomaly percentile reaches this"
    )
    label_cache_size: int = Field(
        default=250_000,
        description="feature vectors kept per partition to learn from delayed labels",
    )
    stage1_checkpoint_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="seconds between checkpoints of each partition's stage-1 state in "
        "topic_checkpoints (0: none; a restart then rereads every partition from its beginning)",
    )
    labels_wait: bool = Field(
        default=True,
        description="before a batch, read the labels topic up to the batch's event time (or its "
        "end), so labels apply at the same stream position in every run, crash or replay; off, "
        "a label that arrives after its time applies at the next segment",
    )
    labels_wait_ms: int = Field(
        default=1000,
        ge=0,
        description="longest a batch waits for the labels published up to its event time",
    )
    labels_idle_ms: int = Field(
        default=1000,
        ge=0,
        description="a labels partition at its end that brought nothing for this long is idle: "
        "batches do not wait for it",
    )
    labels_fetch_wait_ms: int = Field(
        default=50, ge=0, description="longest a labels fetch waits (librdkafka fetch.wait.max.ms)"
    )
    anomaly_trees: int = 3
    anomaly_height: int = 6
    anomaly_learn_every: int = 4

    # --- stage 2 ----------------------------------------------------------------------------
    stage2_app_id: str = "stage2"
    stage2_batch_size: int = 500
    stage2_batch_wait_ms: int = 10
    stage2_commit_interval_s: float = Field(
        default=2.8,
        gt=0,
        description="how often stage 2 commits its offsets (exactly-once: its transactions); "
        "faust's broker_commit_interval",
    )
    stage2_stream_buffer: int = Field(
        default=16_384,
        ge=1,
        description="flagged records faust may prefetch ahead of the agent (its "
        "stream_buffer_maxsize)",
    )
    stage2_fetch_wait_ms: int = Field(
        default=20,
        ge=0,
        description="longest a stage-2 fetch waits for records (aiokafka fetch_max_wait_ms)",
    )
    model_dir: Path = Path("models/default")
    challenger_dir: Path | None = None
    policy_file: Path = Path("config/policy.yaml")
    stage2_max_attempts: int = 3
    stage2_exactly_once: bool = Field(
        default=False,
        description="stage 2 in faust's Kafka transactions (decisions, card table and offsets "
        "commit together; read them with read_committed). Apache Kafka only",
    )

    # --- operations -------------------------------------------------------------------------
    metrics_port: int | None = None
    log_format: Literal["plain", "json"] = "plain"
    log_level: str = "INFO"
    pseudonymize_key: SecretStr | None = Field(
        default=None, description="HMAC key: card ids in outputs and logs become keyed hashes"
    )
    exactly_once: bool = False
    transactional_id: str | None = Field(
        default=None,
        description="stage-1 --exactly-once transactional id; default <group>-<hostname>. Keep "
        "it stable across restarts so a restarted worker fences its predecessor",
    )

    config_file: Path | None = Field(
        default=None,
        alias="FRAUD_CONFIG",
        description="the YAML file these settings were read from",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = (
            init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        )
        path = config_path_from(init_kwargs)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(YamlFileSource(settings_cls, path))
        return tuple(sources)

    @model_validator(mode="after")
    def _check_forward_shares(self) -> Settings:
        if self.stage1_min_forward_share > self.stage1_max_forward_share:
            raise ValueError(
                f"stage1_min_forward_share ({self.stage1_min_forward_share}) exceeds "
                f"stage1_max_forward_share ({self.stage1_max_forward_share})"
            )
        return self

    @model_validator(mode="after")
    def _check_min_insync(self) -> Settings:
        if (
            self.min_insync_replicas is not None
            and self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds replication_factor "
                f"({self.replication_factor}): no write could ever succeed"
            )
        return self

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        protocol = self.effective_security_protocol()
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"security_protocol {self.security_protocol!r} is not one of "
                f"{', '.join(SECURITY_PROTOCOLS)}"
            )
        mechanism = (self.sasl_mechanism or "").upper()
        if mechanism and mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"sasl_mechanism {self.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}"
            )
        if protocol.startswith("SASL_"):
            missing = [
                f"FRAUD_{name.upper()}"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"security protocol {protocol} needs {', '.join(missing)}")
        return self

    # --- derived client configuration -----------------------------------------------------
    def has_sasl(self) -> bool:
        return bool(self.sasl_mechanism or self.sasl_username or self.sasl_password)

    def effective_security_protocol(self) -> str:
        """The protocol both client libraries use (see ``security_protocol``)."""
        if self.security_protocol:
            return self.security_protocol.strip().upper()
        if self.has_sasl():
            return "SASL_SSL" if self.ssl_ca_location else "SASL_PLAINTEXT"
        return "SSL" if self.ssl_ca_location else "PLAINTEXT"

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and admin clients."""
        if not self.bootstrap_servers:
            raise ConfigError("no Kafka bootstrap servers configured")
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        protocol = self.effective_security_protocol()
        if protocol != "PLAINTEXT":
            conf["security.protocol"] = protocol
        if protocol.startswith("SASL_"):
            assert self.sasl_mechanism and self.sasl_password  # checked by _check_security
            conf["sasl.mechanism"] = self.sasl_mechanism.upper()
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if protocol.endswith("SSL") and self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def secret_values(self) -> list[str]:
        """The clear values of every secret set (for log redaction)."""
        return [
            value.get_secret_value()
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr) and value.get_secret_value()
        ]

    def masked(self) -> dict[str, Any]:
        """Effective settings for display, with every secret masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(getattr(self, name), SecretStr):
                value = MASK
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out

    def as_env(self) -> dict[str, str]:
        """These settings as ``FRAUD_*`` variables for a child process, secrets in clear.

        Never print or log the result; use ``masked()`` for display.
        """
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or name == "config_file":
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"FRAUD_{name.upper()}"] = str(value)
        return env


def _describe(error: pydantic.ValidationError) -> str:
    """One line for a pydantic error, never echoing the value of a secret."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item.get("loc", ())) or "settings"
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        info = Settings.model_fields.get(field)
        secret = info is not None and "SecretStr" in str(info.annotation)
        if "input" in item and item.get("type") != "value_error" and not secret:
            message += f" (got {item['input']!r})"
        parts.append(f"{field}: {message}" if field != "settings" else message)
    return "; ".join(parts)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` with value None are ignored (unset CLI flags).

    ``config_file`` (``--config``) wins over ``FRAUD_CONFIG``; either must name a file.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        clean["config_file"] = Path(config_file)
    path = config_path_from(clean)
    if path is not None and not path.is_file():
        source = "--config" if config_file is not None else CONFIG_ENV
        raise ConfigError(f"config file not found: {path} (from {source})")
    if path is not None:
        clean["config_file"] = path
    try:
        return Settings(**clean)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid settings: {_describe(exc)}") from None
