"""What a task was told to keep secret, kept so that it never leaves the hub.

Input typed while the task's last prompt is a password prompt is a *secret* of that
task. Every context a monitor reads (``GetContext``) has each of the task's secrets
replaced by ``[secret]`` before it leaves the control process; a secret is never
logged or recorded in a decision.

Durable: each secret is also stored in the hub's store (``task_secrets``), sealed with
AES-GCM under this host's key (``STATE_DIR/secrets.key``, 32 random bytes, mode
0600, made on first use), never in the clear. The memory copy is a bounded cache
(:data:`MAX_TASKS` tasks, :data:`MAX_PER_TASK` secrets each); a task not in it — the
control process restarted, or it was evicted — is loaded from the store the first
time its context is read, so redaction survives a restart of the monitor process
(it holds none) and of the control process (the store has them). A sealed secret
this host cannot open (another host's key, a replaced key file) is skipped and
counted (``unreadable``): with a lost key, the secrets it sealed are no longer
redacted, which ``cortexd`` says in its log.
"""

import os
from collections import OrderedDict
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cortex import logs
from cortexd.store.monitoring import MonitorTables

MAX_TASKS = 4096
MAX_PER_TASK = 8
SECRET = b"[secret]"
KEY_FILE = "secrets.key"
NONCE_BYTES = 12


def load_key(state_dir: Path) -> bytes:
    """This host's sealing key, made (0600, exclusively) if there is none."""
    path = state_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"{path}: a sealing key is 32 bytes, not {len(key)}") from None
        return key
    key = AESGCM.generate_key(bit_length=256)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


class SecretKeeper:
    def __init__(self, store: MonitorTables, key: bytes) -> None:
        self.store = store
        self._aead = AESGCM(key)
        self._known: OrderedDict[str, list[bytes]] = OrderedDict()
        self.unreadable = 0
        self.log = logs.get()

    def _seal(self, task_id: str, secret: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret, task_id.encode())

    def _open(self, task_id: str, sealed: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:],
                                      task_id.encode())
        except (InvalidTag, ValueError):
            return None

    def _keep(self, task_id: str, secrets: list[bytes]) -> list[bytes]:
        self._known[task_id] = secrets[-MAX_PER_TASK:]
        self._known.move_to_end(task_id)
        while len(self._known) > MAX_TASKS:
            self._known.popitem(last=False)
        return self._known[task_id]

    async def _secrets(self, task_id: str) -> list[bytes]:
        known = self._known.get(task_id)
        if known is not None:
            return known
        opened = []
        for sealed in await self.store.task_secrets(task_id, MAX_PER_TASK):
            secret = self._open(task_id, sealed)
            if secret is None:
                self.unreadable += 1
                self.log.warning("secret_unreadable", task=task_id,
                                 why="sealed under another key: not redacted")
            else:
                opened.append(secret)
        return self._keep(task_id, opened)

    async def add(self, owner: str, task_id: str, secret: bytes, now_ms: int) -> None:
        """Keep ``secret``: redacted at once, and stored (before the input is sent: the
        caller awaits this first), so a restart cannot lose it."""
        if not secret:
            return
        known = await self._secrets(task_id)
        if secret in known:
            return
        self._keep(task_id, [*known, secret])  # redacted from now on, before it is stored
        await self.store.add_secret(owner, task_id, self._seal(task_id, secret), now_ms)

    def new_task(self, task_id: str) -> None:
        """``task_id`` was just created: it has no secrets yet (no store read needed)."""
        if task_id not in self._known:
            self._keep(task_id, [])

    def redact_known(self, task_id: str, *blobs: bytes) -> list[bytes] | None:
        """:meth:`redact` without a store read; None when the task's secrets are not in
        memory (then only :meth:`redact` may say what leaves)."""
        known = self._known.get(task_id)
        return None if known is None else self._replace(known, blobs)

    async def redact(self, task_id: str, *blobs: bytes) -> list[bytes]:
        return self._replace(await self._secrets(task_id), blobs)

    @staticmethod
    def _replace(known: list[bytes], blobs: tuple[bytes, ...]) -> list[bytes]:
        secrets = sorted(known, key=len, reverse=True)
        out = []
        for data in blobs:
            for secret in secrets:  # the longest first: one secret may hold another
                data = data.replace(secret, SECRET)
            out.append(data)
        return out
