"""Signed envelopes: what the signer binds and what the verifier refuses."""

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.envelope import EnvelopeSigner, EnvelopeVerifier, load_or_create_private_key
from cortex.errors import ConfigError, EnvelopeError
from cortex.v1 import node_pb2

KEY = Ed25519PrivateKey.generate()
SPEC = node_pb2.TaskSpec(command="touch /tmp/never")


def signed(node: str = "n1", epoch: int = 3, now: int = 1_000_000) -> node_pb2.SignedEnvelope:
    return EnvelopeSigner(KEY, ttl_ms=60_000).sign(
        task_id="t-00000000000000000001", attempt=1, node_id=node, session_epoch=epoch,
        spec=SPEC, now_ms=now)


def verifier() -> EnvelopeVerifier:
    return EnvelopeVerifier(KEY.public_key(), "n1")


def test_good_envelope_once_then_replay_refused() -> None:
    v = verifier()
    env = signed()
    assert v.verify(env, 3, now_ms=1_000_001).spec.command == "touch /tmp/never"
    with pytest.raises(EnvelopeError) as e:
        v.verify(env, 3, now_ms=1_000_002)
    assert e.value.code == "replay"


@pytest.mark.parametrize(("mutate", "epoch", "now", "code"), [
    (lambda s: s.body.__class__(s.body[:-1] + bytes([s.body[-1] ^ 1])), 3, 1_000_001,
     "bad_signature"),
    (None, 4, 1_000_001, "stale_epoch"),
    (None, 3, 1_060_001, "expired"),
])
def test_refusals(mutate, epoch: int, now: int, code: str) -> None:  # type: ignore[no-untyped-def]
    env = signed()
    if mutate is not None:
        env = node_pb2.SignedEnvelope(body=mutate(env), signature=env.signature)
    with pytest.raises(EnvelopeError) as e:
        verifier().verify(env, epoch, now_ms=now)
    assert e.value.code == code


def test_other_node_and_other_key_refused() -> None:
    with pytest.raises(EnvelopeError) as e:
        verifier().verify(signed(node="n2"), 3, now_ms=1_000_001)
    assert e.value.code == "wrong_node"
    forged = EnvelopeSigner(Ed25519PrivateKey.generate()).sign(
        task_id="t-00000000000000000001", attempt=1, node_id="n1", session_epoch=3, spec=SPEC,
        now_ms=1_000_000)
    with pytest.raises(EnvelopeError) as e:
        verifier().verify(forged, 3, now_ms=1_000_001)
    assert e.value.code == "bad_signature"


def test_nonce_cache_is_bounded_and_fails_closed() -> None:
    v = EnvelopeVerifier(KEY.public_key(), "n1", max_nonces=2)
    v.verify(signed(), 3, now_ms=1_000_001)
    v.verify(signed(), 3, now_ms=1_000_001)
    with pytest.raises(EnvelopeError, match="nonce cache is full"):
        v.verify(signed(), 3, now_ms=1_000_001)
    # once the first two expire, their room comes back
    v.verify(signed(now=1_070_000), 3, now_ms=1_070_001)


def test_key_created_0600_and_loose_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.key"
    key = load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_private_key(path).public_key() == key.public_key()
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_or_create_private_key(path)
    path.write_text("garbage")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="not a PEM"):
        load_or_create_private_key(path)
