"""Encoding and signing of task envelopes, once per task, into HubFrame bytes.

The bytes produced here travel through a ring and are written to the node's
stream as they are (the shard's stream uses an identity serializer): a task
envelope is never re-encoded after it was signed.
"""

from cortexd.serializers.envelope import EnvelopeRequest, InlineEncoder, PoolEncoder, make_encoder

__all__ = ["EnvelopeRequest", "InlineEncoder", "PoolEncoder", "make_encoder"]
