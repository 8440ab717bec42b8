"""Monitor policies from files named in the configuration, re-read on SIGHUP.

``monitor_policy_files`` lists files and directories (comma-separated); each
``NAME.toml`` — a file named there, or one in a directory named there — is the
stored policy ``NAME`` (``cortexctl policies show NAME``), as if put with
``cortexctl policies put``. The control process syncs them into the store when it
starts and on every reload (``cortexd/reload.py``), and says what changed in its log:

- ``policy_added`` / ``policy_changed`` (with the rule ids added, removed and changed)
  per policy, ``policy_file_invalid`` for a file that cannot be read or parsed (the
  stored policy of that name stays as it was), then one ``policies_reloaded`` summary;
- a policy whose file is no longer named stays stored (policies may also be put by
  hand); the summary names it under ``not_in_files``.

Tasks already running keep the policy text they were submitted with (agents.py): a
changed file takes effect for the tasks submitted after the reload.
"""

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex import logs
from cortexd.control.agents import DEFAULT_OWNER
from cortexd.control.state import now_ms
from cortexd.monitors.actions import POLICY_NAME_CHARS
from cortexd.monitors.policy import MAX_POLICY_BYTES, PolicyError, parse_policy
from cortexd.store.monitoring import MonitorTables, PolicyRow


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    not_in_files: list[str] = field(default_factory=list)


def policy_files(spec: str) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """{policy name: file} from ``spec``, and (path, problem) for what cannot be used."""
    found: dict[str, Path] = {}
    problems: list[tuple[str, str]] = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        path = Path(item).expanduser()
        files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
        for f in files:
            name = f.stem
            if f.suffix != ".toml":
                problems.append((str(f), "a policy file's name ends in .toml"))
            elif not (0 < len(name) <= 64 and set(name) <= POLICY_NAME_CHARS) \
                    or name == "inline":
                problems.append((str(f), "a policy name is 1-64 letters, digits, - _ ."))
            elif name in found:
                problems.append((str(f), f"policy {name!r} is also {found[name]}"))
            else:
                found[name] = f
    return found, problems


def _rules(body: str) -> dict[str, Any]:
    rules = tomllib.loads(body).get("rule", [])
    return {str(r.get("id", i)): r for i, r in enumerate(rules)}


def rule_changes(before: str, after: str) -> dict[str, list[str]]:
    """The rule ids added, removed and changed between two valid policy texts."""
    a, b = _rules(before), _rules(after)
    return {"rules_added": sorted(set(b) - set(a)), "rules_removed": sorted(set(a) - set(b)),
            "rules_changed": sorted(k for k in set(a) & set(b) if a[k] != b[k])}


async def sync_policies(store: MonitorTables, spec: str) -> SyncReport:
    log = logs.get()
    report = SyncReport()
    files, problems = policy_files(spec)
    for bad, problem in problems:
        log.error("policy_file_invalid", file=bad, problem=problem)
        report.invalid.append(bad)
    for name, path in files.items():
        try:
            data = path.read_bytes()
            if len(data) > MAX_POLICY_BYTES:
                raise PolicyError(f"larger than {MAX_POLICY_BYTES} bytes")
            body = data.decode()
            policy = parse_policy(name, body)
        except (OSError, UnicodeDecodeError, PolicyError) as e:
            log.error("policy_file_invalid", policy=name, file=str(path), problem=str(e),
                      note="the stored policy stays as it was")
            report.invalid.append(name)
            continue
        stored = await store.get_policy(DEFAULT_OWNER, name)
        if stored is not None and stored.body == body:
            report.unchanged.append(name)
            continue
        await store.put_policy(PolicyRow(DEFAULT_OWNER, name, body, now_ms()))
        if stored is None:
            log.info("policy_added", policy=name, file=str(path), rules=len(policy.rules))
            report.added.append(name)
        else:
            log.info("policy_changed", policy=name, file=str(path), rules=len(policy.rules),
                     **rule_changes(stored.body, body))
            report.changed.append(name)
    report.not_in_files = [p.name for p in await store.list_policies(DEFAULT_OWNER)
                           if p.name not in files]
    log.info("policies_reloaded", added=report.added, changed=report.changed,
             unchanged=len(report.unchanged), invalid=report.invalid,
             not_in_files=report.not_in_files)
    return report
