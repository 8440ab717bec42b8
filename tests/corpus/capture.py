"""Capture prompt transcripts by running real programs in a real PTY.

``python -m tests.corpus.capture [NAME...]`` runs each scenario below through
:func:`nodeagent.ptyspawn.spawn_in_pty` (the agent's own spawn path: ``/bin/sh -c`` in a
new session on a new PTY), plays the scripted keystrokes like a person would (wait until
output has been quiet, then type), and writes into ``prompts/``:

- ``NAME.raw``: every byte read from the PTY master, in order;
- ``NAME.reads``: the size of each read, one per line (the replay feeds exactly these);
- ``NAME.expected.jsonl``: the ground truth, written from the *scenario*, never from the
  detector: at each step that declares ``expect``, the events a correct detector should
  raise there, at the offset where the program went quiet waiting for us.

Expectations marked ``kernel_only`` are real prompts that only the kernel layer can
recognise (a line ending in ``": "``, a bare shell prompt, ``cat`` waiting); the corpus
test does not count them (the kernel cannot apply to a file). ``mock-*`` scenarios are
small scripts that print what a program would print when that program cannot safely or
offline be run here (apt removing packages, ssh to an unknown host, sudo, mysql server).
Scenarios that are ``negative`` expect nothing at all.
"""

import json
import os
import select
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.detect.kernel import facts_from_record, snapshot
from nodeagent.detect.markers import marker_env, prompt_marker, sudo_marker
from nodeagent.ptyspawn import spawn_in_pty

OUT = Path(__file__).parent / "prompts"
KERNEL_OUT = Path(__file__).parent / "kernel"  # transcripts cut where only the kernel knows
NONCE = "c0a1e5ce0ddba11c"  # the corpus's marker nonce (tests pass it to the replay)
QUIET_S = 0.35
STEP_TIMEOUT_S = 15.0
END_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Step:
    send: bytes
    expect: tuple[str, ...] = ()  # kinds expected where the program waits before `send`
    kernel_only: bool = False  # a real prompt only the kernel layer can recognise
    wait_for: bytes = b""  # wait until these bytes appeared, then for quiet


@dataclass(frozen=True)
class Scenario:
    name: str
    command: str
    steps: tuple[Step, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    cols: int = 100
    rows: int = 30


def S(send: str | bytes, *expect: str, kernel_only: bool = False, wait_for: bytes = b"") -> Step:
    data = send.encode() if isinstance(send, str) else send
    return Step(data, tuple(expect), kernel_only, wait_for)


PSQL = "psql -h 127.0.0.1 -U postgres test"
PY = "python3 -c "
MARK_ENV = marker_env(NONCE)
PM = prompt_marker(NONCE, 0, "/tmp").decode()
OTHER_PM = prompt_marker("feedfacefeedface", 0, "/tmp").decode()


def mock(script: str) -> str:
    """A python3 one-off that prints like a real program and reads like it."""
    return "python3 -c " + shlex.quote(script)


SCENARIOS: list[Scenario] = [
    # ---- python ----
    Scenario("python-repl", "python3 -q", (S("1+1\r", "repl"), S("exit()\r", "repl"))),
    Scenario("python-repl-banner", "python3", (S("import sys\r", "repl"), S(b"\x04", "repl"))),
    Scenario("python-repl-continuation", "python3 -q",
             (S("for i in range(2):\r", "repl"), S("  print(i)\r", "repl"),
              S("\r", "repl"), S("exit()\r", "repl"))),
    Scenario("python-repl-traceback", "python3 -q",
             (S("1/0\r", "repl"), S("print('done:')\r", "repl"), S("exit()\r", "repl"))),
    Scenario("python-interact", PY + "'import code; code.interact(banner=\"hi\")'",
             (S("x = 5\r", "repl"), S(b"\x04", "repl"))),
    Scenario("python-i", "python3 -i -c 'x = 1'", (S("x\r", "repl"), S("exit()\r", "repl"))),
    Scenario("python-getpass", PY + "'import getpass; getpass.getpass()'",
             (S("secret\r", "password"),)),
    Scenario("python-getpass-passphrase",
             PY + "'import getpass; getpass.getpass(\"Enter passphrase for key: \")'",
             (S("x\r", "password"),)),
    Scenario("python-input-name", PY + "'input(\"Name: \")'",
             (S("bob\r", kernel_only=True),), note="weak ': ' prompt"),
    Scenario("python-input-yn", PY + "'input(\"Continue? [y/N] \")'", (S("y\r", "confirm"),)),
    Scenario("python-input-press-enter", PY + "'input(\"Press Enter to continue...\")'",
             (S("\r", "input_required"),)),
    Scenario("python-input-question", PY + "'input(\"What is your name? \")'",
             (S("bob\r", kernel_only=True),)),
    Scenario("python-pdb", PY + "'import pdb; x = 1; pdb.set_trace(); y = 2'",
             (S("p x\r", "repl"), S("n\r", "repl"), S("c\r", "repl"))),
    Scenario("python-help", PY + "'help()'", (S("quit\r", kernel_only=True),)),
    Scenario("python-choice",
             PY + "'print(\"1) apt\\n2) pip\"); input(\"Enter your choice [1-2]: \")'",
             (S("1\r", "input_required"),)),
    # ---- node ----
    Scenario("node-repl", "node", (S("1+1\r", "repl"), S(".exit\r", "repl"))),
    Scenario("node-repl-multiline", "node",
             (S("function f() {\r", "repl"), S("return 1 }\r", "repl"), S(".exit\r", "repl"))),
    Scenario("node-readline-question",
             "node -e 'require(\"readline\").createInterface({input:process.stdin,"
             "output:process.stdout}).question(\"Project name? \", a => process.exit(0))'",
             (S("demo\r", kernel_only=True),)),
    # ---- gdb ----
    Scenario("gdb-quit", "gdb -q -nx", (S("quit\r", "repl"),)),
    Scenario("gdb-run", "gdb -q -nx /bin/true",
             (S("run\r", "repl"), S("info inferiors\r", "repl"), S("quit\r", "repl"))),
    # ---- psql ----
    Scenario("psql-select", PSQL, (S("select 1;\r", "repl"), S("\\q\r", "repl"))),
    Scenario("psql-multiline", PSQL,
             (S("select\r", "repl"), S("2;\r", "repl"), S("\\q\r", "repl"))),
    Scenario("psql-password", PSQL + " -W", (S("x\r", "password"), S("\\q\r", "repl"))),
    Scenario("psql-pager", PSQL, (S("select generate_series(1,200);\r", "repl"),
                                  S("q", "pager"), S("\\q\r", "repl")),
             env={"PAGER": "less", "LESS": ""}),
    # ---- mysql / sqlite / redis ----
    Scenario("mysql-password", "mysql -h 127.0.0.1 -P 1 -u root -p",
             (S("x\r", "password"),)),
    Scenario("sqlite-repl", "sqlite3", (S("select 1;\r", "repl"), S(".quit\r", "repl"))),
    # ---- pagers and full-screen programs ----
    Scenario("less-file", "less /etc/services",
             (S(" ", "pager"), S("G", "pager"), S("q", "pager"))),
    Scenario("less-pipe-end", "seq 1 40 | less", (S(" ", "pager"), S("q", "pager")),
             env={"LESS": ""}),
    Scenario("less-FRX-colon", "seq 1 200 | less -FRX", (S(" ", "pager"), S("q", "pager"))),
    Scenario("more-file", "more /etc/services", (S(" ", "pager"), S("q", "pager"))),
    Scenario("man-ls", "man ls", (S("q", "pager"),), env={"MANPAGER": "less", "PAGER": "less"}),
    Scenario("git-log-pager", "cd /work/main && git -c core.pager=less log --oneline -n 300",
             (S("q", "pager"),), env={"LESS": "FRX"}),
    Scenario("top", "top -d 5", (S("q", kernel_only=True),),
             note="alternate screen, no prompt text: the kernel layer's (live: pager)"),
    Scenario("vim", "vim -u NONE -N /tmp/cortex-corpus-vim.txt",
             (S(":q!\r", kernel_only=True),),
             note="alternate screen, no prompt text: the kernel layer's (live: pager)"),
    # ---- credentials ----
    Scenario("ssh-keygen-passphrase",
             "rm -f /tmp/cortex-corpus-key /tmp/cortex-corpus-key.pub; "
             "ssh-keygen -q -t ed25519 -f /tmp/cortex-corpus-key",
             (S("\r", "password"), S("\r", "password"))),
    Scenario("ssh-keygen-overwrite",
             "touch /tmp/cortex-corpus-key2; ssh-keygen -q -t ed25519 -f /tmp/cortex-corpus-key2",
             (S("n\r", "confirm"),)),
    Scenario("openssl-genrsa", "openssl genrsa -aes256 -out /tmp/cortex-corpus.pem 1024",
             (S("abcdef\r", "password"), S("abcdef\r", "password"))),
    Scenario("openssl-passwd", "openssl passwd -1",
             (S("abc\r", "password"), S("abc\r", "password"))),
    Scenario("openssl-req-fields",
             "openssl req -new -newkey rsa:1024 -nodes -keyout /dev/null -out /dev/null",
             (S("\r", kernel_only=True, wait_for=b"Country Name"), S(b"\x03", kernel_only=True)),
             note="'[AU]:' fields end with ':' (no space): only the kernel can tell"),
    # ---- confirmations ----
    Scenario("pip-uninstall-no", ".venv/bin/pip uninstall msgpack-types",
             (S("n\r", "confirm", wait_for=b"Proceed"),),
             note="answered n: nothing is removed"),
    Scenario("rm-interactive", "touch /tmp/cortex-corpus-rm; rm -i /tmp/cortex-corpus-rm",
             (S("n\r", "confirm"),)),
    Scenario("cp-interactive", "touch /tmp/cc-a /tmp/cc-b; cp -i /tmp/cc-a /tmp/cc-b",
             (S("n\r", "confirm"),)),
    Scenario("git-add-patch",
             "rm -rf /tmp/cc-repo && git init -q /tmp/cc-repo && cd /tmp/cc-repo && "
             "echo a > f && git add f && git -c user.email=a@b -c user.name=a commit -qm i && "
             "echo b >> f && git add -p", (S("n\r", "confirm"),)),
    Scenario("unzip-replace",
             "cd /tmp && rm -f cc.zip cc-z.txt && echo z > cc-z.txt && "
             "python3 -c 'import zipfile; zipfile.ZipFile(\"cc.zip\",\"w\").write(\"cc-z.txt\")' "
             "&& unzip cc.zip", (S("n", "confirm"),)),
    # ---- shells ----
    Scenario("bash-marker", "bash --norc --noprofile -i",
             (S("false\r", "shell_ready"), S("cd /tmp\r", "shell_ready"),
              S("exit\r", "shell_ready")), env=MARK_ENV),
    Scenario("bash-marker-wrong-nonce", "bash --norc --noprofile -i",
             (S("true\r", kernel_only=True), S("exit\r", kernel_only=True)),
             env=marker_env("0123456789abcdef"), note="another task's nonce: no marker event"),
    Scenario("bash-osc133",
             "bash --norc --noprofile -i",
             (S("false\r", "shell_ready"), S("exit\r", "finished", "shell_ready")),
             env={"PS1": "\\[\\e]133;D;$?\\a\\e]133;A\\a\\]$ \\[\\e]133;B\\a\\]"}),
    Scenario("bash-read-p", "bash -c 'read -p \"Name: \" x; echo hi $x'",
             (S("bob\r", kernel_only=True),)),
    Scenario("bash-read-yn", "bash -c 'read -p \"Continue (y/n)? \" x'", (S("y\r", "confirm"),)),
    Scenario("bash-read-s", "bash -c 'read -s -p \"Password: \" x; echo'",
             (S("pw\r", "password"),)),
    Scenario("bash-select", "bash -c 'select x in a b; do break; done'",
             (S("1\r", kernel_only=True),)),
    Scenario("bash-plain-prompt", "bash --norc --noprofile -i",
             (S("echo hi\r", kernel_only=True), S("exit\r", kernel_only=True))),
    Scenario("dash-prompt", "dash -i", (S("exit\r", kernel_only=True),)),
    Scenario("cat-waiting", "cat", (S(b"abc\r", kernel_only=True), S(b"\x04", kernel_only=True))),
    Scenario("passwd-abort", "passwd nobody", (S(b"\x03", "password"),),
             note="Ctrl-C at the first prompt: nothing changes"),
    Scenario("npm-init", "cd /tmp && rm -rf cc-npm && mkdir cc-npm && cd cc-npm && npm init",
             (S(b"\x03", kernel_only=True, wait_for=b"package name"),),
             note="npm init's questions end in '(default) ': only the kernel can tell"),
    # ---- hard negatives: real programs ----
    Scenario("neg-ls", "ls -la /usr/bin | head -60"),
    Scenario("neg-dd-progress", "dd if=/dev/zero of=/dev/null bs=1M count=20000 status=progress"),
    Scenario("neg-git-clone-progress",
             "rm -rf /tmp/cc-clone && git clone --progress /work/main /tmp/cc-clone"),
    Scenario("neg-git-status", "cd /work/main && git status && git log --oneline -n 20",
             env={"PAGER": "cat", "GIT_PAGER": "cat"}),
    Scenario("neg-apt-simulate", "apt-get -s install bash 2>&1 | head -30"),
    Scenario("neg-pip-list", ".venv/bin/pip list 2>/dev/null | head -40"),
    Scenario("neg-python-traceback", PY + "'import json; json.loads(\"{\")'"),
    Scenario("neg-node-error", "node -e 'console.log(\"Error:\"); console.error(\"at x:\")'"),
    Scenario("neg-top-batch", "top -b -n 1 | head -20"),
    Scenario("neg-curl-progress", "curl -o /dev/null file:///etc/services"),
    Scenario("neg-psql-command", PSQL + " -c 'select 1 as x;'"),
    Scenario("neg-http-server", "timeout 1 python3 -m http.server 0 --bind 127.0.0.1"),
    Scenario("neg-env-grep", "env | grep -c PATH; echo 'Total:'; echo 'Result?'"),
    # ---- hard negatives and mocks: scripted output of programs not safely runnable here ----
    Scenario("neg-last-login", mock("print('Last login: Mon Nov 23 09:00:01 2026 from 10.0.0.5');"
                                    "print('Welcome to Ubuntu 22.04 LTS:')")),
    Scenario("neg-log-colons", mock("import time\nfor i in range(5):\n print(f'INFO step {i}:', "
                                    "flush=True); time.sleep(0.05)\nprint('Summary:')")),
    Scenario("neg-progress-bar", mock(
        "import sys,time\nfor i in range(0,101,5):\n sys.stdout.write(f'\\rDownloading: "
        "{i:3d}% [' + '#'*(i//5) + ' '*(20-i//5) + ']'); sys.stdout.flush(); time.sleep(0.02)\n"
        "print()")),
    Scenario("neg-progress-partial", mock(
        "import sys,time\nfor i in range(0,101,10):\n sys.stdout.write(f'\\rProgress: {i}% '); "
        "sys.stdout.flush(); time.sleep(0.05)\nprint('done')")),
    Scenario("neg-vite-press-h", mock(
        "import time\nprint('\\n  VITE v5.0.0  ready in 312 ms\\n');"
        "print('  \\u279c  Local:   http://localhost:5173/');"
        "print('  \\u279c  press h + enter to show help', flush=True); time.sleep(0.5)")),
    Scenario("neg-nuxt-press-h", mock(
        "import time\nprint('Nuxt 3.8.0 with Nitro 2.7.2');"
        "print('  > Local:    http://localhost:3000/');"
        "print('  press h for help, q to quit', flush=True); time.sleep(0.3);"
        "print('[vite] hmr update /app.vue')")),
    Scenario("neg-spinner", mock(
        "import sys,time\nfor i in range(12):\n sys.stdout.write('\\r' + '|/-\\\\'[i%4] + "
        "' Resolving dependencies...'); sys.stdout.flush(); time.sleep(0.03)\n"
        "print('\\rResolved 42 packages.      ')")),
    Scenario("neg-docstring-repl", mock("print('Example:\\n>>> 1+1\\n2\\n(Pdb) is the prompt')")),
    Scenario("neg-password-policy", mock(
        "print('Password: must be 12 characters or more');print('Confirm: [y/N] shown later')")),
    Scenario("neg-wrong-nonce-sudo", mock(
        f"print({sudo_marker('feedfacefeedface').decode()!r} + 'not a prompt', flush=True)")),
    Scenario("neg-wrong-nonce-marker", mock(f"print({OTHER_PM!r} + 'plain output')")),
    Scenario("neg-cargo-compiling", mock(
        "import time\nfor c in ['serde','tokio','hyper']:\n print(f'   Compiling {c} v1.0.0', "
        "flush=True); time.sleep(0.05)\n"
        "print('    Finished dev [unoptimized] target(s) in 2.1s')")),
    Scenario("neg-npm-install-log", mock(
        "print('npm WARN deprecated inflight@1.0.6: This module is not supported');"
        "print('added 120 packages, and audited 121 packages in 3s');"
        "print('found 0 vulnerabilities')")),
    Scenario("neg-ssh-motd", mock(
        "print('Welcome to Ubuntu 22.04.3 LTS (GNU/Linux 5.15.0 x86_64)\\n');"
        "print(' * Documentation:  https://help.ubuntu.com');"
        "print('Last login: Tue Nov 24 10:11:12 2026 from 192.168.1.20')")),
    # ---- mocks: the prompt bytes of programs that cannot run here ----
    Scenario("mock-apt-remove", mock(
        "print('Reading package lists... Done\\nBuilding dependency tree... Done');"
        "print('The following packages will be REMOVED:\\n  sl');"
        "print('0 upgraded, 0 newly installed, 1 to remove and 0 not upgraded.');"
        "input('Do you want to continue? [Y/n] ')"), (S("n\r", "confirm"),),
        note="apt-get would remove a package for real"),
    Scenario("mock-apt-essential", mock(
        "print('WARNING: The following essential packages will be removed.');"
        "print('You are about to do something potentially harmful.');"
        "input(\" ?] \")"), (S("\r", kernel_only=True),)),
    Scenario("mock-ssh-hostkey", mock(
        "print(\"The authenticity of host '10.0.0.7 (10.0.0.7)' can't be established.\");"
        "print('ED25519 key fingerprint is SHA256:abc.');"
        "input('Are you sure you want to continue connecting (yes/no/[fingerprint])? ')"),
        (S("no\r", "confirm"),), note="no sshd here"),
    Scenario("mock-ssh-password", mock(
        "import getpass; getpass.getpass(\"alice@10.0.0.7's password: \")"),
        (S("x\r", "password"),)),
    Scenario("mock-sudo", mock(
        f"import getpass; getpass.getpass({sudo_marker(NONCE).decode()!r} + "
        "'[sudo] password for alice: ')"), (S("x\r", "password"),),
        note="sudo is not installed; this is SUDO_PROMPT as the agent sets it"),
    Scenario("mock-sudo-plain", mock(
        "import getpass; getpass.getpass('[sudo] password for alice: ')"),
        (S("x\r", "password"),)),
    Scenario("mock-mysql-repl", mock("input('mysql> '); input('    -> ')"),
             (S("select 1\r", "repl"), S(";\r", "repl"))),
    Scenario("mock-mariadb-repl", mock("input('MariaDB [(none)]> ')"), (S("quit\r", "repl"),)),
    Scenario("mock-npx-proceed", mock(
        "print('Need to install the following packages:\\n  cowsay@1.5.0');"
        "input('Ok to proceed? (y) ')"), (S("n\r", "confirm"),)),
    Scenario("mock-yum", mock("print('Total download size: 1.2 M'); input('Is this ok [y/N]: ')"),
             (S("N\r", "confirm"),)),
    Scenario("mock-conda", mock("input('Proceed ([y]/n)? ')"), (S("n\r", "confirm"),)),
    Scenario("mock-terraform", mock(
        "print('Do you want to perform these actions?');"
        "print('  Only \\'yes\\' will be accepted to approve.\\n');"
        "input('  Enter a value: ')"), (S("no\r", "input_required"),)),
    Scenario("mock-debconf-choice", mock(
        "print('Configuring tzdata\\n------------------\\n');"
        "print('  1. Africa  2. America  3. Europe');"
        "input('Geographic area: ')"), (S("3\r", kernel_only=True),)),
    Scenario("mock-press-any-key", mock("input('Press any key to continue . . . ')"),
             (S("\r", "input_required"),)),
    Scenario("mock-hit-enter", mock("input('Hit ENTER or type command to continue')"),
             (S("\r", "input_required"),)),
    Scenario("mock-git-credentials", mock(
        "import getpass; input(\"Username for 'https://github.com': \"); "
        "getpass.getpass(\"Password for 'https://alice@github.com': \")"),
        (S("alice\r", kernel_only=True), S("x\r", "password"))),
    Scenario("mock-gpg-passphrase", mock(
        "import getpass; getpass.getpass('Enter passphrase: ')"), (S("x\r", "password"),)),
    Scenario("mock-ipython", mock(
        "print('IPython 8.0 -- An enhanced Interactive Python.');input('In [1]: ')"),
        (S("1\r", "repl"),)),
    Scenario("mock-redis", mock("input('127.0.0.1:6379> ')"), (S("ping\r", "repl"),)),
    Scenario("mock-overwrite", mock("input('File exists. Overwrite? (y/n) ')"),
             (S("n\r", "confirm"),)),
    Scenario("mock-more-percent", mock("print('line\\n' * 5, end=''); input('--More--(42%)')"),
             (S("q", "pager"),)),
    Scenario("mock-are-you-sure", mock("input('Are you sure you want to delete 3 files? ')"),
             (S("n\r", "confirm"),)),
]


Cut = tuple[int, int, dict[str, object]]  # (bytes so far, reads so far, /proc snapshot)


def cut_when_waiting(pid: int, pump: Callable[[float], bool], deadline: float,
                     _: int, reads: list[int]) -> Cut:
    """Once the program is asleep on the terminal (the kernel's word; a loaded machine
    makes "quiet for QUIET_S" too early) and no more output comes: where the transcript
    is, and what /proc shows. At the deadline, what it shows then."""
    while time.monotonic() < deadline:
        snap = snapshot(pid)
        if facts_from_record(snap).waiting:
            if not pump(0.1):  # nothing more came: this is the wait
                return sum(reads), len(reads), snap
        else:
            pump(0.1)
    return sum(reads), len(reads), snapshot(pid)


def capture(sc: Scenario,  # noqa: C901
            cuts: list[Cut] | None = None) -> tuple[bytes, list[int], list[dict[str, object]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORTEX_", "PROMPT_"))}
    env.update({"TERM": "xterm-256color", "LANG": "C.UTF-8", "HOME": "/tmp/cc-home"})
    env.pop("SUDO_PROMPT", None)
    env.update(sc.env)
    os.makedirs("/tmp/cc-home", exist_ok=True)
    pid, fd = spawn_in_pty(sc.command, env, rows=sc.rows, cols=sc.cols)
    data = bytearray()
    reads: list[int] = []
    expected: list[dict[str, object]] = []
    eof = False

    def pump(timeout: float) -> bool:
        nonlocal eof
        if eof:
            return False
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return False
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            eof = True
            return False
        data.extend(chunk)
        reads.append(len(chunk))
        return True

    try:
        for step in sc.steps:
            deadline = time.monotonic() + STEP_TIMEOUT_S
            start = len(data)
            while step.wait_for and step.wait_for not in data[start:] and not eof:
                pump(0.2)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sc.name}: {step.wait_for!r} never came")
            while time.monotonic() < deadline and pump(QUIET_S):
                pass
            for kind in step.expect:
                expected.append({"offset": len(data), "kind": kind})
            if step.kernel_only:
                expected.append({"offset": len(data), "kind": "input_required",
                                 "kernel_only": True})
                if cuts is not None:  # what /proc shows, for a transcript ending here
                    cuts.append(cut_when_waiting(pid, pump, deadline, len(data), reads))
            if not eof:
                os.write(fd, step.send)
        deadline = time.monotonic() + END_TIMEOUT_S
        while not eof and time.monotonic() < deadline:
            pump(0.2)
    finally:
        os.close(fd)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    return bytes(data), reads, expected


# Quiet programs that do not wait for a person, each cut once it has been quiet a while:
# the kernel corpus's negatives (the kernel layer must raise nothing for them), and new
# waits of programs the pattern corpus does not have (REPLs and TUIs), scored as waits.
KERNEL_EXTRA: tuple[tuple[str, str, bytes, bool], ...] = (
    # (name, command, output to wait for, waits for a person)
    ("neg-sleep", "echo working; sleep 30", b"working", False),
    ("neg-python-sleep", PY + "\"print('crunching', flush=True); import time; "
     "time.sleep(30)\"", b"crunching", False),
    ("neg-node-stdin-server", "node -e \"process.stdin.on('data', () => {}); "
     "console.log('listening on 3000'); setInterval(() => {}, 1000)\"", b"listening", False),
    ("neg-python-select-stdin", PY + "\"import select, sys; print('serving', flush=True); "
     "select.select([sys.stdin], [], [], 30)\"", b"serving", False),
    ("neg-tail-follow", "echo started > /tmp/cc-tail.log; tail -f /tmp/cc-tail.log",
     b"started", False),
    ("sqlite3-repl", "sqlite3", b"sqlite>", True),
    ("bc-repl", "bc -q", b"", True),
    ("less-pager", "seq 1 200 | less", b"", True),
)
EXTRA_QUIET_S = 1.5


def capture_extra(name: str, command: str, wait_for: bytes, waits: bool,
                  records: dict[str, object]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORTEX_", "PROMPT_"))}
    env.update({"TERM": "xterm-256color", "LANG": "C.UTF-8", "HOME": "/tmp/cc-home"})
    pid, fd = spawn_in_pty(command, env, rows=30, cols=100)
    data, reads = bytearray(), []
    try:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                chunk = os.read(fd, 65536)
                data += chunk
                reads.append(len(chunk))
                quiet_since = time.monotonic()
            elif wait_for in data and time.monotonic() - quiet_since > EXTRA_QUIET_S:
                break
        snap = snapshot(pid)
    finally:
        os.close(fd)
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    (KERNEL_OUT / f"{name}.k0.raw").write_bytes(bytes(data))
    (KERNEL_OUT / f"{name}.k0.reads").write_text("# cols 100\n" + "".join(f"{n}\n" for n in reads))
    lines = [json.dumps({"scenario": name, "command": command, "meta": True})]
    if waits:
        lines.append(json.dumps({"offset": len(data), "kind": "input_required",
                                 "kernel_only": True, "any_wait": True}))
    (KERNEL_OUT / f"{name}.k0.expected.jsonl").write_text("\n".join(lines) + "\n")
    records[f"{name}.k0.raw"] = snap
    print(f"{name}: {len(data)} bytes, kernel says {facts_from_record(snap).waiting or '-'}")


def write_cuts(sc: Scenario, raw: bytes, reads: list[int],
               expected: list[dict[str, object]], cuts: list[Cut],
               records: dict[str, object]) -> None:
    """One transcript per kernel-only wait, ending there, with its /proc snapshot: the
    wait is then a scored expectation (any waiting kind) for the kernel layer."""
    for i, (end, nreads, snap) in enumerate(cuts):
        name = f"{sc.name}.k{i}"
        (KERNEL_OUT / f"{name}.raw").write_bytes(raw[:end])
        (KERNEL_OUT / f"{name}.reads").write_text(f"# cols {sc.cols}\n"
                                                  + "".join(f"{n}\n" for n in reads[:nreads]))
        mine = [e for e in expected if int(str(e["offset"])) < end]
        mine += [{"offset": end, "kind": "input_required", "kernel_only": True,
                  "any_wait": True}]
        lines = [json.dumps({"scenario": sc.name, "command": sc.command, "cut_at": end,
                             "note": sc.note, "meta": True}), *map(json.dumps, mine)]
        (KERNEL_OUT / f"{name}.expected.jsonl").write_text("\n".join(lines) + "\n")
        records[f"{name}.raw"] = snap


def main(argv: list[str]) -> int:
    OUT.mkdir(exist_ok=True)
    kernel_cuts = "--kernel-cuts" in argv  # only the cut transcripts, into kernel/
    argv = [a for a in argv if a != "--kernel-cuts"]
    chosen = [s for s in SCENARIOS if not argv or s.name in argv]
    if kernel_cuts:
        KERNEL_OUT.mkdir(exist_ok=True)
        index = KERNEL_OUT / "kernel.json"
        records: dict[str, object] = json.loads(index.read_text()) if index.exists() else {}
        for sc in chosen:
            if not any(step.kernel_only for step in sc.steps):
                continue
            cuts: list[Cut] = []
            raw, reads, expected = capture(sc, cuts)
            write_cuts(sc, raw, reads, expected, cuts, records)
            print(f"{sc.name}: {len(cuts)} kernel cuts")
        for extra in KERNEL_EXTRA:
            if not argv or extra[0] in argv:
                capture_extra(*extra, records)
        index.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
        return 0
    for sc in chosen:
        raw, reads, expected = capture(sc)
        (OUT / f"{sc.name}.raw").write_bytes(raw)
        (OUT / f"{sc.name}.reads").write_text(f"# cols {sc.cols}\n"
                                              + "".join(f"{n}\n" for n in reads))
        lines = [json.dumps({"scenario": sc.name, "command": sc.command, "note": sc.note,
                             "meta": True})]
        lines += [json.dumps(e) for e in expected]
        (OUT / f"{sc.name}.expected.jsonl").write_text("\n".join(lines) + "\n")
        print(f"{sc.name}: {len(raw)} bytes, {len(reads)} reads, {len(expected)} expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
