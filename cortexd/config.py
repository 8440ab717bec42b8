"""The hub's settings: one typed, frozen object.

Precedence: defaults < TOML file (``--config`` or ``CORTEX_CONFIG``) < ``CORTEX_*``
environment variables < command-line flags. Units are in the names. Every
setting is validated here, so that a bad one is a boot failure with a message
naming it (exit code CONFIG_ERROR), never a crash later in a child process.
"""

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cortex.errors import ConfigError
from cortex.tls import ServerTLS, check_plaintext, split_host_port


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY.
    if env := os.environ.get("STATE_DIRECTORY"):
        return Path(env.split(":")[0])
    return Path.home() / ".local" / "state" / "cortex"


@dataclass(frozen=True, slots=True)
class Settings:
    state_dir: Path = field(default_factory=_default_state_dir)
    node_listen: str = "127.0.0.1:7700"
    control_listen: str = "127.0.0.1:7701"
    shards: int = field(default_factory=lambda: os.cpu_count() or 1)
    insecure_loopback: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    store: str = ""  # "" = sqlite:///<state_dir>/cortex.db; or postgresql://…
    store_pool_size: int = 4  # PostgreSQL connections per control process
    store_batch_max_rows: int = 512  # group commit: writes per transaction, at most
    store_flush_delay_ms: float = 0.0  # group commit: hold a batch open this long
    # Shards write their nodes' Started, output and Finished frames themselves
    # (cortexd/shards/writes.py); false: the control process writes every node frame.
    shard_writes: bool = True
    # The shards serve the Control port too (SO_REUSEPORT) and take in plain Submit and
    # SubmitMany calls themselves (cortexd/shards/intake.py); the rest they pass to the
    # control process. false: the control process serves the port alone.
    shard_intake: bool = False
    coordination: str = "local"  # local | redis://HOST:PORT/DB[?prefix=NAME]
    hub_id: str = ""  # this hub host's name in the cluster; "" = HOSTNAME:NODE_PORT
    lease_ttl_ms: int = 5_000  # host and shard leases in Redis (renewed every TTL/3)
    queue_scan_s: float = 5.0  # clustered: adopt tasks left QUEUED by a lost offer or host
    heartbeat_interval_ms: int = 5_000  # the shortest interval; it grows with the fleet
    max_heartbeats_per_s: int = 200  # fleet-wide heartbeat budget that sets the interval
    node_grace_s: float = 60.0
    max_frame_bytes: int = 1 << 20
    ring_capacity_bytes: int = 8 << 20
    envelope_ttl_ms: int = 60_000
    signer: str = "adaptive"  # adaptive (inline below 16 per pass, else pool) | inline | pool
    signer_pool_workers: int = 2
    max_attempts: int = 3
    max_queued_tasks: int = 100_000
    max_queued_bytes: int = 1 << 30  # command, env and paths of queued tasks, together
    max_watchers: int = 1_000
    max_watchers_per_client: int = 100  # Watch/Run streams of one credential, at most
    attach_timeout_s: float = 10.0
    # Attach admission per hub host, split evenly over the shards (docs/architecture.md,
    # "Attach admission"); the rest are told RetryLater. 0 = unlimited.
    admit_per_s: int = 1_000
    max_pending_attaches: int = 1_000
    shutdown_grace_s: float = 10.0
    child_timeout_s: float = 10.0
    max_restarts_per_minute: int = 5
    # HTTP for /metrics, /healthz, /readyz (cortexd/web): "" = off; "PORT" = loopback.
    metrics_listen: str = ""
    # Artifacts (issue 12, docs/architecture.md "Artifacts").
    artifact_dir: Path | None = None  # embedded backend; None = STATE_DIR/artifacts
    artifact_max_bytes: int = 64 << 30  # one artifact, at most
    artifact_partial_max_bytes: int = 32 << 30  # all unfinished uploads on this hub
    artifact_uploads_per_client: int = 4  # concurrent Write streams per credential
    artifact_idle_timeout_s: float = 60.0  # a transfer with no data for this long ends
    artifact_task_ref_retention_s: float = 7 * 86400.0  # a task's inputs/outputs kept
    artifact_unreferenced_grace_s: float = 3600.0  # an unnamed artifact kept after use
    artifact_partial_ttl_s: float = 86400.0  # an upload nobody continues is dropped
    # Monitors (docs/architecture.md, "Monitors"): processes, and the LLM ("" = rules only).
    monitor_processes: int = 1  # 0 = no monitors
    llm_url: str = ""  # an OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1
    llm_model: str = ""
    llm_api_key_file: Path | None = None
    llm_max_concurrent: int = 4
    llm_timeout_s: float = 30.0
    llm_calls_per_task_per_min: int = 6
    llm_max_invalid_answers: int = 2
    llm_response_format: str = "json_schema"  # json_schema | json_object
    # Stored policies from files (cortexd/control/policyfiles.py): comma-separated files
    # and directories; NAME.toml is policy NAME. Re-read on SIGHUP.
    monitor_policy_files: str = ""
    # Fault injection for tests only: hold each decision this long between recording it
    # and applying it (the window a kill -9 must hit).
    monitor_hold_before_apply_ms: int = 0
    log_format: str = "auto"  # auto (JSON unless stderr is a terminal) | json | console
    log_level: str = "info"

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.state_dir / 'cortex.db'}"

    @property
    def host_id(self) -> str:
        return self.hub_id or f"{socket.gethostname()}:{split_host_port(self.node_listen)[1]}"

    @property
    def tls(self) -> ServerTLS:
        return ServerTLS(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @property
    def metrics_address(self) -> str:
        """``metrics_listen`` as HOST:PORT (a bare port is on loopback); "" = off."""
        listen = self.metrics_listen.strip()
        return f"127.0.0.1:{listen}" if listen.isdigit() else listen

    @property
    def key_file(self) -> Path:
        return self.state_dir / "hub.key"

    @property
    def tokens_file(self) -> Path:
        return self.state_dir / "tokens"

    def validate(self) -> None:
        for name in ("node_listen", "control_listen"):
            split_host_port(getattr(self, name))
            check_plaintext(getattr(self, name), self.tls.enabled, self.insecure_loopback,
                            name.replace("_", " "))
        if self.metrics_address:
            split_host_port(self.metrics_address)
        if self.tls_cert_file and not self.tls_key_file:
            raise ConfigError("tls_cert_file is set but tls_key_file is not")
        if not 1 <= self.shards <= 256:
            raise ConfigError(f"shards must be between 1 and 256, not {self.shards}")
        if self.signer not in ("adaptive", "inline", "pool"):
            raise ConfigError("signer must be 'adaptive', 'inline' or 'pool', not "
                              f"{self.signer!r}")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("log_format must be 'auto', 'json' or 'console', not "
                              f"{self.log_format!r}")
        if not self.store_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(f"store {self.store!r}: expected sqlite:///PATH or "
                              "postgresql://USER@HOST:PORT/DB")
        if not 1 <= self.store_batch_max_rows <= 8192 or not 1 <= self.store_pool_size <= 64:
            raise ConfigError("store_batch_max_rows must be 1..8192 and store_pool_size 1..64")
        if not 0 <= self.store_flush_delay_ms <= 100:
            raise ConfigError("store_flush_delay_ms must be between 0 and 100")
        self._validate_cluster()
        if self.max_frame_bytes < 64 << 10:
            raise ConfigError("max_frame_bytes must be at least 65536")
        if self.ring_capacity_bytes < 2 * self.max_frame_bytes + 4096:
            raise ConfigError("ring_capacity_bytes must be at least 2 * max_frame_bytes + 4096")
        for name in ("heartbeat_interval_ms", "max_heartbeats_per_s", "envelope_ttl_ms",
                     "max_attempts",
                     "max_queued_tasks", "max_queued_bytes", "max_watchers",
                     "max_watchers_per_client"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        self._validate_admission()
        self._validate_artifacts()
        self._validate_monitors()

    def _validate_monitors(self) -> None:
        if not 0 <= self.monitor_processes <= 16:
            raise ConfigError("monitor_processes must be between 0 and 16")
        if self.llm_url and not self.llm_url.startswith(("http://", "https://")):
            raise ConfigError(f"llm_url {self.llm_url!r}: expected http(s)://HOST[:PORT]/…")
        if self.llm_url and not self.llm_model:
            raise ConfigError("llm_url is set but llm_model is not")
        if self.llm_api_key_file is not None and not self.llm_api_key_file.is_file():
            raise ConfigError(f"llm_api_key_file {self.llm_api_key_file} is not a file")
        if not 1 <= self.llm_max_concurrent <= 256 or not 0.1 <= self.llm_timeout_s <= 600:
            raise ConfigError("llm_max_concurrent must be 1..256 and llm_timeout_s 0.1..600")
        if not 1 <= self.llm_calls_per_task_per_min <= 600 \
                or not 0 <= self.llm_max_invalid_answers <= 10:
            raise ConfigError("llm_calls_per_task_per_min must be 1..600 and "
                              "llm_max_invalid_answers 0..10")
        if self.llm_response_format not in ("json_schema", "json_object"):
            raise ConfigError("llm_response_format must be 'json_schema' or 'json_object'")

    def _validate_artifacts(self) -> None:
        for name in ("artifact_max_bytes", "artifact_partial_max_bytes",
                     "artifact_uploads_per_client", "artifact_idle_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    def _validate_admission(self) -> None:
        if not 0 <= self.admit_per_s <= 1_000_000:
            raise ConfigError("admit_per_s must be between 0 (unlimited) and 1000000")
        if not 0 <= self.max_pending_attaches <= 1_000_000:
            raise ConfigError("max_pending_attaches must be between 0 (unlimited) and 1000000")

    def _validate_cluster(self) -> None:
        if self.coordination != "local":
            from cortexd.coord.redis import split_url

            split_url(self.coordination)
            if self.store_url.startswith("sqlite:"):
                raise ConfigError(
                    f"coordination {self.coordination!r} joins a cluster of hub hosts, which "
                    "must share one store: set store = postgresql://…")
        if self.hub_id and not all(c.isalnum() or c in "-_.:" for c in self.hub_id):
            raise ConfigError(f"hub_id {self.hub_id!r}: use letters, digits and - _ . :")
        if not 300 <= self.lease_ttl_ms <= 600_000:
            raise ConfigError("lease_ttl_ms must be between 300 and 600000")
        if not 0.1 <= self.queue_scan_s <= 3600:
            raise ConfigError("queue_scan_s must be between 0.1 and 3600")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Settings":
        """Rebuild settings sent to a child process as plain values (see to_dict)."""
        return dataclasses.replace(cls(), **{k: _coerce(k, v) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (str(v) if isinstance(v := getattr(self, f.name), Path) else v)
                for f in fields(self)}


def _coerce(name: str, raw: Any) -> Any:
    """Convert a TOML/env/flag value to the type of the default for ``name``."""
    kind = {f.name: f.type for f in fields(Settings)}[name]
    text = str(kind)
    try:
        if raw is None:
            return None
        if "bool" in text:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "Path" in text:
            return Path(str(raw)).expanduser()
        if "int" in text:
            return int(raw)
        if "float" in text:
            return float(raw)
        return str(raw)
    except ValueError as e:
        raise ConfigError(f"setting {name}: cannot use {raw!r} ({text})") from e


def load(config_file: Path | None, overrides: dict[str, Any],
         environ: dict[str, str] | None = None, validate: bool = True) -> Settings:
    """Build the settings from the file, the environment and flag overrides."""
    environ = dict(os.environ) if environ is None else environ
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or (Path(environ["CORTEX_CONFIG"]) if "CORTEX_CONFIG" in environ else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
        for key, raw in data.items():
            if key not in names:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw)
    for name in names:
        env_name = "CORTEX_" + name.upper()
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name])
    for name, raw in overrides.items():
        if raw is not None:
            values[name] = _coerce(name, raw)
    settings = dataclasses.replace(Settings(), **values)
    if validate:
        settings.validate()
    return settings
