"""Inline and process-pool envelope encoders behind one interface.

``InlineEncoder`` signs on the control process's loop (Ed25519 signing is about
35 µs here). ``PoolEncoder`` signs batches in a ``spawn`` process pool; a pool
only pays with batches of 64 or more (one message per future is 3–4x slower
than inline — see issue 5's measurements), so it takes whole batches. The
default is the adaptive encoder (``adaptive.py``), which picks one of them per batch.
"""

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.envelope import EnvelopeSigner
from cortex.v1 import node_pb2


@dataclass(frozen=True, slots=True)
class EnvelopeRequest:
    task_id: str
    attempt: int
    node_id: str
    session_epoch: int
    tenant: str
    spec_bytes: bytes  # a serialized TaskSpec


class Encoder(Protocol):
    async def encode(self, batch: list[EnvelopeRequest]) -> list[bytes]: ...

    def close(self) -> None: ...


#: Every field of a TaskEnvelope but its spec at its largest (a node id is at most 63
#: characters, cortex/ids.py): what signing adds to a spec, whatever node, attempt,
#: epoch or time it goes out with.
_WIDEST = node_pb2.TaskEnvelope(task_id="t-" + "f" * 20, attempt=2**32 - 1, node_id="n" * 63,
                                session_epoch=2**64 - 1, issued_at_ms=2**63 - 1,
                                expires_at_ms=2**63 - 1, nonce=b"\xff" * 16)


def frame_bound(spec_bytes: bytes, tenant: str) -> int:
    """The most bytes ``HubFrame(task=<signed envelope of this spec>)`` can take.

    Computed, not guessed: the widest envelope fields, the spec, a 64-byte Ed25519
    signature and a 16-character key id, each with its protobuf tag and length.
    """
    env = node_pb2.TaskEnvelope()
    env.CopyFrom(_WIDEST)
    env.tenant = tenant
    body = env.ByteSize() + _field(9, len(spec_bytes))
    signed = _field(1, body) + _field(2, 64) + _field(3, 16)
    return _field(1, signed) + 8  # the HubFrame's oneof tag and length, with room


def _field(number: int, length: int) -> int:
    """Bytes of a length-delimited field ``number`` holding ``length`` bytes."""
    def varint(n: int) -> int:
        return max(1, (n.bit_length() + 6) // 7)
    return varint(number << 3) + varint(length) + length


def _encode(signer: EnvelopeSigner, req: EnvelopeRequest) -> bytes:
    spec = node_pb2.TaskSpec.FromString(req.spec_bytes)
    signed = signer.sign(task_id=req.task_id, attempt=req.attempt, node_id=req.node_id,
                         session_epoch=req.session_epoch, spec=spec, tenant=req.tenant)
    return node_pb2.HubFrame(task=signed).SerializeToString()


class InlineEncoder:
    def __init__(self, key: Ed25519PrivateKey, ttl_ms: int) -> None:
        self._signer = EnvelopeSigner(key, ttl_ms)

    async def encode(self, batch: list[EnvelopeRequest]) -> list[bytes]:
        return [_encode(self._signer, req) for req in batch]

    def close(self) -> None:
        pass


_worker_signer: EnvelopeSigner | None = None


def _init_worker(pem: bytes, ttl_ms: int) -> None:
    global _worker_signer
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    _worker_signer = EnvelopeSigner(key, ttl_ms)


def _encode_batch(batch: list[EnvelopeRequest]) -> list[bytes]:
    assert _worker_signer is not None
    return [_encode(_worker_signer, req) for req in batch]


class PoolEncoder:
    def __init__(self, key: Ed25519PrivateKey, ttl_ms: int, workers: int) -> None:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        self._pool = ProcessPoolExecutor(max_workers=workers,
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker, initargs=(pem, ttl_ms))

    async def encode(self, batch: list[EnvelopeRequest]) -> list[bytes]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _encode_batch, batch)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
