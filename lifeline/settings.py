"""The one settings object, read once from the environment (prefix ``LIFELINE_``) by the entry point."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.protocol import DEFAULT_PREFIX, PayloadLimits
from twin.errors import ConfigError
from twin.mqtt import MqttConfig


class Settings(BaseSettings):
    """Every setting of Lifeline Twin; each can be set as ``LIFELINE_<NAME>`` in the environment or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="LIFELINE_", env_file=".env", extra="ignore")

    database_url: str | None = Field(None, description="PostgreSQL URL; unset: the demo starts an embedded server")
    mqtt_url: str | None = Field(
        None, description="mqtt://[user:password@]host[:port]; unset: the demo starts a broker"
    )
    db_schema: str = Field("lifeline", description="PostgreSQL schema holding every table")
    storage_mode: Literal["auto", "timescaledb", "postgresql"] = "auto"
    topic_prefix: str = DEFAULT_PREFIX

    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    mqtt_client_id: str = Field(
        "lifeline-ingest-{hostname}", description="client id; {hostname} is replaced, so replicas differ"
    )
    mqtt_shared_group: str | None = Field(None, description="share the subscription: $share/<group>/...")
    mqtt_receive_maximum: int = Field(10_000, ge=1, le=65535, description="unacknowledged QoS 1 messages in flight")
    mqtt_session_expiry_s: int = Field(7 * 86400, ge=0)

    ingest_batch_max: int = Field(5000, ge=1, description="readings per database write at most")
    ingest_flush_interval_s: float = Field(
        0.025, gt=0, description="longest wait before a partial batch is written (lag and alert latency vs CPU)"
    )
    ingest_db_writers: int = Field(
        2, ge=0, le=16, description="extra database connections writing batches in parallel (0: one at a time)"
    )
    ingest_batch_idle_s: float = Field(
        0.005, ge=0, description="close a batch when no message came for this long, seconds (0: never early)"
    )
    ingest_live_batch_messages: int = Field(
        500,
        ge=0,
        description="close a batch of this many messages when nothing more is waiting (ingest keeps up); 0: never",
    )
    ingest_fold_interval_s: float = Field(
        1.0,
        ge=0,
        description="fold batches' aggregates into the rollups and latest values at most this often, seconds"
        " (they lag the readings by about as much); 0: each batch folds its own",
    )
    ingest_failpoint: str | None = Field(
        None, description="fault tests only: 'crash_after_commit' or 'crash_after_spool'"
    )
    ingest_health_port: int | None = Field(
        None, ge=0, le=65535, description="serve ingest's GET /health on this port (200 while writing to the database)"
    )
    ingest_health_host: str = Field("127.0.0.1", description="address of ingest's health endpoint")
    ingest_statement_timeout_s: float = Field(
        30.0, ge=0, description="a slower database statement counts as the database away (spooled); 0: no limit"
    )
    raw_retention_days: int = Field(
        800,
        ge=0,
        description="plain PostgreSQL: ingest deletes raw readings older than this once a day, keeping the rollups"
        " (TimescaleDB's own retention policy does it there); 0 keeps everything. The yearly health check reads a"
        " year's raw readings and the year's before: 800 days keep both until the spring after",
    )

    spool_dir: Path | None = Field(
        None,
        description="parent of ingest's disk spools (one subdirectory per MQTT client id); unset:"
        " $XDG_STATE_HOME/lifeline/spool, else ~/.local/state/lifeline/spool",
    )
    spool_max_bytes: int = Field(
        1 << 30, ge=0, description="bound of one worker's spool on disk, bytes; 0 turns the spool off"
    )

    max_payload_bytes: int = Field(256 * 1024, ge=64)
    max_batch_items: int = Field(5000, ge=1)
    max_id_chars: int = Field(64, ge=8, le=1024, description="longest sensor id, unit or quality string accepted")
    max_future_s: float = Field(300.0, ge=0)
    max_age_s: float = Field(30 * 86400.0, gt=0)
    dead_letter_max_raw_bytes: int = Field(1024 * 1024, ge=0)

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    auth: Literal["tokens", "off"] = Field(
        "tokens", description="'lifeline serve' requires API tokens; 'off' only on a closed network (logged)"
    )
    api_tokens_file: Path | None = Field(None, description="TOML file of token digests ('lifeline tokens create')")
    api_rate_per_s: float = Field(20.0, ge=0, description="API requests per second per client on average (0: off)")
    api_burst: float = Field(100.0, ge=1, description="API requests a client may make at once")
    cors_origins: list[str] = Field(default_factory=list, description="other origins allowed to call the API")
    webhook_urls: list[str] = Field(default_factory=list, description="JSON list of URLs that receive alert events")
    webhook_events: list[str] = Field(default_factory=lambda: ["raised", "escalated"], description="event kinds sent")
    webhook_max_grade: int = Field(2, ge=1, le=4, description="send alerts of this grade or worse (1 = only I)")
    webhook_secret: str | None = Field(None, repr=False, description="HMAC key of the X-Lifeline-Signature header")
    embedded_broker: Literal["auto", "mosquitto", "amqtt"] = Field(
        "auto", description="broker the demo starts: Mosquitto where installed, else amqtt"
    )
    log_level: str = "INFO"

    def payload_limits(self) -> PayloadLimits:
        return PayloadLimits(
            max_payload_bytes=self.max_payload_bytes,
            max_batch_items=self.max_batch_items,
            max_id_chars=self.max_id_chars,
            max_future_s=self.max_future_s,
            max_age_s=self.max_age_s,
            dead_letter_max_raw_bytes=self.dead_letter_max_raw_bytes,
        )

    def spool_directory(self, client_id: str) -> Path | None:
        """Return the spool directory of the ingest worker *client_id*, or None when the spool is off.

        Each worker gets its own subdirectory (a spool is locked by one process), named by its client id with
        anything but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``.
        """
        if self.spool_max_bytes == 0:
            return None
        base = self.spool_dir
        if base is None:
            state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
            base = Path(state) / "lifeline" / "spool"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in client_id).lstrip(".") or "ingest"
        return base.expanduser() / safe

    def mqtt_config(self, url: str | None = None) -> MqttConfig:
        """Return the broker connection described by *url* (default: ``mqtt_url``) and the MQTT settings."""
        return mqtt_config_from_url(
            url or self.mqtt_url or "mqtt://127.0.0.1:1883",
            client_id=self.mqtt_client_id.replace("{hostname}", socket.gethostname()),
            protocol=self.mqtt_protocol,
            receive_maximum=self.mqtt_receive_maximum,
            session_expiry_s=self.mqtt_session_expiry_s,
            shared_group=self.mqtt_shared_group,
        )


def mqtt_config_from_url(url: str, **kwargs: object) -> MqttConfig:
    """Parse ``mqtt://[user:password@]host[:port]`` (or ``mqtts://``) into a :class:`MqttConfig`.

    Raises:
        ConfigError: the URL's scheme or port is not usable.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp"):
        raise ConfigError(f"MQTT URL {parts.scheme}://… must use mqtt:// or mqtts://")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ConfigError(f"MQTT URL has a bad port: {exc}") from exc
    return MqttConfig(
        host=parts.hostname or "127.0.0.1",
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "mqtts",
        **kwargs,  # type: ignore[arg-type]
    )
