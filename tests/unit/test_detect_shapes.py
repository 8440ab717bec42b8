"""Prompt shapes of programs captured here (tests/corpus/kernel) that the pattern layer
knows without the kernel, and the look-alikes it must leave alone."""

import pytest

from nodeagent.detect import patterns


@pytest.mark.parametrize(("line", "rule"), [
    ("Username for 'https://github.com': ", "git_username"),
    (" ?] ", "apt_phrase"),
    ("#? ", "bash_select"),
    ("package name: (cc-npm) ", "default_in_parens"),
    ("Country Name (2 letter code) [AU]:", "field_default_brackets"),
    ("help> ", "python_help"),
    ("# ", "shell_prompt"), ("$ ", "shell_prompt"), ("bash-5.2# ", "shell_prompt"),
    ("alice@build-3:~/src/cortex$ ", "shell_prompt"),
])
def test_known_shapes(line: str, rule: str) -> None:
    p = patterns.match(line, patterns.STRONG, alt_screen=False)
    assert p is not None and p.name == rule


@pytest.mark.parametrize("line", [
    "Downloading: (3/10) ", "# Heading", "echo $ ", "cost: 5 $ ", "[root@box ~]# x",
    "Username for 'https://github.com': alice", "Country Name (2 letter code) [AU]: DE",
    "#?", "total 10 %", "step 1 [ok]:",
])
def test_look_alikes(line: str) -> None:
    assert patterns.match(line, patterns.STRONG, alt_screen=False) is None
