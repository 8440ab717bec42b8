"""Task limits from the command line to the node's TaskSpec (issue 3, items 1 and 9)."""

import pytest

from cortex.v1 import node_pb2
from cortexctl import cli, commands
from cortexctl.errors import UsageError
from cortexd.control.placement import spec_of
from cortexd.store import TaskRow


def test_submit_flags_carry_the_limits() -> None:
    args = cli.build_parser().parse_args([
        "submit", "--task-timeout", "60", "--idle-timeout", "5", "--memory-max", "64M",
        "--pids-max", "50", "sleep", "1"])
    req = commands.submit_request(args)
    assert (req.timeout_s, req.idle_timeout_s, req.memory_max_bytes, req.pids_max) == (
        60, 5, 64 << 20, 50)
    plain = commands.submit_request(cli.build_parser().parse_args(["submit", "true"]))
    assert (plain.idle_timeout_s, plain.memory_max_bytes, plain.pids_max) == (0, 0, 0)


@pytest.mark.parametrize("text, size", [("1024", 1024), ("64M", 64 << 20), ("1g", 1 << 30),
                                        ("512KiB", 512 << 10), ("2MB", 2 << 20)])
def test_sizes(text: str, size: int) -> None:
    assert commands.parse_size(text, "--memory-max") == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5G", "64Q"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError, match="--memory-max"):
        commands.parse_size(text, "--memory-max")


def test_the_hub_copies_the_limits_into_the_spec() -> None:
    row = TaskRow(task_id="t-00000000000000000001", command="true", timeout_s=60,
                  idle_timeout_s=5, memory_max_bytes=64 << 20, pids_max=50)
    spec = node_pb2.TaskSpec.FromString(spec_of(row))
    assert (spec.timeout_s, spec.idle_timeout_s, spec.memory_max_bytes, spec.pids_max) == (
        60, 5, 64 << 20, 50)
