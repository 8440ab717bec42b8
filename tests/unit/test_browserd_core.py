"""browserd's pure parts: URL policy, snapshot diffs, frames, errors, the /dev/shm handoff."""

import asyncio
import hashlib
import mmap
import os
from pathlib import Path

import pytest

from browserd import errors, shm, snapshot, urls, wire
from nodeagent.browsertool import data_frames


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "https://example.com/", "about:blank"])
def test_web_urls_allowed(url: str) -> None:
    urls.check_url(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "chrome://settings", "javascript:1",
                                 "data:text/html,x", "view-source:http://a/", "ftp://a/",
                                 "http:///nohost", "blob:http://a/x"])
def test_local_schemes_refused(url: str) -> None:
    with pytest.raises(errors.UrlRefused):
        urls.check_url(url)


def test_scheme_allowed_by_config_and_origin_list() -> None:
    urls.check_url("file:///tmp/x.html", allow_schemes=frozenset({"file"}))
    allowed = ("http://127.0.0.1:8080", "*.example.com")
    urls.check_url("http://127.0.0.1:8080/a", allowed_origins=allowed)
    urls.check_url("https://docs.example.com/a", allowed_origins=allowed)
    urls.check_url("https://example.com/", allowed_origins=allowed)
    for bad in ("http://127.0.0.1:8081/", "https://example.com.evil.org/", "https://xexample.com"):
        with pytest.raises(errors.UrlRefused, match="allow-list"):
            urls.check_url(bad, allowed_origins=allowed)


def test_snapshot_diff_only_changed_lines() -> None:
    before = "- heading \"A\" [ref=e1]\n- paragraph [ref=e2]: count 0\n- button \"Add\" [ref=e3]"
    after = before.replace("count 0", "count 1")
    d = snapshot.diff(before, after)
    assert d.splitlines()[1:] == ["-- paragraph [ref=e2]: count 0",
                                  "+- paragraph [ref=e2]: count 1"]
    assert snapshot.diff(before, before) == ""
    assert snapshot.refs(after) == ["e1", "e2", "e3"]


def test_frames_round_trip_and_cap() -> None:
    frame = wire.encode({"id": 1, "op": "ping", "args": {"b": b"\x00" * 10}})
    assert wire.decode(frame[4:]) == {"id": 1, "op": "ping", "args": {"b": b"\x00" * 10}}
    with pytest.raises(errors.FrameTooLarge):
        wire.encode({"x": b"1" * 100}, max_frame_bytes=50)
    with pytest.raises(errors.BadRequest):
        wire.decode(b"\x93\x01\x02\x03")  # a list, not a map

    async def read(data: bytes) -> object:
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        return await wire.read_frame(r, max_frame_bytes=64)
    assert asyncio.run(read(b"")) is None
    with pytest.raises(errors.FrameTooLarge):
        asyncio.run(read(wire.HEADER.pack(1000) + b"x"))


def test_errors_rebuilt_from_the_registry() -> None:
    e = errors.from_wire(errors.SessionCrashed("gone", {"session": "s"}).to_wire())
    assert isinstance(e, errors.SessionCrashed) and e.details == {"session": "s"}
    odd = errors.from_wire({"type": "martian", "message": "?"})
    assert type(odd) is errors.BrowserdError and odd.details["type"] == "martian"
    assert isinstance(errors.from_wire("junk"), errors.BrowserdError)


def test_handoff_take_verifies_and_unlinks(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    ref = shm.put(data, os.getpid(), tmp_path)
    assert ref["sha256"] == hashlib.sha256(data).hexdigest()
    assert shm.take(ref, tmp_path) == data
    assert not Path(ref["shm"]).exists()
    bad = shm.put(data, os.getpid(), tmp_path)
    Path(bad["shm"]).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit differs
    with pytest.raises(errors.HandoffError, match="sha256"):
        shm.take(bad, tmp_path)
    with pytest.raises(errors.HandoffError, match="outside"):
        shm.take({"shm": "/etc/passwd", "size": 1, "sha256": "x"}, tmp_path)


def test_handoff_view_is_the_mapping_and_the_digest_travels_on(tmp_path: Path) -> None:
    data = os.urandom(700_000)
    ref = shm.put(data, os.getpid(), tmp_path)
    view = shm.take_view(ref, tmp_path)
    assert not Path(ref["shm"]).exists()  # unlinked before it is read
    assert isinstance(view.obj, mmap.mmap) and view.readonly and view == data
    frames = data_frames(7, {"mime": "image/png"}, view, ref["sha256"])
    view.release()
    assert b"".join(f.call_reply.data for f in frames) == data
    assert [f.call_reply.data_offset for f in frames] == [0, 262144, 524288]
    assert frames[0].call_reply.data_sha256 == hashlib.sha256(data).hexdigest()
    assert [f.call_reply.eof for f in frames] == [False, False, True]
    with pytest.raises(errors.HandoffError, match="holds"):
        shm.take_view({**shm.put(data, os.getpid(), tmp_path), "size": 5}, tmp_path)
    assert not list(tmp_path.iterdir())  # a refused file is unlinked too


def test_sweep_removes_files_of_dead_readers(tmp_path: Path) -> None:
    mine = shm.put(b"live", os.getpid(), tmp_path)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a reader that is gone
    dead = shm.put(b"orphan", pid, tmp_path)
    assert shm.sweep(tmp_path) == 1
    assert Path(mine["shm"]).exists() and not Path(dead["shm"]).exists()
    os.utime(mine["shm"], (0, 0))
    assert shm.sweep(tmp_path, max_age_s=60) == 1  # never taken: too old
