"""Envelope encode + sign: ``InlineEncoder`` vs ``PoolEncoder``, and the node's verify.

Each round encodes ``MESSAGES_PER_ROUND`` envelopes in calls of ``batch``
envelopes, inside one coroutine (so the loop's own start-up cost is spread over
many messages, not charged to batch 1). Besides wall time, each benchmark
records the CPU the *parent* spent per message: the whole process
(``time.process_time``, which includes the pool's feeder and result threads)
and the event-loop thread alone (``time.thread_time``). That is the cost the
control process's loop pays, which is what a pool is meant to take away.

``pool-concurrent`` keeps every call of a round in flight at once, so both pool
workers are busy; ``pool`` awaits one call before the next, as a caller
encoding one scheduling batch at a time would.
"""

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.envelope import EnvelopeSigner, EnvelopeVerifier
from cortex.v1 import node_pb2
from cortexd.serializers.envelope import EnvelopeRequest, InlineEncoder, PoolEncoder

MESSAGES_PER_ROUND = 512
BATCHES = (1, 16, 64, 256)
POOL_WORKERS = 2  # Settings.signer_pool_workers default
TTL_MS = 3_600_000  # envelopes must not expire while the verify benchmark reuses them
NODE_ID = "bench-node-0001"
EPOCH = 7


def make_requests(count: int) -> list[EnvelopeRequest]:
    """Requests shaped like real ones: a shell command, a little env, a cwd."""
    spec = node_pb2.TaskSpec(command="cd /srv/app && make test 2>&1 | tail -n 50",
                             env={"CI": "1", "LANG": "C.UTF-8", "TERM": "xterm-256color"},
                             cwd="/srv/app", cols=120, rows=40, timeout_s=600).SerializeToString()
    return [EnvelopeRequest(task_id=f"t-{i:012d}", attempt=1, node_id=NODE_ID,
                            session_epoch=EPOCH, tenant="default", spec_bytes=spec)
            for i in range(count)]


class CpuMeter:
    """Accumulates wall, process and thread CPU time over the benchmark's calls."""

    def __init__(self) -> None:
        self.process_s = self.thread_s = 0.0
        self.messages = 0

    def measure(self, fn: Callable[[], None], messages: int) -> None:
        p0, t0 = time.process_time(), time.thread_time()
        fn()
        self.thread_s += time.thread_time() - t0
        self.process_s += time.process_time() - p0
        self.messages += messages

    def figures(self) -> dict[str, float]:
        n = max(1, self.messages)
        return {"parent_cpu_us_per_msg": self.process_s / n * 1e6,
                "loop_thread_cpu_us_per_msg": self.thread_s / n * 1e6}


@pytest.fixture(scope="module")
def pool(signing_key: Ed25519PrivateKey) -> Iterator[PoolEncoder]:
    encoder = PoolEncoder(signing_key, TTL_MS, POOL_WORKERS)
    yield encoder
    encoder.close()


def _warm_pool(loop: asyncio.AbstractEventLoop, encoder: PoolEncoder) -> None:
    # spawn-context pools start workers lazily, one per submit that finds none idle:
    # keep several calls in flight so every worker has started and imported cortex.
    async def warm() -> None:
        reqs = make_requests(4)
        await asyncio.gather(*(encoder.encode(reqs) for _ in range(4 * POOL_WORKERS)))

    loop.run_until_complete(warm())


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("mode", ["inline", "pool", "pool-concurrent"])
def test_encode_sign(benchmark, loop: asyncio.AbstractEventLoop, signing_key: Ed25519PrivateKey,
                     pool: PoolEncoder, mode: str, batch: int) -> None:
    encoder = InlineEncoder(signing_key, TTL_MS) if mode == "inline" else pool
    if mode != "inline":
        _warm_pool(loop, pool)
    calls = MESSAGES_PER_ROUND // batch
    batches = [make_requests(batch) for _ in range(calls)]
    concurrent = mode == "pool-concurrent"

    async def one_round() -> None:
        if concurrent:
            results = await asyncio.gather(*(encoder.encode(b) for b in batches))
        else:
            results = [await encoder.encode(b) for b in batches]
        assert sum(map(len, results)) == MESSAGES_PER_ROUND

    meter = CpuMeter()
    benchmark.group = f"encode+sign batch {batch}"
    benchmark(meter.measure, lambda: loop.run_until_complete(one_round()), MESSAGES_PER_ROUND)
    benchmark.extra_info.update(kind="encode_sign", mode=mode, batch=batch,
                                messages_per_round=MESSAGES_PER_ROUND, **meter.figures())


def test_verify(benchmark, signing_key: Ed25519PrivateKey) -> None:
    """The node's cost per envelope: signature check, body parse, epoch/expiry/nonce checks."""
    signer = EnvelopeSigner(signing_key, TTL_MS)
    spec = node_pb2.TaskSpec.FromString(make_requests(1)[0].spec_bytes)
    envelopes = [signer.sign(task_id=f"t-{i}", attempt=1, node_id=NODE_ID, session_epoch=EPOCH,
                             spec=spec) for i in range(MESSAGES_PER_ROUND)]
    public = signing_key.public_key()
    meter = CpuMeter()

    def fresh_verifier() -> tuple[tuple[EnvelopeVerifier], dict[str, object]]:
        # A new verifier has an empty nonce cache, so the same envelopes verify again.
        return (EnvelopeVerifier(public, NODE_ID),), {}

    def verify_all(verifier: EnvelopeVerifier) -> None:
        def run() -> None:
            for env in envelopes:
                verifier.verify(env, EPOCH)
        meter.measure(run, len(envelopes))

    benchmark.group = "verify"
    benchmark.pedantic(verify_all, setup=fresh_verifier, rounds=15, warmup_rounds=1)
    benchmark.extra_info.update(kind="verify", mode="verify", batch=1,
                                messages_per_round=MESSAGES_PER_ROUND, **meter.figures())
