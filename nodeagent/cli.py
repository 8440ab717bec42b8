"""The ``nodeagent`` console script: parse the configuration, load secrets, run the agent.

Configuration problems end the process before anything starts, with one line on stderr
and exit code :data:`nodeagent.exitcodes.CONFIG`. The agent itself runs on uvloop.
"""

import asyncio
import json
import sys
from collections.abc import Sequence

import uvloop

from cortex import logs
from cortex.envelope import load_public_key
from cortex.errors import ConfigError
from cortex.tokens import read_token_file
from nodeagent import exitcodes
from nodeagent.agent import NodeAgent, StateLocked
from nodeagent.config import deprecations, parse
from nodeagent.errors import NodeAgentError


def _fail(code: int, message: str) -> int:
    print(f"nodeagent: {message}", file=sys.stderr)
    return code


def run(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["detect"]:  # an offline tool: needs no hub, token or state directory
        from nodeagent import detect_cli
        return detect_cli.run(args[1:])
    try:
        config, ns = parse(argv)
        for warning in deprecations(ns):
            print(f"nodeagent: warning: {warning}", file=sys.stderr)
        if ns.print_config:
            print(json.dumps(config.redacted(), indent=2, sort_keys=True))
            return exitcodes.OK
        token = read_token_file(config.token_file)
        hub_key = load_public_key(config.hub_key_file)
        if config.state_dir.exists() and not config.state_dir.is_dir():
            raise ConfigError(f"--state-dir {config.state_dir} is not a directory")
    except ConfigError as e:
        return _fail(exitcodes.CONFIG, str(e))
    if ns.check_config:
        print("nodeagent: configuration OK")
        return exitcodes.OK
    logs.configure("nodeagent", json=logs.wants_json(config.log_format), level=config.log_level,
                   node=config.node_id)
    agent = NodeAgent(config, token, hub_key, logs.get("nodeagent"))
    if config.metrics_listen:
        from nodeagent.metrics import serve

        try:
            port = serve(config.metrics_listen, agent)
        except OSError as e:
            return _fail(exitcodes.CONFIG, f"--metrics-listen {config.metrics_listen}: "
                         f"{e.strerror}")
        logs.get("nodeagent").info("metrics_listening", address=config.metrics_listen,
                                   port=port)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(agent.run())
        if agent.fatal:
            return _fail(code, agent.fatal)
        return code
    except StateLocked as e:
        return _fail(exitcodes.STATE_LOCKED, str(e))
    except NodeAgentError as e:  # the state directory's ran log or spools are unusable
        return _fail(exitcodes.CONFIG, str(e))
    except OSError as e:
        return _fail(exitcodes.CONFIG, f"cannot use --state-dir {config.state_dir}: {e}")


def main() -> None:
    sys.exit(run())
