"""Identifier grammars are matched whole: a trailing newline (which ``^…$`` with ``match``
accepts) is refused at every edge that checks one (issue 13)."""

import pytest

from cortex import ids, tools
from cortex.errors import CortexError
from cortexd.artifacts import rules


@pytest.mark.parametrize("check, good", [
    (ids.is_node_id, "node-1"),
    (ids.is_task_id, "t-0123456789abcdef0123"),
    (tools.is_tool_name, "shell"),
    (lambda v: bool(ids.IDEMPOTENCY_KEY_RE.fullmatch(v)), "key-1"),
    (lambda v: bool(ids.ENV_NAME_RE.fullmatch(v)), "PATH"),
])
def test_a_trailing_newline_is_not_an_identifier(check, good):
    assert check(good)
    assert not check(good + "\n")
    assert not check("\n" + good)


def test_labels_with_a_trailing_newline_are_refused():
    assert ids.check_labels({"os": "linux"}) is None
    assert "must match" in (ids.check_labels({"os\n": "linux"}) or "")
    assert "must match" in (ids.check_labels({"os": "linux\n"}) or "")


def test_artifact_digests_and_names_with_a_trailing_newline_are_refused():
    sha = "0" * 64
    rules.check_digest(sha, 1, 10)
    with pytest.raises(CortexError):
        rules.check_digest(sha + "\n", 1, 10)
    with pytest.raises(CortexError):
        rules.check_name("build.log\n")


def test_ptyprocess_is_not_a_dependency_and_nothing_imports_it():
    # Declared and never imported (issue 13): nodeagent/ptyspawn.py says why it is not used.
    import ast
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.startswith("ptyprocess")]
    for package in ("cortex", "cortexd", "cortexctl", "nodeagent", "browserd"):
        for module in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(module.read_text())):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                        node.module or ""]
                    assert not any(n.split(".")[0] == "ptyprocess" for n in names), module
