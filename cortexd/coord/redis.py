"""Coordination through Redis: the node directory, leases, and messages between hosts.

- **Directory** (``P:dir``): where each node is attached. A hub publishes on attach
  and withdraws on detach; both are queued and sent in pipelined batches by one
  writer task (``dirwriter.py``: the epoch compare-and-set, and the stale session's
  host told to close it).
- **Leases**: ``P:lease:host:H`` and one per live shard, set with a TTL every
  TTL/3 by :meth:`renew`, deleted on a clean stop (drain releases them). A host
  whose lease is gone is dead to the others: its nodes are not scheduled onto,
  and after two janitor passes its attached nodes are taken over (their tasks
  get the grace period, then LOST, unless the node re-attaches).
- **Inbox** (``P:inbox:H``): a Redis Stream per host, bounded (``MAXLEN ~``),
  read through a consumer group and acknowledged after the message was handled
  (at-least-once; every handler is idempotent).

Every call survives Redis being down or flushed: it logs once per outage and
answers "nothing known"; the renewal notices a flush (its own lease missing) and
the hub republishes its nodes. Redis is never asked to decide anything safety
critical.
"""

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from cortex import logs
from cortex.errors import ConfigError
from cortexd.coord.base import DirEntry, Handler, Message, ShardReport
from cortexd.coord.dirwriter import DirectoryWriter
from cortexd.coord.keys import DEFAULT_PREFIX, INBOX_GROUP, Keys

INBOX_MAXLEN = 10_000
READ_COUNT = 256
READ_BLOCK_MS = 1000

def split_url(url: str) -> tuple[str, str]:
    """``redis://host:port/db?prefix=NAME`` -> (URL for the client, key prefix)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"coordination {url!r}: expected 'local' or redis://HOST:PORT/DB")
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
    if not prefix or not all(c.isalnum() or c in "-_." for c in prefix):
        raise ConfigError(f"coordination prefix {prefix!r}: use letters, digits, - _ .")
    rest = urlencode({k: v[0] for k, v in query.items()})
    return urlunsplit(parts._replace(query=rest)), prefix


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


async def check(url: str) -> str:
    """Connect and PING: one line if usable, else raise ConfigError naming what is wrong."""
    client_url, prefix = split_url(url)
    client = aioredis.Redis.from_url(client_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
        info = await client.info("server")
    except (RedisError, OSError) as e:
        raise ConfigError(f"coordination {redact(url)}: cannot reach Redis: {e}") from e
    finally:
        await client.aclose()
    return f"redis {info.get('redis_version', '?')} at {redact(client_url)}, prefix {prefix!r}"


class RedisCoordinator:
    clustered = True

    def __init__(self, url: str, host_id: str, lease_ttl_ms: int,
                 control_address: str = "") -> None:
        client_url, prefix = split_url(url)
        self.url = url
        self.host_id = host_id
        self.keys = Keys(prefix)
        self.lease_ttl_ms = lease_ttl_ms
        self.control_address = control_address
        # Any: redis-py's replies are typed bytes | str (decode_responses); ours are bytes.
        self.redis: Any = aioredis.Redis.from_url(client_url, socket_connect_timeout=2,
                                                  socket_timeout=5)
        self.dir_writer = DirectoryWriter(self.redis, self.keys, host_id, self.send)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._dir_cache: tuple[float, dict[str, DirEntry]] = (0.0, {})
        self._hosts_cache: tuple[float, set[str]] = (0.0, set())
        self._down_since: float | None = None
        self._last_ok = 0.0
        self._renewed_once = False
        self._shards: set[int] = set()
        self.started_ms = int(time.time() * 1000)
        self.messages_in = 0
        self.messages_out = 0
        self.log = logs.get()

    # -- life ---------------------------------------------------------------------

    async def open(self, on_message: Handler) -> None:
        try:
            await self.redis.ping()
            self._ok()
        except (RedisError, OSError) as e:
            # Redis is a hint: a hub starts without it and catches up when it returns.
            self._failed("open", e)
        else:
            await self.renew(set(), [])  # live to the other hosts before this one is ready
        self._tasks = [asyncio.create_task(self._write_updates()),
                       asyncio.create_task(self._consume(on_message))]

    async def close(self) -> None:
        """Release this host's leases (a clean stop is a drain), then disconnect.

        The inbox reader is asked to stop and given one blocking read to notice:
        cancelling redis-py in the middle of a blocking XREADGROUP can leave the task
        cancelling forever, and a stop must not hang on it."""
        self._stopping.set()
        self.dir_writer.ready.set()
        _, pending = await asyncio.wait(self._tasks, timeout=READ_BLOCK_MS / 1000 + 1.0) \
            if self._tasks else (set(), set())
        for t in pending:
            t.cancel()  # not awaited: see above
        with contextlib.suppress(RedisError, OSError):
            await self.dir_writer.flush()
            keys = [self.keys.host_lease(self.host_id), self.keys.shards(self.host_id)]
            keys += [self.keys.shard_lease(self.host_id, s) for s in self._shards]
            await self.redis.delete(*keys)
        await self.redis.aclose()

    def _failed(self, what: str, e: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.log.warning("coordination_unavailable", op=what, error=str(e) or type(e).__name__)

    @property
    def healthy(self) -> bool:
        """Redis answered within the last lease TTL: its answers can be acted on."""
        return (self._down_since is None
                and time.monotonic() - self._last_ok < self.lease_ttl_ms / 1000)

    def _ok(self) -> None:
        self._last_ok = time.monotonic()
        if self._down_since is not None:
            self.log.info("coordination_recovered",
                          down_s=round(time.monotonic() - self._down_since, 3))
            self._down_since = None

    # -- directory ----------------------------------------------------------------

    def node_up(self, entry: DirEntry, node_id: str) -> None:
        self.dir_writer.queue(("up", node_id, entry.epoch, msgpack.packb(entry.pack())))

    def node_down(self, node_id: str, epoch: int) -> None:
        self.dir_writer.queue(("down", node_id, epoch, b""))

    async def _write_updates(self) -> None:
        delay = 0.05
        while not self._stopping.is_set():
            await self.dir_writer.ready.wait()
            self.dir_writer.ready.clear()
            if self._stopping.is_set():
                return  # close() flushes what is left
            try:
                await self.dir_writer.flush()
                self._ok()
                delay = 0.05
            except (RedisError, OSError) as e:
                self._failed("directory", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self.dir_writer.ready.set()

    def known_directory(self) -> dict[str, DirEntry]:
        return self._dir_cache[1]

    async def directory(self, max_age_s: float = 1.0) -> dict[str, DirEntry]:
        at, cached = self._dir_cache
        if time.monotonic() - at < max_age_s:
            return cached
        try:
            raw = await self.redis.hgetall(self.keys.directory)
            self._ok()
        except (RedisError, OSError) as e:
            self._failed("directory", e)
            return cached
        out = {k.decode(): DirEntry.unpack(msgpack.unpackb(v)) for k, v in raw.items()}
        self._dir_cache = (time.monotonic(), out)
        return out

    async def lookup(self, node_id: str) -> DirEntry | None:
        try:
            raw = await self.redis.hget(self.keys.directory, node_id)
            self._ok()
        except (RedisError, OSError) as e:
            self._failed("lookup", e)
            return self._dir_cache[1].get(node_id)
        return None if raw is None else DirEntry.unpack(msgpack.unpackb(raw))

    # -- hosts and leases ---------------------------------------------------------

    async def renew(self, alive_shards: set[int], reports: list[ShardReport]) -> bool:
        """Renew this host's lease and its live shards' leases; publish shard stats.

        Returns True when this host's lease had vanished although it was renewed in
        time (Redis was flushed or restarted): the caller republishes its nodes.
        """
        ttl = self.lease_ttl_ms
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(k.host_lease(self.host_id), self.started_ms, px=ttl, get=True)
        pipe.hset(k.hosts, self.host_id,
                  msgpack.packb([self.control_address, self.started_ms]))
        for shard in alive_shards:
            pipe.set(k.shard_lease(self.host_id, shard), self.started_ms, px=ttl)
        for shard in self._shards - alive_shards:
            pipe.delete(k.shard_lease(self.host_id, shard))  # released: the shard is gone
        if reports:
            pipe.hset(k.shards(self.host_id), mapping={
                str(r.shard): msgpack.packb([r.pid, r.alive, r.restarts, r.nodes, r.frames_in,
                                             r.frames_out]) for r in reports})
            pipe.pexpire(k.shards(self.host_id), ttl)
        try:
            results = await pipe.execute()
            self._ok()
        except (RedisError, OSError) as e:
            self._failed("renew", e)
            return False
        self._shards = set(alive_shards)
        vanished = self._renewed_once and results[0] is None
        self._renewed_once = True
        return vanished

    async def live_hosts(self) -> set[str]:
        at, cached = self._hosts_cache
        if time.monotonic() - at < 0.5:
            return cached
        try:
            hosts = [h.decode() for h in await self.redis.hkeys(self.keys.hosts)]
            leases = await self.redis.mget([self.keys.host_lease(h) for h in hosts]) if hosts \
                else []
            self._ok()
        except (RedisError, OSError) as e:
            self._failed("hosts", e)
            return cached | {self.host_id}
        live = {h for h, lease in zip(hosts, leases, strict=True) if lease is not None}
        live.add(self.host_id)
        self._hosts_cache = (time.monotonic(), live)
        return live

    async def shard_reports(self) -> list[ShardReport]:
        out: list[ShardReport] = []
        for host in sorted(await self.live_hosts()):
            try:
                raw = await self.redis.hgetall(self.keys.shards(host))
            except (RedisError, OSError) as e:
                self._failed("shards", e)
                return out
            for shard, value in raw.items():
                pid, alive, restarts, nodes, fin, fout = msgpack.unpackb(value)
                out.append(ShardReport(host, int(shard), pid, alive, restarts, nodes, fin, fout))
        return sorted(out, key=lambda r: (r.host, r.shard))

    # -- messages between hosts ---------------------------------------------------

    async def send(self, host: str, msg: Message) -> bool:
        try:
            await self.redis.xadd(self.keys.inbox(host), {b"m": msgpack.packb(msg)},
                                  maxlen=INBOX_MAXLEN, approximate=True)
            self._ok()
        except (RedisError, OSError) as e:
            self._failed("send", e)
            return False
        self.messages_out += 1
        return True

    async def send_many(self, msgs: list[tuple[str, Message]]) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        for host, msg in msgs:
            pipe.xadd(self.keys.inbox(host), {b"m": msgpack.packb(msg)}, maxlen=INBOX_MAXLEN,
                      approximate=True)
        try:
            await pipe.execute()
            self._ok()
        except (RedisError, OSError) as e:
            self._failed("send", e)
            return False
        self.messages_out += len(msgs)
        return True

    async def broadcast(self, msg: Message) -> int:
        sent = 0
        for host in await self.live_hosts():
            if host != self.host_id and await self.send(host, msg):
                sent += 1
        return sent

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.inbox(self.host_id), INBOX_GROUP, id="0",
                                           mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _consume(self, on_message: Handler) -> None:
        """Read this host's inbox: first what was delivered but not acknowledged before
        (a restart), then new messages; acknowledge each after its handler returned."""
        inbox = self.keys.inbox(self.host_id)
        cursor = "0"
        delay = 0.1
        while not self._stopping.is_set():
            try:
                await self._ensure_group()
                got = await self.redis.xreadgroup(INBOX_GROUP, self.host_id, {inbox: cursor},
                                                  count=READ_COUNT, block=READ_BLOCK_MS)
                self._ok()
                delay = 0.1
            except (RedisError, OSError) as e:
                self._failed("inbox", e)  # NOGROUP after a flush lands here too
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                cursor = "0"
                continue
            entries = got[0][1] if got else []
            if cursor == "0" and not entries:
                cursor = ">"  # the backlog is done
                continue
            done = []
            for entry_id, fields in entries:
                if not fields or b"m" not in fields:  # trimmed while pending
                    done.append(entry_id)
                    continue
                try:
                    await on_message(msgpack.unpackb(fields[b"m"]))
                except Exception:
                    self.log.exception("coordination_message_failed")
                self.messages_in += 1
                done.append(entry_id)
            if done:
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.xack(inbox, INBOX_GROUP, *done)
