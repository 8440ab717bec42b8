"""The sans-IO prompt detector: layers, nonces, dedupe, reads split anywhere."""

from pathlib import Path

from nodeagent.detect.detector import PromptDetector
from nodeagent.detect.events import KernelFacts
from nodeagent.detect.markers import marker_env, prompt_marker, sudo_marker
from nodeagent.detect.transcript import pieces

NONCE = "0123456789abcdef"


def feed_all(det: PromptDetector, data: bytes, step: int = 0) -> list[tuple[str, str]]:
    """Feed ``data`` in pieces of ``step`` bytes, each followed by a quiet tick with no
    kernel to ask (as a transcript's replay does)."""
    out = []
    parts = [data] if not step else [data[i:i + step] for i in range(0, len(data), step)]
    end = 0
    for part in parts:
        end += len(part)
        out += [(d.kind, d.detector) for d in [*det.feed(part, end), *det.on_quiet(None)]]
    return out


def test_marker_needs_the_right_nonce_and_survives_any_split() -> None:
    data = b"out\r\n" + prompt_marker(NONCE, 3, "/srv/x;y") + b"$ "
    for step in (0, 1, 2, 7):
        det = PromptDetector(NONCE)
        assert feed_all(det, data, step) == [("shell_ready", "marker")]
    # Another nonce (or none) is no marker: what is left is a shell's bare prompt, which
    # the pattern layer reads as a shell waiting for input, never as this task's shell.
    for other in ("f" * 16, None):
        assert feed_all(PromptDetector(other), data) == [("input_required", "pattern")]
    det = PromptDetector(NONCE)
    (ev,) = det.feed(data, len(data))
    assert (ev.exit_code, ev.cwd, ev.offset) == (3, "/srv/x;y", len(data) - 2)


def test_sudo_marker_is_password_with_full_confidence() -> None:
    data = sudo_marker(NONCE) + b"[sudo] password for bob: "
    (ev,) = PromptDetector(NONCE).feed(data, len(data))
    assert (ev.kind, ev.detector, ev.confidence) == ("password", "marker", 1.0)
    env = marker_env(NONCE)
    assert NONCE in env["SUDO_PROMPT"] and NONCE in env["PROMPT_COMMAND"]


def test_one_event_per_prompt_occurrence() -> None:
    det = PromptDetector()
    assert feed_all(det, b">>> ", 1) == [("repl", "pattern")]
    assert det.feed(b"1+1", 7) == []  # typing on the same line
    assert [d.kind for d in det.feed(b"\r\n2\r\n>>> ", 16)] == ["repl"]


def test_only_the_last_partial_line_counts() -> None:
    det = PromptDetector()
    assert feed_all(det, b"Do you want to continue? [Y/n] \r\nAbort.\r\n") == []
    assert feed_all(PromptDetector(), b"Password: \r\n") == []


def test_weak_pattern_needs_the_kernel() -> None:
    det = PromptDetector()
    assert det.feed(b"Total so far: ", 14) == []
    assert det.wants_kernel
    assert det.on_quiet(None) == []
    det.want_kernel_again()
    assert det.on_quiet(KernelFacts("")) == []
    det.want_kernel_again()
    (ev,) = det.on_quiet(KernelFacts("read", 1, "bash", "wait_woken", echo=True))
    assert (ev.kind, ev.detector) == ("input_required", "kernel")
    assert det.on_quiet(KernelFacts("read")) == []  # already fired for this line


def test_shaped_pattern_fires_at_the_quiet_tick_unless_nobody_reads() -> None:
    for line in (b"$ ", b"> ", b"Host: ", b"Port [8080]: ", b"app> ", b"(shop) "):
        det = PromptDetector()
        assert det.feed(line, len(line)) == [], line  # never at once: a quiet tick decides
        assert det.wants_kernel
        assert det.on_quiet(KernelFacts("")) == [], line  # nobody reads the terminal: vetoed
        det.want_kernel_again()
        (ev,) = det.on_quiet(KernelFacts("poll", 1, "prog"))  # someone polls it: a prompt
        assert (ev.detector, ev.offset) == ("pattern", len(line))
        assert ev.rule.endswith("+kernel")
        assert det.on_quiet(KernelFacts("read")) == []  # one event per prompt
        det = PromptDetector()
        det.feed(line, len(line))
        assert [d.detector for d in det.on_quiet(None)] == ["pattern"]  # no kernel: its shape
    # Progress and log lines are no field: a gerund first, a log level first.
    for line in (b"Checking password: ", b"Downloading file: ", b"ERROR 2002 (HY000): "):
        det = PromptDetector()
        assert det.feed(line, len(line)) == [] and det.on_quiet(None) == [], line


def test_kernel_echo_off_means_password_and_poll_alone_never_fires() -> None:
    det = PromptDetector()
    det.feed(b"Secret? ", 8)
    assert [d.kind for d in det.on_quiet(KernelFacts("read", echo=False))] == ["password"]
    det = PromptDetector()
    det.feed(b"  press h + enter to show help\r\n", 32)
    assert det.on_quiet(KernelFacts("poll")) == []
    assert [d.kind for d in det.on_quiet(KernelFacts("read"))] == ["input_required"]


def test_alt_screen_program_waiting_is_a_pager() -> None:
    det = PromptDetector()
    assert det.feed(b"\x1b[?1049h\x1b[1;1Htop - 10:00", 25) == []
    assert [d.kind for d in det.on_quiet(KernelFacts("poll"))] == ["pager"]


def test_osc133_marks() -> None:
    det = PromptDetector()
    first = b"\x1b]133;D;0\x07\x1b]133;A\x07$ \x1b]133;B\x07"
    assert feed_all(det, first) == [("shell_ready", "osc133")]
    nxt = b"false\r\n\x1b]133;C\x07\x1b]133;D;1\x07\x1b]133;A\x07$ \x1b]133;B\x07"
    evs = det.feed(nxt, len(first) + len(nxt))
    assert [(e.kind, e.exit_code) for e in evs] == [("finished", 1), ("shell_ready", 0)]


def test_progress_bar_and_wrapped_pager_prompt() -> None:
    assert feed_all(PromptDetector(), b"\rDownloading: 45% [###   ]\rDownloading: 90%", 5) == []
    det = PromptDetector(cols=10)
    assert [d.rule for d in det.feed(b"0123456789 \x08:\x1b[K", 15)] == ["pager_colon"]


def test_candidate_ends_cover_the_file() -> None:
    data = b"a: b\r\nPassword: "
    assert b"".join(p for p, _ in pieces(data, None)) == data
    assert [end for _, end in pieces(data, [3, len(data) - 3])] == [3, len(data)]


def test_task_env_markers_and_allow_prompts() -> None:
    from nodeagent.detect.live import TaskPrompts
    from nodeagent.runner import task_env
    prompts = TaskPrompts(lambda frame: None)
    env = task_env({}, {}, prompt_env=prompts.env(("t", 1), False))
    assert env["PAGER"] == "cat" and env["PIP_NO_INPUT"] == "1"
    assert "\x1b]1337;CortexSudo=" in env["SUDO_PROMPT"] and "PROMPT_COMMAND" in env
    allowed = task_env({"SUDO_PROMPT": "mine: "}, {}, allow_prompts=True,
                       prompt_env=prompts.env(("t", 2), True))
    assert "PAGER" not in allowed and allowed["SUDO_PROMPT"] == "mine: "
    assert "PROMPT_COMMAND" in allowed


def test_nodeagent_detect_needs_no_hub(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    raw = tmp_path / "t.raw"
    raw.write_bytes(b"Python 3\r\n>>> ")
    out = subprocess.run([sys.executable, "-m", "nodeagent", "detect", str(raw)],
                         capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"})
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert "kernel layer not applicable" in lines[0]["note"]
    assert {k: lines[1][k] for k in ("file", "offset", "kind", "detector")} == {
        "file": str(raw), "offset": 14, "kind": "repl", "detector": "pattern"}
    missing = subprocess.run([sys.executable, "-m", "nodeagent", "detect", str(tmp_path / "no")],
                             capture_output=True)
    assert missing.returncode == 2 and b"nodeagent detect:" in missing.stderr
