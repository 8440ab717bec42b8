"""The node agent's settings: one frozen object, parsed from flags with env fallbacks.

Precedence is defaults < ``CORTEX_*`` environment < flags. Every duration carries its
unit in its name.

The hub's node port is ``--node-port`` (``CORTEX_NODE_PORT``) and the node's credential
``--node-token-file`` (``CORTEX_NODE_TOKEN_FILE``): cortexctl's ``--hub``/``CORTEX_HUB``
and ``--token-file``/``CORTEX_TOKEN_FILE`` name the Control port and an operator's token,
and one shell's ``export`` for cortexctl used to send a second agent to the Control port
(issue 13). The old flags still work for one release, with a warning (a flag on the
agent's own command line is unambiguous); the old environment variables are no longer
read, and a missing setting says so when one of them is set.

:func:`parse` raises :class:`cortex.errors.ConfigError` with a one-line message for
anything invalid; it reads no file except to check it exists (the token and the hub key
are loaded by the agent at start, so ``--check-config`` loads them too).
"""

import argparse
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from cortex.cliargs import Parser
from cortex.errors import ConfigError
from cortex.ids import check_labels, is_node_id
from cortex.tls import ClientTLS, check_plaintext, split_host_port
from cortex.version import line
from nodeagent.hubs import parse_hub_list

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class AgentConfig:
    hub_address: str  # HOST:PORT, or several comma-separated: the hubs of one cluster
    node_id: str
    token_file: Path
    hub_key_file: Path
    state_dir: Path
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    capacity: int = 8
    insecure_loopback: bool = False
    tls: ClientTLS = field(default_factory=ClientTLS)
    cancel_grace_s: float = 2.0
    shutdown_grace_s: float = 30.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 10.0
    log_format: str = "auto"  # JSON lines unless stderr is a terminal
    log_level: str = "info"
    metrics_listen: str = ""  # HOST:PORT (or PORT, loopback) for /metrics; "" = off
    control_address: str = ""  # the hub's Control port, for artifacts; "" = none
    workspace_wait_s: float = 60.0  # a task in a workspace waits this long for a round
    isolation: str = "auto"  # auto | cgroup (required) | process-group (nodeagent/cgroup.py)
    task_runner: str = "worker"  # worker (a process per task, nodeagent/worker.py) | inline
    # The browser tool (nodeagent/browsertool.py): browserd's socket; started by the agent
    # itself when browserd_start (else systemd runs it). None: no browser on this node.
    browserd_socket: Path | None = None
    browserd_start: bool = False
    browserd_args: tuple[str, ...] = ()
    # The live stream's per-task rate limit, and the faster drain after the task ended
    # (nodeagent/pacing.py; docs/protocol.md, "Rate limit"). 0 = unlimited.
    stream_rate_bytes_s: int = 15_000
    stream_burst_bytes: int = 64 * KIB
    catchup_rate_bytes_s: int = 1 * MIB
    catchup_burst_bytes: int = 1 * MIB
    progress_interval_s: float = 1.0
    # Finished spools the hub acknowledged, kept for `cortexctl logs` (retention.py).
    spool_retention_s: float = 7 * 86_400.0
    spool_retention_bytes: int = 1024 * MIB
    # Protocol limits and timers that are not flags (docs/protocol.md).
    max_output_frame_bytes: int = 64 * KIB
    output_window_bytes: int = 1 * MIB
    max_message_bytes: int = 1 * MIB
    default_heartbeat_interval_ms: int = 5_000
    welcome_timeout_s: float = 15.0
    backoff_reset_after_s: float = 10.0
    drain_quiet_s: float = 0.1
    finish_ack_wait_s: float = 3.0
    # Folding (issue 9; only with a hub whose Welcome says fold_frames): a new task's
    # Started and output wait this long; a task that ends within it sends one
    # TaskFinished carrying up to fold_output_bytes of output. 0 = never fold.
    fold_window_ms: float = 20.0
    fold_output_bytes: int = 16 * KIB
    keepalive_time_ms: int = 120_000  # the heartbeat is the liveness check; this finds dead TCP
    keepalive_timeout_ms: int = 10_000

    @property
    def hub_addresses(self) -> tuple[str, ...]:
        """Every hub address, in the order given (nodeagent/hubs.py picks the order used)."""
        return parse_hub_list(self.hub_address)

    def redacted(self) -> dict[str, Any]:
        """A JSON-able view for ``--print-config`` (paths only: no secret is ever loaded here)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = dict(self.labels)
        out["tls"] = {f.name: getattr(self.tls, f.name) for f in fields(self.tls)}
        return json.loads(json.dumps(out, default=str))  # type: ignore[no-any-return]


class _Parser(Parser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _parser() -> _Parser:
    env = os.environ.get
    p = _Parser(prog="nodeagent", description="Cortex node agent", add_help=True)
    p.add_argument("--version", action="version", version=line("nodeagent"))
    p.add_argument("--node-port", metavar="HOST:PORT", default=env("CORTEX_NODE_PORT"),
                   help="the hub's node port (cortexd --node-listen, 7700 by default; not "
                        "the Control port cortexctl --hub names); several hubs of one "
                        "cluster as HOST:PORT,HOST:PORT,… (the node fails over between "
                        "them). Env CORTEX_NODE_PORT")
    p.add_argument("--hub", dest="old_hub", help=argparse.SUPPRESS)  # DEPRECATED_FLAGS
    p.add_argument("--node-id", default=env("CORTEX_NODE_ID"))
    p.add_argument("--node-token-file", metavar="FILE", default=env("CORTEX_NODE_TOKEN_FILE"),
                   help="the node's credential (cortexd enroll NODE). Env "
                        "CORTEX_NODE_TOKEN_FILE")
    p.add_argument("--token-file", dest="old_token_file", help=argparse.SUPPRESS)
    p.add_argument("--hub-key", default=env("CORTEX_HUB_KEY"),
                   help="PEM Ed25519 public key the hub signs task envelopes with (the "
                        "hubs of one cluster share one key)")
    p.add_argument("--state-dir", default=env("CORTEX_STATE_DIR"))
    p.add_argument("--control", default=env("CORTEX_CONTROL", ""), metavar="HOST:PORT",
                   help="the hub's Control port, where tasks' input and output artifacts "
                        "move and workspaces sync (without it, a task with artifacts or "
                        "in a workspace is refused)")
    p.add_argument("--workspace-wait-s", type=float, default=60.0, metavar="S",
                   help="how long a task in a workspace waits for a sync round of its copy "
                        "before it fails (default 60)")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--capacity", type=int, default=8)
    p.add_argument("--insecure-loopback", action="store_true")
    p.add_argument("--ca-file")
    p.add_argument("--cert-file")
    p.add_argument("--key-file")
    p.add_argument("--tls-server-name", metavar="NAME",
                   help="the name the hub's certificate must have, when --node-port's "
                        "host is not one of its names")
    p.add_argument("--cancel-grace-s", type=float, default=2.0)
    p.add_argument("--shutdown-grace-s", type=float, default=30.0)
    p.add_argument("--backoff-base-s", type=float, default=0.2)
    p.add_argument("--backoff-cap-s", type=float, default=10.0)
    p.add_argument("--stream-rate-bytes-s", type=int, default=15_000,
                   help="live output per task to the hub, bytes/s (0 = unlimited)")
    p.add_argument("--stream-burst-bytes", type=int, default=64 * KIB,
                   help="bytes a task may send at once before the rate applies")
    p.add_argument("--catchup-rate-bytes-s", type=int, default=1 * MIB,
                   help="rate of the rest of a finished task's spool, bytes/s (0 = unlimited)")
    p.add_argument("--catchup-burst-bytes", type=int, default=1 * MIB)
    p.add_argument("--spool-retention-s", type=float, default=7 * 86_400.0,
                   help="keep finished, acknowledged spools this long (default 7 days)")
    p.add_argument("--spool-retention-bytes", type=int, default=1024 * MIB,
                   help="at most this many bytes of finished spools (oldest pruned first)")
    p.add_argument("--isolation", choices=("auto", "cgroup", "process-group"),
                   default=env("CORTEX_ISOLATION", "auto"),
                   help="a cgroup per task where writable (auto), always (cgroup: refuse to "
                        "start without), or process groups only")
    p.add_argument("--task-runner", choices=("worker", "inline"),
                   default=env("CORTEX_TASK_RUNNER", "worker"),
                   help="run each task in its own worker process (worker), or in the "
                        "agent's event loop (inline)")
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                   help="serve Prometheus metrics here (a bare PORT is on loopback)")
    p.add_argument("--browserd-socket", default=env("CORTEX_BROWSERD_SOCKET"),
                   help="offer the browser tool through the browserd on this Unix socket")
    p.add_argument("--browserd-start", action="store_true",
                   help="start browserd on --browserd-socket (default STATE/browserd.sock) "
                   "and restart it when it exits")
    p.add_argument("--browserd-arg", action="append", default=[], metavar="ARG",
                   help="an argument for the browserd the agent starts (repeatable)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                   help="auto: JSON lines unless stderr is a terminal")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, load the token and hub key, and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as JSON and exit")
    return p


def _labels(items: Sequence[str]) -> dict[str, str]:
    labels = {"os": "linux", "arch": platform.machine() or "unknown"}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--label {item!r} must be KEY=VALUE")
        labels[key] = value
    problem = check_labels(labels)
    if problem:
        raise ConfigError(problem)
    return labels


def _path(value: str | None, flag: str, env: str) -> Path:
    if not value:
        raise _missing(flag, env)
    return Path(value)


#: Old flag -> new flag; each still works for one release, with a warning.
DEPRECATED_FLAGS = {"--hub": "--node-port", "--token-file": "--node-token-file"}
#: cortexctl's environment: no longer read here, named when the agent's own is missing.
CTL_ENV = {"CORTEX_NODE_PORT": "CORTEX_HUB", "CORTEX_NODE_TOKEN_FILE": "CORTEX_TOKEN_FILE"}


def deprecations(ns: argparse.Namespace) -> list[str]:
    """One warning per old flag given (the caller prints them)."""
    return [f"{old} is deprecated for nodeagent (cortexctl's {old} is the Control port "
            f"and an operator's token): use {new}"
            for old, new in DEPRECATED_FLAGS.items()
            if getattr(ns, "old_" + old[2:].replace("-", "_")) is not None]


def _missing(flag: str, env_name: str) -> ConfigError:
    ctl = CTL_ENV.get(env_name, "")
    also = (f"; {ctl} is set, but that is cortexctl's setting and nodeagent does not read it"
            if ctl and os.environ.get(ctl) else "")
    return ConfigError(f"{flag} is required (or set {env_name}){also}")


def _hubs(ns: argparse.Namespace) -> tuple[str, ...]:
    value = ns.node_port or ns.old_hub
    if not value:
        raise _missing("--node-port HOST:PORT", "CORTEX_NODE_PORT")
    return parse_hub_list(value)


def _metrics_address(value: str) -> str:
    value = value.strip()
    address = f"127.0.0.1:{value}" if value.isdigit() else value
    if address:
        split_host_port(address)
    return address


def _check_control(address: str, tls_enabled: bool, insecure_loopback: bool) -> None:
    if address:
        split_host_port(address)
        check_plaintext(address, tls_enabled, insecure_loopback, "control")


def _browserd_socket(ns: argparse.Namespace) -> Path | None:
    if ns.browserd_socket:
        return Path(ns.browserd_socket)
    if ns.browserd_start:
        return Path(ns.state_dir or "") / "browserd.sock"
    return None


def _positive(value: float, flag: str) -> None:
    if not value > 0:
        raise ConfigError(f"{flag} must be > 0, got {value}")


def parse(argv: Sequence[str] | None = None) -> tuple[AgentConfig, argparse.Namespace]:
    """Parse flags (and env fallbacks) into an :class:`AgentConfig`; the namespace carries
    the one-shot actions (``--check-config``, ``--print-config``)."""
    ns = _parser().parse_args(argv)
    hubs = _hubs(ns)
    if not ns.node_id:
        raise ConfigError("--node-id is required (or set CORTEX_NODE_ID)")
    if not is_node_id(ns.node_id):
        raise ConfigError(f"--node-id {ns.node_id!r} is not a valid node id")
    if ns.capacity < 1:
        raise ConfigError(f"--capacity must be >= 1, got {ns.capacity}")
    for flag in ("cancel_grace_s", "shutdown_grace_s", "backoff_base_s", "backoff_cap_s",
                 "workspace_wait_s"):
        _positive(getattr(ns, flag), "--" + flag.replace("_", "-"))
    for flag in ("stream_rate_bytes_s", "catchup_rate_bytes_s"):
        if getattr(ns, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 0")
    if ns.spool_retention_s < 0 or ns.spool_retention_bytes < 0:
        raise ConfigError("--spool-retention-s and --spool-retention-bytes must be >= 0")
    for flag in ("stream_burst_bytes", "catchup_burst_bytes"):
        if getattr(ns, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1")
    if ns.isolation not in ("auto", "cgroup", "process-group"):
        raise ConfigError(f"--isolation (CORTEX_ISOLATION) {ns.isolation!r} is not one of "
                          "auto, cgroup, process-group")
    if ns.backoff_cap_s < ns.backoff_base_s:
        raise ConfigError("--backoff-cap-s must be >= --backoff-base-s")
    if bool(ns.cert_file) != bool(ns.key_file):
        raise ConfigError("--cert-file and --key-file go together")
    tls = ClientTLS(
        ca_file=Path(ns.ca_file) if ns.ca_file else None,
        cert_file=Path(ns.cert_file) if ns.cert_file else None,
        key_file=Path(ns.key_file) if ns.key_file else None,
        enabled=bool(ns.ca_file or ns.cert_file or ns.tls_server_name),
        server_name=ns.tls_server_name or "",
    )
    for address in hubs:  # plaintext is allowed per address, on loopback only
        check_plaintext(address, tls.enabled, ns.insecure_loopback, "hub")
    _check_control(ns.control, tls.enabled, ns.insecure_loopback)
    config = AgentConfig(
        hub_address=",".join(hubs),
        node_id=ns.node_id,
        token_file=_path(ns.node_token_file or ns.old_token_file, "--node-token-file",
                         "CORTEX_NODE_TOKEN_FILE"),
        hub_key_file=_path(ns.hub_key, "--hub-key", "CORTEX_HUB_KEY"),
        state_dir=_path(ns.state_dir, "--state-dir", "CORTEX_STATE_DIR"),
        labels=MappingProxyType(_labels(ns.label)),
        capacity=ns.capacity,
        insecure_loopback=ns.insecure_loopback,
        tls=tls,
        cancel_grace_s=ns.cancel_grace_s,
        shutdown_grace_s=ns.shutdown_grace_s,
        backoff_base_s=ns.backoff_base_s,
        backoff_cap_s=ns.backoff_cap_s,
        stream_rate_bytes_s=ns.stream_rate_bytes_s,
        stream_burst_bytes=ns.stream_burst_bytes,
        catchup_rate_bytes_s=ns.catchup_rate_bytes_s,
        catchup_burst_bytes=ns.catchup_burst_bytes,
        spool_retention_s=ns.spool_retention_s,
        spool_retention_bytes=ns.spool_retention_bytes,
        log_format=ns.log_format,
        log_level=ns.log_level,
        metrics_listen=_metrics_address(ns.metrics_listen),
        isolation=ns.isolation,
        task_runner=ns.task_runner,
        control_address=ns.control,
        workspace_wait_s=ns.workspace_wait_s,
        browserd_socket=_browserd_socket(ns),
        browserd_start=ns.browserd_start,
        browserd_args=tuple(ns.browserd_arg),
    )
    return config, ns
