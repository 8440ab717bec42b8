"""The ``nodeagent`` command line: bad configuration is one line on stderr and exit 2."""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.envelope import public_key_pem
from nodeagent import cli, exitcodes
from nodeagent.config import parse


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "hub.pub").write_bytes(public_key_pem(Ed25519PrivateKey.generate()))
    (tmp_path / "token").write_text("secret-token-value\n")
    return {"--node-token-file": str(tmp_path / "token"), "--hub-key": str(tmp_path / "hub.pub"),
            "--state-dir": str(tmp_path / "state")}


def argv(files: dict[str, str], *extra: str, hub: str = "127.0.0.1:7000") -> list[str]:
    out = ["--node-port", hub, "--node-id", "n1", "--insecure-loopback"]
    for flag, value in files.items():
        out += [flag, value]
    return out + list(extra)


@pytest.mark.parametrize("extra,message", [
    (["--capacity", "0"], "--capacity must be >= 1"),
    (["--label", "nokey"], "must be KEY=VALUE"),
    (["--label", "BAD=x"], "label key"),
    (["--backoff-cap-s", "0.1", "--backoff-base-s", "1"], "--backoff-cap-s must be >="),
    (["--cert-file", "/c"], "--cert-file and --key-file go together"),
    (["--log-format", "xml"], "invalid choice"),
    (["--node-id", "Bad Id"], "not a valid node id"),
])
def test_bad_flags_exit_2_with_one_line(files: dict[str, str], extra: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(argv(files, *extra)) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nodeagent: ") and message in err, err


def test_plaintext_only_on_loopback(files: dict[str, str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(argv(files, hub="10.1.2.3:7000")) == exitcodes.CONFIG
    assert "plaintext is allowed only on loopback" in capsys.readouterr().err
    args = [a for a in argv(files) if a != "--insecure-loopback"]
    assert cli.run(args) == exitcodes.CONFIG
    assert "--insecure-loopback" in capsys.readouterr().err


def test_unreadable_secrets_exit_2(files: dict[str, str], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(argv({**files, "--node-token-file": str(tmp_path / "nope")})) == exitcodes.CONFIG
    assert "cannot read token file" in capsys.readouterr().err
    (tmp_path / "bad.pub").write_text("not a key")
    assert cli.run(argv({**files, "--hub-key": str(tmp_path / "bad.pub")})) == exitcodes.CONFIG
    assert "not a PEM public key" in capsys.readouterr().err


def test_env_fallbacks_labels_and_defaults(files: dict[str, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_NODE_PORT", "localhost:7001")
    monkeypatch.setenv("CORTEX_NODE_ID", "n9")
    monkeypatch.setenv("CORTEX_NODE_TOKEN_FILE", files["--node-token-file"])
    monkeypatch.setenv("CORTEX_HUB_KEY", files["--hub-key"])
    monkeypatch.setenv("CORTEX_STATE_DIR", files["--state-dir"])
    config, _ = parse(["--insecure-loopback", "--label", "gpu=a100", "--label", "os=linux"])
    assert (config.hub_address, config.node_id, config.capacity) == ("localhost:7001", "n9", 8)
    assert config.labels["gpu"] == "a100" and config.labels["os"] == "linux"
    assert "arch" in config.labels
    assert (config.cancel_grace_s, config.backoff_base_s, config.backoff_cap_s) == (2.0, 0.2, 10)
    assert config.shutdown_grace_s == 30.0
    config, _ = parse(["--insecure-loopback", "--node-id", "flag-wins"])
    assert config.node_id == "flag-wins"


def test_check_and_print_config(files: dict[str, str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(argv(files, "--check-config")) == exitcodes.OK
    assert "configuration OK" in capsys.readouterr().out
    assert cli.run(argv(files, "--print-config")) == exitcodes.OK
    printed = json.loads(capsys.readouterr().out)
    assert printed["node_id"] == "n1" and printed["tls"]["enabled"] is False
    assert "secret-token-value" not in json.dumps(printed)  # paths only, never the token


def test_console_script_missing_hub_exits_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "nodeagent"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == exitcodes.CONFIG
    assert done.stderr == (
        "nodeagent: --node-port HOST:PORT is required (or set CORTEX_NODE_PORT)\n")


def test_cortexctl_environment_is_not_the_agents(files: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # After the README's `export CORTEX_HUB=…:7701 CORTEX_TOKEN_FILE=admin.token` for
    # cortexctl, a node agent used to dial the Control port with the admin token (issue 13).
    monkeypatch.setenv("CORTEX_HUB", "127.0.0.1:7701")
    monkeypatch.setenv("CORTEX_TOKEN_FILE", files["--node-token-file"])
    without_hub = [a for a in argv(files) if a not in ("--node-port", "127.0.0.1:7000")]
    assert cli.run(without_hub) == exitcodes.CONFIG
    assert ("--node-port HOST:PORT is required (or set CORTEX_NODE_PORT); CORTEX_HUB is set, "
            "but that is cortexctl's setting and nodeagent does not read it") in (
        capsys.readouterr().err)
    no_token = {k: v for k, v in files.items() if k != "--node-token-file"}
    assert cli.run(argv(no_token)) == exitcodes.CONFIG
    assert "--node-token-file is required (or set CORTEX_NODE_TOKEN_FILE); CORTEX_TOKEN_FILE" in (
        capsys.readouterr().err)


def test_old_flags_work_for_one_release_with_a_warning(files: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    old = ["--hub", "127.0.0.1:7000", "--token-file", files["--node-token-file"],
           "--node-id", "n1", "--insecure-loopback", "--hub-key", files["--hub-key"],
           "--state-dir", files["--state-dir"], "--check-config"]
    assert cli.run(old) == exitcodes.OK
    err = capsys.readouterr().err
    assert "--hub is deprecated for nodeagent" in err and "use --node-port" in err
    assert "--token-file is deprecated for nodeagent" in err and "--node-token-file" in err
    config, _ = parse(old)
    assert config.hub_address == "127.0.0.1:7000"


def test_state_dir_in_use_exits_3(files: dict[str, str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    fd = os.open(state / "agent.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert cli.run(argv(files)) == exitcodes.STATE_LOCKED
    finally:
        os.close(fd)


def test_tls_server_name_turns_tls_on_and_names_the_certificate(files: dict[str, str]) -> None:
    from cortex.tls import channel_name_options

    config, _ = parse([a for a in argv(files) if a != "--insecure-loopback"]
                      + ["--tls-server-name", "hub-a.example.internal"])
    assert config.tls.enabled and config.tls.server_name == "hub-a.example.internal"
    assert ("grpc.ssl_target_name_override", "hub-a.example.internal") in (
        channel_name_options(config.tls))
