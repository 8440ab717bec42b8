"""The adaptive encoder: small batches inline (no pool process), large ones in the pool,
the same verified envelopes either way, in order."""

import asyncio

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.envelope import EnvelopeVerifier
from cortex.v1 import node_pb2
from cortexd.serializers import AdaptiveEncoder, EnvelopeRequest


def test_inline_below_the_threshold_pool_from_it_same_envelopes() -> None:
    key = Ed25519PrivateKey.generate()
    spec = node_pb2.TaskSpec(command="true").SerializeToString()

    def batch(n: int) -> list[EnvelopeRequest]:
        return [EnvelopeRequest(f"t-{i:020x}", 1, "n1", 7, "default", spec) for i in range(n)]

    async def go() -> None:
        enc = AdaptiveEncoder(key, 60_000, workers=2, min_batch=4)
        try:
            small = await enc.encode(batch(3))
            assert enc._pool is None and enc.inline_batches == 1
            large = await enc.encode(batch(9))
            assert enc.pool_batches == 1
        finally:
            enc.close()
        verifier = EnvelopeVerifier(key.public_key(), "n1")
        for frames, n in ((small, 3), (large, 9)):
            ids = [verifier.verify(node_pb2.HubFrame.FromString(f).task, 7).task_id
                   for f in frames]
            assert ids == [f"t-{i:020x}" for i in range(n)]
    asyncio.run(go())
