"""Process configuration, read from CLAD_* environment variables and `.env`.

One frozen settings class per concern; `Settings` gathers them. Built once in
`main()` and passed down: no module reads the environment on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_COMMON = SettingsConfigDict(
    env_prefix="CLAD_", env_file=".env", extra="ignore", frozen=True, validate_default=True
)

EMBEDDED_BROKER = "embedded"


class KafkaSettings(BaseSettings):
    model_config = _COMMON

    # "embedded" starts the bundled Tansu broker (demo only: it keeps nothing across restarts).
    bootstrap_servers: str = EMBEDDED_BROKER
    topic_frames: str = "frames"
    topic_verdicts: str = "verdicts"
    topic_dlq: str = "frames.dlq"
    consumer_group: str = "clad-workers"
    topic_partitions: int = Field(4, ge=1, le=1024)
    # Tansu joins a group in about session_timeout/2; 6 s keeps start-up and rebalances short.
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    max_frame_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    # Bytes a consumer fetch may bring per partition: the client's 1 MiB default holds
    # about one 900 px PNG frame, so a worker made several round trips per micro-batch.
    fetch_partition_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    compression: Literal["none", "gzip"] = "none"


class DatabaseSettings(BaseSettings):
    model_config = _COMMON

    database_url: str = "sqlite:///clad-line.db"
    db_pool_size: int = Field(5, ge=1, le=100)
    db_connect_timeout_s: int = Field(5, ge=1, le=300)

    @field_validator("database_url")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if not value.startswith(("postgresql", "sqlite")):
            raise ValueError("must be a postgresql+psycopg:// or sqlite:/// URL")
        return value


class RedisSettings(BaseSettings):
    model_config = _COMMON

    # None keeps the region cache in process (fine for one worker and the demo).
    redis_url: str | None = None
    cache_ttl_s: int = Field(24 * 3600, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class ModelSettings(BaseSettings):
    model_config = _COMMON

    model_dir: Path = Path("models")
    backend: Literal["auto", "tensorrt", "onnxruntime", "torch"] = "auto"
    # Overrides the threshold calibrated with the model; None keeps the calibrated one.
    anomaly_threshold: float | None = Field(None, ge=0.0)
    min_region_area_px: int = Field(64, ge=1)


class LineContextSettings(BaseSettings):
    """Scoring against the line's own recent frames (engine.line_context), per product."""

    model_config = _COMMON

    # Off: every frame is scored against its references only. On: with the onnxruntime
    # CPU backend a second graph returns the embeddings and the context search runs in
    # torch; with TensorRT or a text-branch model the torch module scores.
    line_context: bool = True
    line_context_frames: int = Field(64, ge=1, le=1024)
    line_context_max_age_s: float = Field(3600.0, gt=0)
    # The context can lower a reference distance at most to this share of it.
    line_context_floor: float = Field(0.0, ge=0.0, le=1.0)
    # A context_drift event goes to the verdicts topic when this share of a product's last
    # 50 frames scores above its context's cut (again once it fell below half of it).
    line_context_drift_alert: float = Field(0.5, gt=0.0, le=1.0)


class WorkerSettings(BaseSettings):
    model_config = _COMMON

    batch_size: int = Field(8, ge=1, le=1024)
    max_wait_ms: int = Field(50, ge=0, le=60_000)
    decode_threads: int = Field(2, ge=1, le=64)
    metrics_port: int = Field(9108, ge=0, le=65535)
    model_check_interval_s: float = Field(10.0, gt=0)
    # Longest wait between retries while Postgres or Kafka is unreachable.
    max_backoff_s: float = Field(10.0, gt=0, le=300)
    # "module:callable" building {product: ScoringEngine} from Settings; overrides
    # model_dir (custom backends, and the deterministic engine of the pipeline tests).
    engine_factory: str | None = None


class ApiSettings(BaseSettings):
    model_config = _COMMON

    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    # Creates the first admin token at start-up; further tokens are made with `clad token`.
    api_bootstrap_token: SecretStr | None = None
    # Where original frame bytes live for the console and retraining: "database"
    # (a bytea column, small deployments), "directory" (files under frame_dir,
    # frames.image_ref holds the relative path) or "none" (not kept).
    frame_storage: Literal["database", "directory", "none"] = "database"
    frame_dir: Path = Path("frames")
    # `clad frames purge` drops the bytes of frames older than this; 0 keeps them forever.
    frame_retention_days: int = Field(30, ge=0, le=36500)

    @field_validator("api_bootstrap_token")
    @classmethod
    def _not_a_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if secret.lower() in {"changeme", "change-me", "secret", "admin", "token"}:
                raise ValueError("is a placeholder; set a real random token")
            if len(secret) < 16:
                raise ValueError("must be at least 16 characters")
        return value


class Settings(BaseSettings):
    """Every concern's settings, each read from CLAD_* variables."""

    model_config = _COMMON

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    context: LineContextSettings = Field(default_factory=LineContextSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)


class SettingsError(ValueError):
    """Settings that cannot be used, with the offending CLAD_* variables named."""


def load_settings(env_file: Path | None = None) -> Settings:
    """Read every concern's settings; raise SettingsError naming the bad variables."""
    kwargs = {"_env_file": env_file} if env_file is not None else {}
    try:
        return Settings(
            kafka=KafkaSettings(**kwargs),
            database=DatabaseSettings(**kwargs),
            redis=RedisSettings(**kwargs),
            model=ModelSettings(**kwargs),
            worker=WorkerSettings(**kwargs),
            context=LineContextSettings(**kwargs),
            api=ApiSettings(**kwargs),
        )
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        value = error.get("input")
        shown = "***" if "token" in field else repr(value)
        problems.append(f"CLAD_{field.upper()}={shown}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)
