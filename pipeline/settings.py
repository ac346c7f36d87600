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
    # A stopping worker sends LeaveGroup (its partitions move at once) only when true;
    # otherwise the broker evicts it after session_timeout_ms. Off by default: the bundled
    # broker (Tansu) can lose the group's leader to a LeaveGroup during a rebalance and
    # then never assign a partition again. True is safe and faster on Apache Kafka.
    leave_group_on_close: bool = False
    max_frame_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    # Pixels a frame may declare (headers and the image file's own header, checked before
    # decoding): 50 Mpx is above any line camera; a decompression bomb declares far more.
    max_frame_pixels: int = Field(50_000_000, ge=1024)
    # Bytes a consumer fetch may bring per partition: the client's 1 MiB default holds
    # about one 900 px PNG frame, so a worker made several round trips per micro-batch.
    fetch_partition_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    compression: Literal["none", "gzip"] = "none"


class DatabaseSettings(BaseSettings):
    model_config = _COMMON

    database_url: str = "sqlite:///clad-line.db"
    db_pool_size: int = Field(5, ge=1, le=100)
    db_connect_timeout_s: int = Field(5, ge=1, le=300)
    # Bounds on every wait of the worker and the API on PostgreSQL (0 = none): the server
    # ends a statement or an abandoned transaction; the client cuts a connection checked
    # out longer than db_checkout_timeout_s (a database that stopped answering) and
    # retries on a fresh one; the kernel gives up on unacknowledged data.
    db_statement_timeout_s: float = Field(30.0, ge=0, le=3600)
    db_idle_in_transaction_timeout_s: float = Field(60.0, ge=0, le=3600)
    db_checkout_timeout_s: float = Field(30.0, ge=0, le=3600)
    db_tcp_user_timeout_s: float = Field(20.0, ge=1, le=3600)

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
    backend: Literal["auto", "tensorrt", "onnxruntime", "openvino", "torch"] = "auto"
    # CPU inference requests in flight per model (onnxruntime sessions / OpenVINO infer
    # requests, each batch split over them); None = one per 4 cores, at most 4.
    infer_requests: int | None = Field(None, ge=1, le=64)
    # int8: the model version's INT8 IR (`clad export --backend openvino --precision int8
    # --references DIR`) under OpenVINO; the plain graph only (CLAD_LINE_CONTEXT=false).
    # An option, not a default: on the suite (bench.precision) it is within 0.5 AUROC
    # points of fp32 at 4 references, 1.3 image points below at 1; at batch 8 on this
    # project's AVX2 host 2.25x the path before issue 17 at 4 references, 1.9x at 1, where
    # fp32 gives 2.0x / 1.56x (engine/runtime/NOTES.md). `clad export --eval DIR` checks
    # a product.
    cpu_precision: Literal["fp32", "int8"] = "fp32"
    # Overrides the threshold calibrated with the model; None keeps the calibrated one.
    anomaly_threshold: float | None = Field(None, ge=0.0)
    min_region_area_px: int = Field(64, ge=1)


class LineContextSettings(BaseSettings):
    """Scoring against the line's own recent frames (engine.scoring.line_context), per product."""

    model_config = _COMMON

    # Off: every frame is scored against its references only. On: with the onnxruntime
    # CPU backend a second graph returns the embeddings and the context search runs in
    # torch; on a GPU worker the torch module scores in fp16 on the GPU; with a
    # text-branch model (or TensorRT beside a CPU-only torch) the torch module on the CPU.
    # `clad eval` follows this setting too (--context/--no-context overrides it).
    line_context: bool = True
    line_context_frames: int = Field(32, ge=1, le=1024)  # see ContextConfig.max_frames
    line_context_max_age_s: float = Field(3600.0, gt=0)
    # Each frame is searched against this many of the context's frames, the most alike
    # (0 = all of them); see ContextConfig.search_frames.
    line_context_search_frames: int = Field(16, ge=0, le=1024)
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
    # Address the /metrics and /healthz endpoint binds. All interfaces by default: the
    # Kubernetes probes and Prometheus reach a pod on its own IP, compose's Prometheus
    # on the container's; 127.0.0.1 keeps it to the machine (a worker run by hand on a
    # shared host), "::" serves IPv6 as well.
    metrics_host: str = Field("0.0.0.0", min_length=1, max_length=255)
    model_check_interval_s: float = Field(10.0, gt=0)
    # Longest wait between retries while Postgres or Kafka is unreachable.
    max_backoff_s: float = Field(10.0, gt=0, le=300)
    # /healthz (the liveness probe) answers 503 once the worker's loop has made no
    # progress for this long: a call that never returns. Longer than the slowest batch
    # and the slowest model load between batches; retries of an outage count as progress.
    stall_after_s: float = Field(600.0, ge=10, le=86_400)
    # After SIGTERM the worker finishes its batch and leaves; past this bound it exits
    # anyway (code 3; what was in flight is redelivered). Below Kubernetes' default 30 s.
    shutdown_timeout_s: float = Field(25.0, gt=0, le=3600)
    # Attempts at an offset commit on broker errors before it is given up (the next
    # batch's commit covers it; a crash redelivers, idempotently).
    commit_attempts: int = Field(5, ge=1, le=100)
    # Poll timeout while waiting on a dependency: long enough for a rebalance that starts
    # meanwhile to finish its join (with 0 it never does and the group stalls).
    membership_poll_ms: int = Field(200, ge=10, le=10_000)
    # "module:callable" building {product: ScoringEngine} from Settings; overrides
    # model_dir (custom backends, and the deterministic engine of the pipeline tests).
    engine_factory: str | None = None


class ApiSettings(BaseSettings):
    model_config = _COMMON

    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    # Creates the first admin token at start-up; further tokens are made with `clad token`.
    api_bootstrap_token: SecretStr | None = None
    # Lifetime of tokens made by `clad token create` (unless --expires-days) and of the
    # bootstrap token; an expired token is refused with 401 like a revoked one.
    api_token_days: int = Field(90, ge=1, le=3650)
    # The OpenAPI document (/openapi.json) and its browser (/docs): "off" serves neither,
    # "viewer" serves them to any valid token (header or console cookie), "public" to all.
    api_docs: Literal["off", "viewer", "public"] = "off"
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


class ReviewSettings(BaseSettings):
    """The console's review queue of verdicts the model was unsure about."""

    model_config = _COMMON

    # Per product and hour, this many verdicts closest to the threshold are queued, and
    # as many of those with a region no kind was sure of: the queue's size does not grow
    # with production (pipeline/storage/review.py).
    review_per_hour: int = Field(3, ge=1, le=1000)
    # Verdicts older than this are not queued.
    review_window_hours: int = Field(168, ge=1, le=24 * 366)
    # Regions stored before kinds: those whose description starts with this (any case)
    # count as unclear.
    review_unclear_prefix: str = Field("unclear", min_length=1, max_length=100)
    # Regions whose embeddings (same describer, same product) are at least this similar
    # (cosine) are offered as one group to name with one label.
    review_group_similarity: float = Field(0.9, gt=0.0, le=1.0)


class CameraSettings(BaseSettings):
    """What the line knows about its cameras."""

    model_config = _COMMON

    # Millimetres per frame pixel, per camera id ("*": any camera not listed), as JSON:
    # CLAD_CAMERA_MM_PER_PX='{"cam-1": 0.05, "*": 0.08}'. An unnamed region's size is
    # then said in mm too ("62 px (3.1 mm) long"); unset: pixels only.
    camera_mm_per_px: dict[str, float] = Field(default_factory=dict)

    @field_validator("camera_mm_per_px")
    @classmethod
    def _positive_scales(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"millimetres per pixel must be above 0: {bad}")
        return value


class AlarmSettings(BaseSettings):
    """Defect-rate alarms, evaluated by the API process on a timer."""

    model_config = _COMMON

    # Seconds between evaluations of the alarm rules; 0 turns the evaluator off
    # (tests, or when another API replica evaluates).
    alarm_interval_s: float = Field(60.0, ge=0, le=24 * 3600)
    # Kafka topic that gets one event per alarm raised (needs a real broker address).
    alarm_topic: str = Field("alarms", min_length=1, max_length=249)


class RetrainSettings(BaseSettings):
    """`clad retrain` and `clad model prune`: what is kept on disk, what the bank learns from."""

    model_config = _COMMON

    # Rejected versions whose directories are kept per product (newest first); older
    # ones are removed after each run (their rows and figures stay).
    retrain_keep_rejected: int = Field(1, ge=0, le=1000)
    # models/.work entries (feature caches, checkpoints of interrupted runs) untouched this
    # long are removed after each run; an interrupted run resumes only within it.
    retrain_work_max_age_days: float = Field(7.0, ge=0, le=3650)
    # The memory bank's normals are chosen among those captured within this many days of
    # the newest one, with a recency weight halving every half-life.
    retrain_bank_window_days: float = Field(30.0, gt=0, le=3650)
    retrain_bank_half_life_days: float = Field(7.0, gt=0, le=3650)
    # Frames captured within one block of this many seconds (any camera) go to the same
    # side of the held-out split: near-identical shots of one part never straddle it.
    retrain_group_seconds: float = Field(10.0, ge=0, le=86_400)


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
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    alarms: AlarmSettings = Field(default_factory=AlarmSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    camera: CameraSettings = Field(default_factory=CameraSettings)


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
            review=ReviewSettings(**kwargs),
            alarms=AlarmSettings(**kwargs),
            retrain=RetrainSettings(**kwargs),
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
