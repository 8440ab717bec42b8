"""Encoding and signing of task envelopes, once per task, into HubFrame bytes.

The bytes produced here travel through a ring and are written to the node's
stream as they are (the shard's stream uses an identity serializer): a task
envelope is never re-encoded after it was signed.
"""

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortexd.serializers.adaptive import AdaptiveEncoder
from cortexd.serializers.envelope import Encoder, EnvelopeRequest, InlineEncoder, PoolEncoder

__all__ = ["AdaptiveEncoder", "EnvelopeRequest", "InlineEncoder", "PoolEncoder", "make_encoder"]


def make_encoder(kind: str, key: Ed25519PrivateKey, ttl_ms: int, workers: int) -> Encoder:
    """``signer`` of the settings: adaptive (the default), inline or pool."""
    if kind == "pool":
        return PoolEncoder(key, ttl_ms, workers)
    if kind == "adaptive":
        return AdaptiveEncoder(key, ttl_ms, workers)
    return InlineEncoder(key, ttl_ms)
