"""Server settings: one dataclass, filled from flags or JOBMON_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FSYNC_POLICIES = ("always", "everysec", "no")


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 7070
    data_dir: Path = Path("jobmon-data")
    in_memory: bool = False
    fsync: str = "everysec"
    max_retries: int = 3
    max_line_bytes: int = 1 << 20
    node_id: str = "monitor"
    compact_min_bytes: int = 64 << 20
    shutdown_timeout: float = 10.0
    lost_grace_ms: int = 30_000
    realert_ms: int = 0  # 0: off
    webhooks: list[str] = field(default_factory=list)
    alertmanager: str | None = None
    alertmanager_resend_s: float = 60.0
    notify_backoff_s: float = 0.5  # first retry delay; doubles per attempt
    http_port: int = 0  # 0: no HTTP (the CLI's default is 7071)
    # Per-job series in /metrics: the first N jobs (first-seen order, so the set
    # of series is stable); Prometheus advises against unbounded label values.
    metrics_job_series: int = 1000
    token: str | None = None  # --token: required of every TCP and HTTP client
    slow_run_factor: float = 2.0  # slow_run: a run over k x its job's p95 (0: off)
    # --cost-model: CostModel's fields by name (analytics.CostModel has the defaults).
    cost_model: dict[str, float] = field(default_factory=dict)
    # --allow-command NAME=PATH: what start_job may run (needs --token).
    allowed_commands: dict[str, str] = field(default_factory=dict)
    # Healthchecks' APIs (hc/) and Apprise notifications (notify_apprise.py).
    ping_key: str | None = None  # --ping-key: slug ping URLs /ping/<key>/<slug>
    public_url: str | None = None  # --public-url: links in notifications and API replies
    notify: list[str] = field(default_factory=list)  # --notify [NAME=]URL (Apprise)
    # --tls-cert / --tls-key: both ports speak TLS only (tls.py, tls_listen.py).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_handshake_timeout_s: float = 10.0
    event_ids_kept: int = 200_000  # --event-ids-kept: event_id memory (idempotency)
    # --redis / --redis-sentinel: several nodes over one Redis (see cluster/).
    redis: str | None = None
    redis_sentinels: list[tuple[str, int]] = field(default_factory=list)
    redis_master: str | None = None
    redis_min_replicas: int = 0
    cluster_name: str = "jobmon"
    lease_ms: int = 5000

    @property
    def clustered(self) -> bool:
        return self.redis is not None or bool(self.redis_sentinels)

    # Connections (see limits and the README's "Limits"), as Redis and nginx bound them.
    max_connections: int = 10_000  # TCP; the excess gets an error line and is closed
    max_http_connections: int = 1_000
    auth_timeout_ms: int = 10_000  # under --token: authenticate within this, or be closed
    http_timeout_ms: int = 10_000  # for a request's headers, and again for its body
    celery: list[str] = field(default_factory=list)  # --celery URL: clusters to watch
