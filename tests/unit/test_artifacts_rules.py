"""The artifact rules, pure: digests, chunk checks, task paths, the gc plan."""

import pytest

from cortexd.artifacts.rules import (
    MAX_CHUNK_BYTES,
    ArtifactError,
    ArtifactRow,
    Retention,
    check_chunk,
    check_digest,
    check_name,
    check_task_files,
    check_task_path,
    plan_gc,
)

SHA = "a" * 64


def code_of(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ArtifactError) as e:
        fn(*args)
    return e.value.code


def test_digest_grammar_and_size_limit() -> None:
    check_digest(SHA, 10, 100)
    assert code_of(check_digest, "A" * 64, 1, 100) == "INVALID_ARGUMENT"
    assert code_of(check_digest, "a" * 63, 1, 100) == "INVALID_ARGUMENT"
    assert code_of(check_digest, "../" + "a" * 61, 1, 100) == "INVALID_ARGUMENT"
    assert code_of(check_digest, SHA, 101, 100) == "RESOURCE_EXHAUSTED"


def test_a_chunk_lands_only_at_the_committed_offset_and_within_the_size() -> None:
    check_chunk(0, 10, 0, 4, False)
    check_chunk(4, 10, 4, 6, True)
    check_chunk(10, 10, 10, 0, True)  # finishing with an empty last message
    check_chunk(0, 0, 0, 0, True)     # the empty blob
    assert code_of(check_chunk, 4, 10, 8, 2, False) == "OUT_OF_RANGE"   # unknown offset
    assert code_of(check_chunk, 4, 10, 0, 4, False) == "OUT_OF_RANGE"   # resent, behind
    assert code_of(check_chunk, 4, 10, 4, 7, False) == "INVALID_ARGUMENT"  # past the size
    assert code_of(check_chunk, 0, 10, 0, 4, True) == "INVALID_ARGUMENT"   # early finish
    big = MAX_CHUNK_BYTES + 1
    assert code_of(check_chunk, 0, 1 << 30, 0, big, False) == "INVALID_ARGUMENT"


def test_names() -> None:
    check_name("build/out-1.tar.gz")
    for bad in ("", "-x", "a b", "x" * 201, "\x00"):
        assert code_of(check_name, bad) == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("path", "normal"), [
    ("a.txt", "a.txt"), ("./dir//b", "dir/b"), ("d/./e/", "d/e")])
def test_task_paths_are_normalised(path: str, normal: str) -> None:
    assert check_task_path(path) == normal


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../b", "a/..", ".", "a\x00"])
def test_task_paths_cannot_leave_the_task_directory(path: str) -> None:
    assert code_of(check_task_path, path) == "INVALID_ARGUMENT"


def test_task_files_refuse_a_path_named_twice() -> None:
    ins, outs = check_task_files([(SHA, 3, "in.txt")], ["out/x"], 100)
    assert ins == [(SHA, 3, "in.txt")] and outs == ["out/x"]
    assert code_of(check_task_files, [(SHA, 3, "a")], ["./a"], 100) == "INVALID_ARGUMENT"
    assert code_of(check_task_files, [(SHA, 300, "a")], [], 100) == "RESOURCE_EXHAUSTED"


POLICY = Retention(task_ref_s=100, grace_s=10, partial_ttl_s=50)


def row(owner: str, sha: str, used_ms: int, *refs: tuple[str, int, int]) -> ArtifactRow:
    return ArtifactRow(owner, sha, 5, 0, used_ms, tuple(refs))


def test_gc_keeps_named_and_recent_and_drops_the_rest() -> None:
    b, c, d, e = "b" * 64, "c" * 64, "d" * 64, "e" * 64
    rows = [
        row("t1", SHA, 0, ("name:x", 0, 0)),              # named forever: kept
        row("t1", b, 0, ("task:t-1:out:o", 0, 50_000)),   # its only ref expired: goes
        row("t1", c, 95_000),                             # unreferenced, used recently
        row("t2", d, 0),                                  # unreferenced past grace: goes
        row("t3", d, 99_000),                             # ... but t3 still uses d
    ]
    plan = plan_gc(rows, [SHA, b, c, d, e], now_ms=100_000, policy=POLICY)
    assert plan.refs == [("t1", "task:t-1:out:o")]
    assert plan.artifacts == [("t1", b), ("t2", d)]
    assert plan.blobs == [b, e]  # d stays: another owner's row names it


def test_gc_of_nothing_is_nothing() -> None:
    plan = plan_gc([], [], 0, POLICY)
    assert (plan.refs, plan.artifacts, plan.blobs) == ([], [], [])
