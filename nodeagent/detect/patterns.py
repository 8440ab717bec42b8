"""The table of input-required patterns, matched against the rendered last line.

Strong entries fire on their own, at once. Shaped entries (:data:`SHAPED`: a prompt's
usual shape that a program's output can also take — ``"$ "``, ``"> "``, ``"Host: "``,
``"Port [8080]: "``) fire at the quiet tick: where the kernel can be asked, only if someone
in the foreground group reads or polls the terminal (a "nobody reads it" vetoes them, and
the live layer asks again later); where it cannot (a transcript), on their shape alone.
Weak entries (a line ending in ``": "`` or ``"? "``) are only candidates: they fire when
the kernel layer agrees that the foreground process is asleep reading the terminal (so a
transcript, where the kernel cannot be asked, never fires them). A line whose first word
is a gerund (``"Checking password: "``, ``"Downloading: "``) is progress, not a question:
the password and shaped entries skip it.

Invariants: each table is ordered, the first matching entry wins (strong, then shaped,
then weak); every regex is anchored at the end of the line (``$``), so text that merely
continues past a pattern does not match; only the last :data:`MATCH_WINDOW` characters are examined.
"""

import re
from dataclasses import dataclass

from nodeagent.detect.events import CONFIRM, INPUT_REQUIRED, PAGER, PASSWORD, REPL

MATCH_WINDOW = 300


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    kind: str
    confidence: float
    regex: re.Pattern[str]
    alt_screen_only: bool = False


def _p(name: str, kind: str, confidence: float, regex: str, alt: bool = False) -> Pattern:
    return Pattern(name, kind, confidence, re.compile(regex), alt)


STRONG: tuple[Pattern, ...] = (
    # ssh's host-key question before the generic yes/no (it is a confirm, very exact)
    _p("ssh_host_key", CONFIRM, 0.99,
       r"continue connecting \(yes/no(?:/\[fingerprint\])?\)\?\s*$"),
    _p("password", PASSWORD, 0.95,
       r"(?i)^(?!\s*[a-z]+ing\s+[a-z])[^\n]*?(?:\bpass(?:word|phrase| phrase)|\bPIN\b|\bpasscode)"
       r"[^\n]{0,120}?:\s*$"),
    _p("password_again", PASSWORD, 0.9, r"(?i)\b(?:retype|re-enter|verify)\b.{0,40}:\s*$"),
    _p("yes_no_bracket", CONFIRM, 0.95,
       r"(?i)[\[(]\s*(?:y(?:es)?\s*/\s*n(?:o)?|\[y\]\s*/\s*n|y\s*/\s*\[n\])(?:/[^\])\n]{0,40})?"
       r"\s*[\])]\s*[?:]?\s*(?:\[[^\]\n]{0,20}\]\s*)?$"),
    _p("git_hunk", CONFIRM, 0.95, r"\[y,n(?:,[a-zA-Z?/]){1,12}\]\?\s*$"),
    _p("unzip_replace", CONFIRM, 0.95, r"\[y\]es, \[n\]o\b[^\n]{0,60}:\s*$"),
    _p("coreutils_interactive", CONFIRM, 0.9,
       r"^[\w.\-]{1,20}: (?:remove|overwrite|replace|descend into|remove write-protected)\b"
       r"[^\n]{0,300}\? $"),
    _p("yes_no_word", CONFIRM, 0.9,
       r"(?i)\((?:yes/no|y/n|y or n|yes or no)\)\s*[?:]?\s*$"
       r"|\b(?:yes or no|y or n)\b[^\n]{0,20}[?:]\s*$"),
    _p("proceed_y", CONFIRM, 0.9, r"(?i)\b(?:ok to proceed|proceed)\?\s*\(y\)\s*$"),
    _p("question_confirm", CONFIRM, 0.85,
       r"(?i)\b(?:do you (?:want|wish)|would you like|are you sure|continue anyway|"
       r"really (?:delete|remove|overwrite))\b[^\n]{0,160}\? $"),
    _p("press_key", INPUT_REQUIRED, 0.9,
       r"(?i)\b(?:press|hit|type)\s+(?:any key|a key|\[?(?:enter|return)\]?|<(?:enter|return)>|"
       r"the (?:enter|return) key)\b[^\n]{0,80}$"),
    _p("pager_end", PAGER, 0.95, r"\(END\)\s*$"),
    _p("pager_more", PAGER, 0.95, r"--More--(?:\(\d+%\))?\s*$"),
    _p("pager_man", PAGER, 0.95, r"(?i)\bmanual page\b.*\bline \d+.*$"),
    _p("pager_help_quit", PAGER, 0.9, r"\(press h for help or q to quit\)\s*$"),
    _p("pager_lines", PAGER, 0.85, r"\blines \d+-\d+(?:/\d+)?(?: \d+%| \(END\))?\s*$"),
    _p("pager_colon", PAGER, 0.8, r"^:$"),
    _p("repl_python", REPL, 0.9, r"^(?:>>>|\.\.\.) $"),
    _p("repl_ipython", REPL, 0.9, r"^In \[\d+\]: $"),
    _p("repl_pdb", REPL, 0.95, r"^\((?:Pdb|ipdb|Pdb\+\+)\) $|^ipdb> $"),
    _p("repl_gdb", REPL, 0.95, r"^\((?:gdb|lldb)\) $"),
    _p("repl_psql", REPL, 0.9, r"^[\w.\-]{1,63}(?:@[\w.\-]{1,63})?[=\-(*'\"$!][#>] $"),
    _p("repl_mysql", REPL, 0.95, r"^(?:mysql|MariaDB \[[^\]\n]*\])> $|^\s{4}-> $"),
    _p("repl_sqlite", REPL, 0.95, r"^sqlite> $|^   \.\.\.> $"),
    _p("repl_irb", REPL, 0.9, r"^irb\([^)\n]*\):\d+:\d+[>*\"'] $"),
    _p("repl_redis", REPL, 0.85, r"^[\w.\-]+:\d+(?:\[\d+\])?> $"),
    _p("python_help", INPUT_REQUIRED, 0.9, r"^help> $"),
    # Questions whose shape is a program's own (captured here: tests/corpus/kernel).
    _p("git_username", INPUT_REQUIRED, 0.9, r"^Username for '[^'\n]{1,200}': $"),
    _p("apt_phrase", INPUT_REQUIRED, 0.9, r"^ \?\] $"),
    _p("bash_select", INPUT_REQUIRED, 0.9, r"^#\? $"),
    _p("default_in_parens", INPUT_REQUIRED, 0.8,
       r"^[a-z][\w .\-]{0,60}: \([^()\n]{1,80}\) $"),  # npm init: "package name: (dir) "
    _p("field_default_brackets", INPUT_REQUIRED, 0.8,
       r"^[A-Z][^\n]{0,120} \[[^\]\n]{0,80}\]:$"),  # openssl req: "Country Name ... [AU]:"
    _p("installer_choice", INPUT_REQUIRED, 0.85,
       r"(?i)\b(?:enter a value|enter (?:your )?(?:choice|selection|number)|your choice|"
       r"selection(?: number)?|choose (?:an? )?\w+|select (?:an? )?\w+|"
       r"type (?:the )?number)\b[^\n]{0,80}[:?>]\s*(?:\[[^\]\n]{0,30}\]\s*)?$"),
)

_NOT_PROGRESS = r"^(?!\s*[A-Za-z]+ing\s+[a-z])"  # "Checking password: ", not "Verifying - "
# The last word of a form field's label ("Real name: ", "? Package name: ", "API key: ").
_FIELD = (r"(?:user)?name|login|user|e-?mail|address|host(?:name)?|server|port|token|key|"
          r"id|path|file(?:name)?|director(?:y|ies)|folder|value|number|choice|answer|area|"
          r"region|zone|code|url|domain|organi[sz]ation|title|description|version|licen[cs]e|"
          r"branch|message|database|account|country|city|phone|date|time|amount|size|count")

SHAPED: tuple[Pattern, ...] = (
    # A shell's own prompt as the whole line: "# ", "$ ", "bash-5.2# ", "me@host:~/src$ "
    # (an interactive shell with no Cortex marker, e.g. another task's nonce).
    _p("shell_prompt", INPUT_REQUIRED, 0.8,
       r"^(?:[\w.\-]{1,40}(?:@[\w.\-]{1,64})?(?::[~/][^\s]{0,120})?)?[#$%] $"
       r"|^\[[\w.\-]{1,40}@[\w.\-]{1,64}(?: [^\]\n]{1,120})?\][#$%] $"),  # "[me@box src]$ "
    _p("repl_node", REPL, 0.85, r"^(?:> |\.\.\. )$"),
    # A REPL or a menu named by its prompt: "app> ", "calc> ", "What now> ", "(shop) ",
    # perl's "  DB<1> ".
    _p("repl_named", REPL, 0.8, r"^[A-Za-z][\w.\-]{0,30}(?: [A-Za-z][\w.\-]{0,20}){0,2}> $"),
    _p("repl_parens", REPL, 0.8, r"^\([A-Za-z][\w.\- ]{0,30}\) $"),
    _p("repl_perl_db", REPL, 0.9, r"^\s{0,4}DB<+\d+>+ $"),
    _p("field_default", INPUT_REQUIRED, 0.8,
       _NOT_PROGRESS + r"(?![A-Z]{2,}\b)\s*(?:\? )?[A-Z][^\n]{0,120} "
       r"(?:\[[^\]\n]{0,80}\]|\([^()\n]{1,80}\)): $"),
    _p("field_label", INPUT_REQUIRED, 0.8,
       r"(?i)^(?!\s*[a-z]+ing\s+[a-z])\s*(?:\? )?(?:[a-z][\w\-]*\s){0,3}(?:" + _FIELD
       + r")[:?] $"),
    _p("enter_verb", INPUT_REQUIRED, 0.8,
       r"(?i)^(?:\? )?(?:please )?(?:enter|type|input|choose|pick|select|provide|specify)\b"
       r"[^\n]{0,120}[:?] $"),
    _p("letter_choice", CONFIRM, 0.8, r"(?:\([A-Za-z]\)\w*[^\n(]{0,40}){2,}\? $"),
    _p("confirm_word", CONFIRM, 0.8,
       r"(?i)^(?:continue|proceed|overwrite|replace|retry|abort|delete|remove|install|"
       r"save(?: changes)?|quit|exit)\? $"),
)

WEAK: tuple[Pattern, ...] = (
    _p("line_ends_colon", INPUT_REQUIRED, 0.75, r"\S[^\n]{0,200}: $"),
    _p("line_ends_question", INPUT_REQUIRED, 0.75, r"\S[^\n]{0,200}\? $"),
)


def match(text: str, table: tuple[Pattern, ...], alt_screen: bool) -> Pattern | None:
    window = text[-MATCH_WINDOW:]
    for pat in table:
        if pat.alt_screen_only and not alt_screen:
            continue
        if pat.regex.search(window):
            return pat
    return None
