"""Signed task envelopes (DESIGN.md §3, "Every task request is signed").

The hub signs ``DOMAIN + body`` with Ed25519, where ``body`` is a serialized
``TaskEnvelope``. A node runs nothing before :class:`EnvelopeVerifier` has
checked the signature, its own node id, its current session epoch, the expiry
and that the nonce was never seen (replays are refused). The nonce cache is
bounded: entries leave it when their envelope expires, and when it is full the
verifier refuses (fails closed) rather than forgetting a live nonce.
"""

import os
import secrets
import stat
import time
from collections import OrderedDict
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cortex.errors import ConfigError, EnvelopeError
from cortex.v1 import node_pb2

DOMAIN = b"cortex.v1.TaskEnvelope\x00"
WELCOME_DOMAIN = b"cortex.v1.Welcome\x00"
CHALLENGE_BYTES = 32
NONCE_BYTES = 16
MAX_CLOCK_SKEW_MS = 60_000


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()[:16]


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the hub's signing key, creating it (mode 0600) on first start."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"signing key {path} is readable by others (mode {mode & 0o777:o}); "
                              "chmod 600 it")
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"cannot read signing key {path}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"signing key {path} is not a PEM Ed25519 private key: {e}") from e
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
    return loaded


def public_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read hub public key {path}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"hub public key {path} is not a PEM public key: {e}") from e
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigError(f"hub public key {path} is not an Ed25519 key")
    return loaded


def welcome_proof(private_key: Ed25519PrivateKey, node_id: str, challenge: bytes) -> bytes:
    """The hub's answer to a node's Hello.hub_challenge: proof that it holds the key the
    node verifies envelopes with (issue 13: a wrong --hub-key used to attach as healthy
    and then refuse every task as bad_signature)."""
    return private_key.sign(WELCOME_DOMAIN + node_id.encode() + b"\x00" + challenge)


class EnvelopeSigner:
    """Builds and signs envelopes; cheap enough (~35 µs) to run inline."""

    def __init__(self, private_key: Ed25519PrivateKey, ttl_ms: int = 60_000) -> None:
        self._key = private_key
        self._key_id = key_id(private_key.public_key())
        self._ttl_ms = ttl_ms

    def sign(
        self,
        *,
        task_id: str,
        attempt: int,
        node_id: str,
        session_epoch: int,
        spec: node_pb2.TaskSpec,
        tenant: str = "default",
        now_ms: int | None = None,
    ) -> node_pb2.SignedEnvelope:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        env = node_pb2.TaskEnvelope(
            task_id=task_id,
            attempt=attempt,
            node_id=node_id,
            session_epoch=session_epoch,
            tenant=tenant,
            issued_at_ms=now,
            expires_at_ms=now + self._ttl_ms,
            nonce=secrets.token_bytes(NONCE_BYTES),
            spec=spec,
        )
        body = env.SerializeToString()
        return node_pb2.SignedEnvelope(
            body=body, signature=self._key.sign(DOMAIN + body), key_id=self._key_id
        )


class EnvelopeVerifier:
    """Node-side verification of every envelope before anything runs."""

    def __init__(self, public_key: Ed25519PublicKey, node_id: str, max_nonces: int = 100_000):
        self._key = public_key
        self._node_id = node_id
        self._max_nonces = max_nonces
        self._nonces: OrderedDict[bytes, int] = OrderedDict()  # nonce -> expires_at_ms

    @property
    def key_id(self) -> str:
        return key_id(self._key)

    def proves_key(self, challenge: bytes, proof: bytes) -> bool:
        """Whether ``proof`` is the hub's welcome_proof of ``challenge`` for this node."""
        try:
            self._key.verify(proof, WELCOME_DOMAIN + self._node_id.encode() + b"\x00"
                             + challenge)
        except InvalidSignature:
            return False
        return True

    def verify(
        self, signed: node_pb2.SignedEnvelope, session_epoch: int, now_ms: int | None = None
    ) -> node_pb2.TaskEnvelope:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        try:
            self._key.verify(signed.signature, DOMAIN + signed.body)
        except InvalidSignature as e:
            raise EnvelopeError("bad_signature", "envelope signature does not verify") from e
        env = node_pb2.TaskEnvelope()
        try:
            env.ParseFromString(signed.body)
        except Exception as e:  # protobuf raises DecodeError, a bare Exception subclass
            raise EnvelopeError("malformed", f"envelope body does not parse: {e}") from e
        if env.node_id != self._node_id:
            raise EnvelopeError("wrong_node", f"envelope is for node {env.node_id!r}, "
                                f"not {self._node_id!r}")
        if env.session_epoch != session_epoch:
            raise EnvelopeError("stale_epoch", f"envelope is for session epoch "
                                f"{env.session_epoch}, current is {session_epoch}")
        if env.expires_at_ms <= now:
            raise EnvelopeError("expired", f"envelope expired {now - env.expires_at_ms} ms ago")
        if env.issued_at_ms > now + MAX_CLOCK_SKEW_MS:
            raise EnvelopeError("expired", "envelope issued in the future (clock skew?)")
        if len(env.nonce) != NONCE_BYTES:
            raise EnvelopeError("malformed", "envelope nonce has the wrong length")
        self._expire(now)
        if env.nonce in self._nonces:
            raise EnvelopeError("replay", "envelope nonce was already used (replay)")
        if len(self._nonces) >= self._max_nonces:
            raise EnvelopeError("replay", "nonce cache is full; refusing until entries expire")
        self._nonces[env.nonce] = env.expires_at_ms
        return env

    def _expire(self, now_ms: int) -> None:
        # Insertion order approximates expiry order (same TTL from one hub); stop at
        # the first live entry so this stays O(expired).
        while self._nonces:
            nonce, expires = next(iter(self._nonces.items()))
            if expires > now_ms:
                break
            del self._nonces[nonce]
