"""browserd's settings: one frozen object from flags, with ``BROWSERD_*`` environment fallbacks.

Precedence: defaults < environment < flags. Units are in the names. :func:`parse` raises
:class:`cortex.errors.ConfigError` with one line for anything invalid.
"""

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cortex.cliargs import Parser
from cortex.errors import ConfigError
from cortex.version import line

MIB = 1024 * 1024
CHROMIUM = Path("/usr/bin/chromium")
# We run as root with the network closed: no sandbox (Chromium refuses root with one), and
# none of the background fetches (updates, sync, safe browsing lists) that would only fail.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


@dataclass(frozen=True, slots=True)
class BrowserdSettings:
    socket_path: Path
    state_dir: Path
    chromium_path: Path = CHROMIUM
    max_sessions: int = 16
    warm_sessions: int = 1            # browsers launched ahead, so an open takes no launch
    warm_nice: int = 10               # their launch runs at this nice (0: as browserd)
    idle_ttl_s: float = 1800.0        # a session unused this long is closed (its profile kept)
    session_memory_max_bytes: int = 1024 * MIB  # one renderer's RSS over this: killed
    memory_check_interval_s: float = 0.5
    navigation_timeout_ms: int = 30_000
    action_timeout_ms: int = 10_000
    eval_timeout_ms: int = 10_000
    shm_threshold_bytes: int = 64 * 1024   # results larger than this go through /dev/shm
    shm_dir: Path = Path("/dev/shm")
    max_frame_bytes: int = 64 * MIB
    max_connections: int = 64
    max_inflight_per_connection: int = 32
    allow_schemes: frozenset[str] = frozenset()   # e.g. {"file"}; http(s) always allowed
    allowed_origins: tuple[str, ...] = ()         # empty: any http(s) origin
    viewport_width: int = 1280
    viewport_height: int = 720
    console_buffer: int = 500        # console messages kept per session (oldest dropped)
    network_buffer: int = 1000       # requests kept per session
    log_format: str = "json"
    log_level: str = "info"
    extra_args: tuple[str, ...] = field(default=())

    def redacted(self) -> dict[str, Any]:
        out = asdict(self)
        out["allow_schemes"] = sorted(self.allow_schemes)
        return json.loads(json.dumps(out, default=str))  # type: ignore[no-any-return]


def _env(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(f"BROWSERD_{name.upper()}", default)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = Parser(prog="browserd", description="Chromium sessions on a Unix socket")
    p.add_argument("--version", action="version", version=line("browserd"))
    p.add_argument("--socket", default=_env(env, "socket", "/run/cortex/browserd.sock"))
    p.add_argument("--state-dir", default=_env(env, "state_dir", "/var/lib/cortex-browserd"))
    p.add_argument("--chromium", default=_env(env, "chromium", str(CHROMIUM)))
    p.add_argument("--max-sessions", type=int, default=int(_env(env, "max_sessions", "16")))
    p.add_argument("--warm-sessions", type=int, default=int(_env(env, "warm_sessions", "1")))
    p.add_argument("--warm-nice", type=int, default=int(_env(env, "warm_nice", "10")),
                   help="nice of a warm browser's launch (renice 0 when a session takes it)")
    p.add_argument("--idle-ttl-s", type=float, default=float(_env(env, "idle_ttl_s", "1800")))
    p.add_argument("--session-memory-max-mib", type=int,
                   default=int(_env(env, "session_memory_max_mib", "1024")))
    p.add_argument("--eval-timeout-ms", type=int,
                   default=int(_env(env, "eval_timeout_ms", "10000")))
    p.add_argument("--navigation-timeout-ms", type=int,
                   default=int(_env(env, "navigation_timeout_ms", "30000")))
    p.add_argument("--action-timeout-ms", type=int,
                   default=int(_env(env, "action_timeout_ms", "10000")))
    p.add_argument("--shm-threshold-bytes", type=int,
                   default=int(_env(env, "shm_threshold_bytes", str(64 * 1024))))
    p.add_argument("--allow-scheme", action="append", default=None,
                   help="also allow this URL scheme (file, data, ...); repeatable")
    p.add_argument("--allow-origin", action="append", default=None,
                   help="only allow these origins (scheme://host[:port] or *.domain); repeatable")
    p.add_argument("--log-format", choices=["json", "console"], default=_env(env, "log_format",
                                                                             "json"))
    p.add_argument("--log-level", default=_env(env, "log_level", "info"))
    p.add_argument("--check-config", action="store_true")
    p.add_argument("--print-config", action="store_true")
    return p


def _list(flag: list[str] | None, env_value: str) -> list[str]:
    if flag is not None:
        return flag
    return [v for v in env_value.split(",") if v]


def parse(argv: Sequence[str] | None = None,
          env: Mapping[str, str] | None = None) -> tuple[BrowserdSettings, argparse.Namespace]:
    env = os.environ if env is None else env
    ns = build_parser(env).parse_args(argv)
    if ns.max_sessions < 1 or ns.warm_sessions < 0:
        raise ConfigError("--max-sessions must be >= 1 and --warm-sessions >= 0")
    if not 0 <= ns.warm_nice <= 19:
        raise ConfigError("--warm-nice must be in 0..19")
    if ns.session_memory_max_mib < 64:
        raise ConfigError("--session-memory-max-mib must be at least 64")
    for name in ("eval_timeout_ms", "navigation_timeout_ms", "action_timeout_ms"):
        if getattr(ns, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    schemes = {s.lower().rstrip(":") for s in _list(ns.allow_scheme, _env(env, "allow_schemes",
                                                                           ""))}
    origins = tuple(_list(ns.allow_origin, _env(env, "allowed_origins", "")))
    for origin in origins:
        if not (origin.startswith(("http://", "https://", "*."))):
            raise ConfigError(f"--allow-origin {origin!r}: want scheme://host[:port] or *.domain")
    settings = BrowserdSettings(
        socket_path=Path(ns.socket), state_dir=Path(ns.state_dir), chromium_path=Path(ns.chromium),
        max_sessions=ns.max_sessions, warm_sessions=min(ns.warm_sessions, ns.max_sessions),
        warm_nice=ns.warm_nice,
        idle_ttl_s=ns.idle_ttl_s, session_memory_max_bytes=ns.session_memory_max_mib * MIB,
        eval_timeout_ms=ns.eval_timeout_ms, navigation_timeout_ms=ns.navigation_timeout_ms,
        action_timeout_ms=ns.action_timeout_ms, shm_threshold_bytes=ns.shm_threshold_bytes,
        allow_schemes=frozenset(schemes), allowed_origins=origins,
        log_format=ns.log_format, log_level=ns.log_level)
    if not settings.chromium_path.exists() and not ns.print_config:
        raise ConfigError(f"--chromium {settings.chromium_path} does not exist "
                          "(make browserd-setup installs Debian's chromium)")
    return settings, ns
