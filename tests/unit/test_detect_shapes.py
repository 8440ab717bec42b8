"""Prompt shapes of programs captured here (tests/corpus/kernel, tests/corpus/heldout) that
the pattern layer knows without the kernel, and the look-alikes it must leave alone.
Strong shapes fire at once; shaped ones at the quiet tick, unless the kernel says nobody
reads the terminal."""

import pytest

from nodeagent.detect import patterns


@pytest.mark.parametrize(("line", "rule"), [
    ("Username for 'https://github.com': ", "git_username"),
    (" ?] ", "apt_phrase"),
    ("#? ", "bash_select"),
    ("package name: (cc-npm) ", "default_in_parens"),
    ("Country Name (2 letter code) [AU]:", "field_default_brackets"),
    ("help> ", "python_help"),
    ("postgres@test=# ", "repl_psql"), ("Quit anyway? (y or n) ", "yes_no_word"),
    ("Verifying - Enter PEM pass phrase:", "password"),
])
def test_known_shapes(line: str, rule: str) -> None:
    p = patterns.match(line, patterns.STRONG, alt_screen=False)
    assert p is not None and p.name == rule


@pytest.mark.parametrize(("line", "rule"), [
    ("# ", "shell_prompt"), ("$ ", "shell_prompt"), ("bash-5.2# ", "shell_prompt"),
    ("alice@build-3:~/src/cortex$ ", "shell_prompt"), ("[root@box src]# ", "shell_prompt"),
    ("> ", "repl_node"), ("app> ", "repl_named"), ("What now> ", "repl_named"),
    ("(shop) ", "repl_parens"), ("  DB<1> ", "repl_perl_db"),
    ("Install path [/opt/app]: ", "field_default"), ("\tFull Name [nobody]: ", "field_default"),
    ("Real name: ", "field_label"), ("? Package name: ", "field_label"),
    ("API key: ", "field_label"),
    ("Enter a number between 1 and 10: ", "enter_verb"), ("Pick one: ", "enter_verb"),
    ("Change (N)ame, (E)mail, or (O)kay/(Q)uit? ", "letter_choice"),
    ("Continue? ", "confirm_word"),
])
def test_shaped(line: str, rule: str) -> None:
    assert patterns.match(line, patterns.STRONG, alt_screen=False) is None
    p = patterns.match(line, patterns.SHAPED, alt_screen=False)
    assert p is not None and p.name == rule


@pytest.mark.parametrize("line", [
    "Downloading: (3/10) ", "# Heading", "echo $ ", "cost: 5 $ ", "[root@box ~]# x",
    "Username for 'https://github.com': alice", "Country Name (2 letter code) [AU]: DE",
    "#?", "total 10 %", "step 1 [ok]:", "Checking password: ", "Downloading file: ",
    "ERROR 2002 (HY000): ", "Doing md5 for 3s on 16 size blocks: ", "Is the server up? ",
    "Connecting to 127.0.0.1:5432... ", "Total so far: ", "Result? 42",
])
def test_look_alikes(line: str) -> None:
    assert patterns.match(line, patterns.STRONG, alt_screen=False) is None
    assert patterns.match(line, patterns.SHAPED, alt_screen=False) is None
