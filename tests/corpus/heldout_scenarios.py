"""The held-out corpus's scenarios: real programs on this machine, each cut where it stops.

Written before the detector was tuned on them (see heldout_capture.py and
tests/corpus/README). A cut made with :func:`W` is a point where the program waits for a
person (its label says what kind: the kind is informative, any waiting kind scores); one
made with :func:`N` is a point where it has gone quiet without waiting for anyone (a
sleep, a server, work in progress, a program that ended). ``made`` says how the program
was run, so a reader can tell real programs from the few plain scripts that print a
prompt-like text and then do not read (the negatives the brief asks for).
"""

from dataclasses import dataclass, field

from nodeagent.detect.events import CONFIRM, INPUT_REQUIRED, PAGER, PASSWORD, REPL


@dataclass(frozen=True)
class Cut:
    kind: str  # the waiting kind there; "" = not waiting for anyone
    send: bytes = b""  # typed after the cut
    wait_for: bytes = b""  # these bytes must have come before the cut
    quiet_s: float = 0.5

    @property
    def waits(self) -> bool:
        return bool(self.kind)


@dataclass(frozen=True)
class Scenario:
    name: str
    command: str
    cuts: tuple[Cut, ...]
    made: str = "real program"
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""  # a shell line run before (scratch files under /tmp only)
    cols: int = 100
    rows: int = 30


def W(kind: str, send: str | bytes = b"", wait_for: bytes = b"", quiet: float = 0.5) -> Cut:
    return Cut(kind, send.encode() if isinstance(send, str) else send, wait_for, quiet)


def N(wait_for: bytes = b"", quiet: float = 1.5, send: str | bytes = b"") -> Cut:
    return Cut("", send.encode() if isinstance(send, str) else send, wait_for, quiet)


IN, P, C, G, R = INPUT_REQUIRED, PASSWORD, CONFIRM, PAGER, REPL
VPY = "/work/main/.venv/bin/python"
PSQL = "psql -h 127.0.0.1 -U postgres test"
T = "/tmp/cc-ho"  # scratch directory
SCRIPT = "plain script (prints, then does not read)"
GNUPG = {"GNUPGHOME": f"{T}/gnupg"}


def sh(cmd: str) -> str:
    return "bash -c " + "'" + cmd.replace("'", "'\\''") + "'"


def py(code: str, exe: str = "python3") -> str:
    return f"{exe} -c " + "'" + code.replace("'", "'\\''") + "'"


SCENARIOS: list[Scenario] = [
    # ---- shells reading ----
    Scenario("bash-read-bare", sh("read x; echo got $x"), (W(IN, "abc\r"),)),
    Scenario("bash-read-arrow", sh('read -p "> " x'), (W(IN, "q\r"),)),
    Scenario("bash-read-default", sh('read -p "Install path [/opt/app]: " x'), (W(IN, "\r"),)),
    Scenario("bash-read-n1", sh('read -n1 -p "Continue? " x; echo'), (W(C, "y"),)),
    Scenario("bash-read-silent", sh("read -s x; echo"), (W(P, "pw\r"),)),
    Scenario("bash-read-timeout", sh('read -t 60 -p "Answer within 60s: " x'), (W(IN, "ok\r"),)),
    Scenario("bash-select-ps3",
             sh('PS3="Pick one: "; select x in alpha beta gamma; do break; done'),
             (W(IN, "2\r"),)),
    Scenario("bash-read-two", sh('read -p "Host: " h; read -p "Port: " p; echo $h:$p'),
             (W(IN, "db\r"), W(IN, "5432\r"))),
    Scenario("bash-read-then-work",
             sh('read -p "Name: " n; echo "Hello $n"; printf "Processing: "; sleep 60'),
             (W(IN, "bob\r"), N(b"Processing"))),
    Scenario("dash-printf-read", "dash -c 'printf \"Enter value: \"; read x'", (W(IN, "7\r"),)),
    Scenario("zsh-read-q", "zsh -f -c 'read \"x?Your choice> \"'", (W(IN, "a\r"),)),
    Scenario("zsh-interactive", "zsh -f -i", (W(IN, "echo hi\r"), W(IN, "exit\r"))),
    Scenario("bash-ps1-brackets", "bash --norc --noprofile -i",
             (W(IN, "true\r"), W(IN, "exit\r")), env={"PS1": "[root@box \\W]\\$ "}),
    Scenario("bash-ps1-lambda", "bash --norc --noprofile -i", (W(IN, "exit\r"),),
             env={"PS1": "\\w λ "}),
    Scenario("bash-ps1-userhost", "bash --norc --noprofile -i",
             (W(IN, "cd /usr\r"), W(IN, "exit\r")), env={"PS1": "\\u@\\h:\\w\\$ "}),
    Scenario("su-shell", "su -s /bin/bash nobody", (W(IN, "exit\r"),), env={"PS1": "\\u$ "}),
    Scenario("su-password", "su -s /bin/sh nobody -c 'su root -c true'", (W(P, b"\x03"),),
             made="real program (nobody asks su for root's password; Ctrl-C)"),
    # ---- python ----
    Scenario("python-input-bare", py("input()"), (W(IN, "x\r"),)),
    Scenario("python-input-range", py('input("Enter a number between 1 and 10: ")'),
             (W(IN, "3\r"),)),
    Scenario("python-input-arrow", py('input("> ")'), (W(IN, "x\r"),)),
    Scenario("python-getpass-token", py('import getpass; getpass.getpass("Token: ")'),
             (W(P, "t\r"),)),
    Scenario("python-getpass-apikey", py('import getpass; getpass.getpass("API key: ")'),
             (W(P, "k\r"),)),
    Scenario("python-readline-ctrl-d",
             py('import sys; print("Type your message, end with Ctrl-D:"); sys.stdin.read()'),
             (W(IN, b"hi\r\x04"),)),
    Scenario("python-getpass-from-pipe",
             "sleep 60 | " + py('import getpass; getpass.getpass("Vault password: ")'),
             (W(P, b"\x03"),), made="real program (stdin a pipe; getpass reads /dev/tty)"),
    Scenario("python-input-from-pipe", "sleep 60 | " + py('input("Name: ")'), (N(b"Name"),),
             made="real program (stdin a pipe: nobody can type to it)"),
    Scenario("click-prompts", py('import click; click.prompt("Email"); '
                                 'click.prompt("Port", default=8080); '
                                 'click.confirm("Deploy to production?")', VPY),
             (W(IN, "a@b.c\r"), W(IN, "\r"), W(C, "n\r"))),
    Scenario("click-password", py('import click; click.prompt("Password", hide_input=True, '
                                  'confirmation_prompt=True)', VPY),
             (W(P, "pw\r"), W(P, "pw\r"))),
    Scenario("python-cmd-shell", py('import cmd\nclass S(cmd.Cmd):\n prompt = "(shop) "\n'
                                    ' def do_quit(self, a): return True\nS().cmdloop()'),
             (W(R, "help\r"), W(R, "quit\r"))),
    Scenario("python-interact-ps1", py('import code, sys; sys.ps1 = "calc> "; '
                                       'code.interact(banner="")'),
             (W(R, "1+2\r"), W(R, b"\x04"))),
    Scenario("python-asyncio-repl", "python3 -m asyncio", (W(R, "exit()\r"),)),
    Scenario("python-m-pdb", "python3 -m pdb -c 'b 2' /tmp/cc-ho/p.py",
             (W(R, "c\r"), W(R, "q\r")),
             setup="mkdir -p /tmp/cc-ho && printf 'x = 1\\ny = 2\\n' > /tmp/cc-ho/p.py"),
    Scenario("ipython", "ipython3 --no-banner --colors=NoColor", (W(R, "exit\r", quiet=1.0),)),
    Scenario("python-curses-getch",
             py('import curses\ndef m(s):\n s.addstr(0, 0, "Press q to quit"); s.refresh(); '
                's.getch()\ncurses.wrapper(m)'), (W(G, "q"),)),
    # ---- node ----
    Scenario("node-inquirer-like",
             "node -e 'const r=require(\"readline\").createInterface({input:process.stdin,"
             "output:process.stdout}); r.question(\"? Package name: \", a=>r.close())'",
             (W(IN, "x\r"),)),
    Scenario("node-custom-repl", "node -e 'require(\"repl\").start(\"app> \")'",
             (W(R, "1+1\r"), W(R, ".exit\r"))),
    Scenario("node-press-enter",
             "node -e 'process.stdout.write(\"Press ENTER to start\"); "
             "process.stdin.once(\"data\", () => process.exit(0))'", (W(IN, "\r"),)),
    Scenario("npm-init-yes", f"mkdir -p {T}/npm && cd {T}/npm && rm -f package.json && "
             "npm init -y", (N(b"}", quiet=2.0),)),
    # ---- databases ----
    Scenario("psql-custom-prompt", PSQL + " -v PROMPT1='%n@%/%R%# '",
             (W(R, "select 1;\r"), W(R, "\\q\r"))),
    Scenario("psql-prompt-var", PSQL + " -c '\\prompt \"Enter id: \" x'", (W(IN, "1\r"),)),
    Scenario("psql-pg-sleep", PSQL + " -c 'select pg_sleep(60)'", (N(quiet=2.0),),
             made="real program (a long query, quiet)"),
    Scenario("redis-cli-repl", "redis-cli -h 127.0.0.1", (W(R, "ping\r"), W(R, "quit\r"))),
    Scenario("redis-cli-db2", "redis-cli -h 127.0.0.1 -n 2", (W(R, "quit\r"),)),
    Scenario("redis-cli-subscribe", "redis-cli -h 127.0.0.1 subscribe cc-heldout",
             (N(b"(integer) 1", quiet=2.0),), made="real program (waits for messages)"),
    Scenario("redis-cli-blpop", "redis-cli -h 127.0.0.1 blpop cc-heldout-empty 60",
             (N(quiet=2.0),), made="real program (a blocking pop, quiet)"),
    Scenario("sqlite3-continuation", f"sqlite3 {T}/db.sqlite",
             (W(R, "select\r"), W(R, "1;\r"), W(R, ".quit\r")), setup=f"mkdir -p {T}"),
    Scenario("mariadb-refused", "mariadb -h 127.0.0.1 -P 1 -u root", (N(quiet=1.0),),
             made="real program (no server: it says so and ends)"),
    # ---- credentials and keys ----
    Scenario("gpg-gen-key", "gpg --gen-key",
             (W(IN, "Alice Example\r", b"Real name"), W(IN, "alice@example.com\r"),
              W(C, "q\r")), env=GNUPG, setup=f"rm -rf {T}/gnupg; mkdir -p -m 700 {T}/gnupg"),
    Scenario("ssh-keygen-file", "rm -rf /tmp/cc-heldout-home/.ssh && ssh-keygen -t ed25519",
             (W(IN, b"\x03"),)),
    Scenario("ssh-keygen-old-pass", f"ssh-keygen -p -f {T}/key",
             (W(P, b"\x03"),),
             setup=f"mkdir -p {T}; rm -f {T}/key*; ssh-keygen -q -N secret -t ed25519 -f {T}/key"),
    Scenario("ssh-refused", "ssh -o BatchMode=yes -p 1 127.0.0.1 true", (N(quiet=1.0),),
             made="real program (no sshd: it says so and ends)"),
    Scenario("openssl-enc-pass", f"openssl enc -aes-256-cbc -pbkdf2 -in /etc/hostname -out {T}/e",
             (W(P, "pw\r"), W(P, "pw\r")), setup=f"mkdir -p {T}"),
    Scenario("openssl-genrsa-dots", f"openssl genrsa -out {T}/k.pem 3072", (N(quiet=3.0),),
             made="real program (progress dots, then it ends)", setup=f"mkdir -p {T}"),
    # ---- git ----
    Scenario("git-credential-fill", "git -c credential.helper= credential fill",
             (W(IN, "protocol=https\rhost=example.com\r\r", quiet=1.0),
              W(IN, "bob\r", b"Username"), W(P, "x\r", b"")),
             env={"GIT_ASKPASS": "", "SSH_ASKPASS": ""},
             made="real program (the first cut: git reading its description from stdin, "
                  "no prompt text)"),
    Scenario("git-add-interactive", f"cd {T}/repo && git add -i",
             (W(IN, "q\r"),), setup=f"rm -rf {T}/repo && git init -q {T}/repo && cd {T}/repo && "
             "echo a > f && git add f && git -c user.email=a@b -c user.name=a commit -qm i && "
             "echo b >> f"),
    Scenario("git-clean-interactive", f"cd {T}/repo2 && git clean -i",
             (W(IN, "q\r"),), setup=f"rm -rf {T}/repo2 && git init -q {T}/repo2 && "
             f"touch {T}/repo2/junk"),
    Scenario("git-difftool-launch", f"cd {T}/repo3 && git difftool -t vimdiff",
             (W(C, "n\r"),), setup=f"rm -rf {T}/repo3 && git init -q {T}/repo3 && cd {T}/repo3 "
             "&& echo a > f && git add f && git -c user.email=a@b -c user.name=a commit -qm i "
             "&& echo b >> f"),
    Scenario("git-commit-nano", f"cd {T}/repo4 && git -c user.email=a@b -c user.name=a commit",
             (W(G, b"\x18", quiet=1.0),), env={"GIT_EDITOR": "nano"},
             setup=f"rm -rf {T}/repo4 && git init -q {T}/repo4 && cd {T}/repo4 && "
             "echo a > f && git add f"),
    Scenario("git-gc-progress", f"cd {T}/clone && git gc --aggressive",
             (N(quiet=2.0),), setup=f"rm -rf {T}/clone && git clone -q /work/main {T}/clone",
             made="real program (progress that redraws, then it ends)"),
    # ---- confirmations ----
    Scenario("mv-interactive", f"cd {T} && touch a b && mv -i a b", (W(C, "n\r"),),
             setup=f"mkdir -p {T}"),
    Scenario("ln-interactive", f"cd {T} && touch la lb && ln -i -s la lb", (W(C, "n\r"),),
             setup=f"mkdir -p {T}"),
    Scenario("rm-recursive-interactive", f"cd {T} && mkdir -p rd && touch rd/x && rm -ri rd",
             (W(C, "n\r"),), setup=f"mkdir -p {T}"),
    Scenario("apt-get-remove-no", "apt-get remove htop", (W(C, "n\r", b"continue"),),
             made="real program (answered n: nothing is removed)"),
    Scenario("pip-uninstall-venv", f"{T}/venv/bin/pip uninstall pip",
             (W(C, "n\r", b"Proceed"),), setup=f"mkdir -p {T}; [ -x {T}/venv/bin/pip ] || "
             f"python3 -m venv {T}/venv", made="real program (answered n)"),
    Scenario("gdb-quit-anyway", "gdb -q -nx --args sleep 100",
             (W(R, "run\r"), N(b"Starting", quiet=1.5, send=b"\x03"), W(R, "quit\r"),
              W(C, "y\r"))),
    Scenario("chfn-fields", "chfn nobody", (W(IN, b"\x03"),),
             made="real program (Ctrl-C at the first field: nothing changes)"),
    # ---- other REPLs ----
    Scenario("tclsh-repl", "tclsh", (W(R, "puts hi\r"), W(R, "exit\r"))),
    Scenario("perl-debugger", "perl -d -e 'print 1'", (W(R, "q\r"),)),
    Scenario("perl-stdin", "perl -e 'print \"Enter your name: \"; my $x = <STDIN>;'",
             (W(IN, "bob\r"),)),
    Scenario("bc-banner", "bc", (W(R, "quit\r"),)),
    Scenario("ed-prompt", "ed -p '*'", (W(R, "q\r"),)),
    Scenario("ed-bare", "ed", (W(R, "q\r"),)),
    Scenario("awk-stdin", "awk '{print $1}'", (W(IN, b"a b\r"), W(IN, b"\x04"))),
    # ---- pagers and full-screen programs ----
    Scenario("less-search", "less /etc/services",
             (W(G, "/"), W(G, "tcp\r"), W(G, "q"))),
    Scenario("man-more", "man -P more ls", (W(G, "q"),)),
    Scenario("nano-file", f"nano {T}/n.txt", (W(G, b"\x18", quiet=1.0),),
             setup=f"mkdir -p {T}"),
    Scenario("vim-insert", f"vim -u NONE -N {T}/v.txt", (W(G, "ihello"), W(G, b"\x1b:q!\r")),
             setup=f"mkdir -p {T}"),
    Scenario("htop", "htop -d 50", (W(G, "q", quiet=1.5),)),
    Scenario("whiptail-yesno", "whiptail --yesno 'Proceed with install?' 10 40",
             (W(C, "\r", quiet=1.0),)),
    Scenario("whiptail-inputbox", "whiptail --inputbox 'Hostname:' 10 40 box",
             (W(IN, "\r", quiet=1.0),)),
    Scenario("dialog-menu", "dialog --menu 'Choose a mirror' 12 40 3 1 a 2 b 3 c",
             (W(IN, "\r", quiet=1.0),)),
    Scenario("watch-date", "watch -n 60 date", (N(b"Every", quiet=2.0),),
             made="real program (redraws every minute, reads no key)"),
    # ---- quiet programs that wait for nobody ----
    Scenario("http-server-quiet", "python3 -m http.server 0 --bind 127.0.0.1",
             (N(b"Serving", quiet=2.0),)),
    Scenario("tail-f-empty", f"touch {T}/empty.log && tail -n0 -f {T}/empty.log",
             (N(quiet=2.0),), setup=f"mkdir -p {T}"),
    Scenario("sleep-pipe-cat", "sleep 60 | cat", (N(quiet=2.0),)),
    Scenario("make-sleeping", f"make -f {T}/Makefile", (N(b"sleep", quiet=2.0),),
             setup=f"mkdir -p {T} && printf 'all:\\n\\t@echo Building target: all\\n"
             f"\\tsleep 60\\n' > {T}/Makefile"),
    Scenario("vmstat-interval", "vmstat 2 30", (N(b"free", quiet=1.0),)),
    Scenario("tqdm-slow", py('import time, tqdm\nfor _ in tqdm.tqdm(range(5), desc="Epoch"):'
                             ' time.sleep(4)', VPY), (N(b"Epoch", quiet=1.0),),
             made="real library (progress bar between updates)"),
    Scenario("node-server-quiet", "node -e 'require(\"http\").createServer().listen(0, "
             "\"127.0.0.1\", () => console.log(\"Server listening:\"))'",
             (N(b"listening", quiet=2.0),)),
    # ---- plain scripts whose last text looks like a prompt and that do not read ----
    Scenario("script-colon-sleep", sh('printf "Downloading: "; sleep 60'), (N(b"Down"),),
             made=SCRIPT),
    Scenario("script-question-sleep", sh('printf "Is the server up? "; sleep 60'),
             (N(b"up?"),), made=SCRIPT),
    Scenario("script-dollar-sleep", sh('printf "\\$ make test\\n"; printf "\\$ "; sleep 60'),
             (N(b"make"),), made=SCRIPT + ": a demo script's fake prompt"),
    Scenario("script-arrow-sleep", sh('printf "> "; sleep 60'), (N(b">"),), made=SCRIPT),
    Scenario("script-password-policy", sh('printf "Checking password: "; sleep 60'),
             (N(b"password"),), made=SCRIPT),
    Scenario("script-connecting", sh('printf "Connecting to 127.0.0.1:5432... "; sleep 60'),
             (N(b"Conn"),), made=SCRIPT),
    Scenario("script-ends-colon", sh('printf "Result: "'), (N(b"Result"),),
             made=SCRIPT + " (and ends)"),
    Scenario("script-ends-yn-text", sh('echo "Run again with --yes to skip: Continue? [y/N]"'),
             (N(b"y/N"),), made=SCRIPT + " (a newline after it; ends)"),
    # ---- more quiet moments: work in progress, REPLs busy running a command ----
    Scenario("openssl-speed", "openssl speed -seconds 3 md5", (N(b"Doing", quiet=1.0),),
             made="real program (its line ends in ': ' while it measures)"),
    Scenario("tar-silent", f"tar czf {T}/doc.tgz /usr/share/doc 2>/dev/null; echo done",
             (N(quiet=1.0),), setup=f"mkdir -p {T}"),
    Scenario("sha256-silent", "head -c 3G /dev/zero | sha256sum", (N(quiet=1.0),)),
    Scenario("yes-devnull", "timeout 30 yes > /dev/null", (N(quiet=1.5),),
             made="real program (busy, prints nothing)"),
    Scenario("redis-cli-interval", "redis-cli -h 127.0.0.1 -r 10 -i 5 ping",
             (N(b"PONG", quiet=1.5),)),
    Scenario("top-batch-wait", "top -b -d 60 -n 2 | head -15", (N(b"PID", quiet=2.0),)),
    Scenario("python-repl-busy", "python3 -q",
             (W(R, "import time; time.sleep(60)\r"), N(b"sleep", quiet=1.5))),
    Scenario("psql-repl-busy", PSQL, (W(R, "select pg_sleep(60);\r"), N(b"pg_sleep", quiet=1.5))),
    Scenario("bash-prompt-busy", "bash --norc --noprofile -i",
             (W(IN, "sleep 60\r"), N(b"sleep", quiet=1.5)), env={"PS1": "\\u@\\h:\\w\\$ "}),
    Scenario("node-repl-busy", "node",
             (W(R, "await new Promise(r => setTimeout(r, 60000))\r"), N(b"Promise", quiet=1.5))),
    Scenario("sqlite3-busy", "sqlite3",
             (W(R, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "
                   "WHERE x < 300000000) SELECT count(*) FROM c;\r"),
              N(b"count", quiet=1.5))),
    Scenario("read-from-pipe-question",
             "sleep 60 | " + py('import sys; sys.stdout.write("Ready? "); sys.stdout.flush(); '
                                'sys.stdin.read()'),
             (N(b"Ready"),), made="real program (stdin a pipe: nobody can type to it)"),
    Scenario("git-log-format-colon", "cd /work/main && git log -1 --format='%h: '",
             (N(quiet=1.0),), made="real program (its last line ends in ': '; it ends)"),
    Scenario("script-perl-sleeping", "perl -e '$|=1; print \"Sleeping: \"; sleep 60'",
             (N(b"Sleep"),), made=SCRIPT),
    Scenario("script-node-compiling", "node -e 'process.stdout.write(\"Compiling... \"); "
             "setTimeout(() => {}, 60000)'", (N(b"Compiling"),), made=SCRIPT),
    Scenario("script-choice-newline", sh('echo "Enter choice:"; sleep 60'), (N(b"choice"),),
             made=SCRIPT + " (a newline after it)"),
    # ---- captured after the tuning (not held out): a descendant that left the session ----
    Scenario("su-c-read", "su -s /bin/bash nobody -c 'read -p \"Reply: \" x'", (W(IN, "ok\r"),),
             made="real program, captured after tuning (su -c: setsid, then a read)"),
    Scenario("setsid-read", "setsid -w bash -c 'read -p \"Reply: \" x'", (W(IN, "ok\r"),),
             made="real program, captured after tuning (a new session reading the terminal)"),
    Scenario("su-c-sleep", "su -s /bin/sh nobody -c 'echo working; sleep 60'",
             (N(b"working"),), made="real program, captured after tuning"),
]
