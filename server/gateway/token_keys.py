"""The keys login tokens are signed with. Each gateway replica signs with an Ed25519 key of
its own (a file only its owner reads) and publishes the public half, under a key id (``kid``),
in the shared database; every replica verifies a token with the public key its ``kid`` names.
Why a key per replica rather than one shared key: a private key never leaves the host that
uses it, and the database (which every replica can read) holds nothing that signs.

``python -m server.gateway rotate-key`` writes a new key for a replica and publishes it; the
running replica starts signing with it within a second, and the key it replaces stays
published until every token it signed has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.sql import Executable

from server.common.db import Database, per_dialect
from server.common.errors import ConfigError
from server.common.periodic import repeat
from server.gateway.models import Base

log = logging.getLogger(__name__)

KEYS = Base.metadata.tables["token_keys"]
REFRESH_INTERVAL = 0.5
# Tokens with kids nobody published make the ring reload, at most this often per second.
_RELOADS_ON_MISS_PER_SECOND = 10


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @property
    def public_pem(self) -> str:
        return _public_pem(self.private.public_key())


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def _public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def write_new_key(path: Path) -> None:
    """A new key at PATH, replacing any there atomically; readable by its owner only."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise ConfigError(f"cannot write token signing key {path}: {exc.strerror or exc}") from None


def load_key(path: Path, *, create: bool) -> SigningKey:
    """The key in PATH (made first if CREATE and there is none)."""
    if create and not path.exists():
        write_new_key(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load token signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"token signing key {path} is not an Ed25519 key")
    return SigningKey(key_id(key.public_key()), key)


def publish(connection: Connection, replica: str, key: SigningKey, moment: float) -> None:
    """Publishes KEY as REPLICA's signing key; the replica's older keys are retired (still
    valid for the tokens they signed)."""
    connection.execute(
        _PUBLISH[connection.dialect.name],
        {"b_kid": key.kid, "b_replica": replica, "b_pem": key.public_pem, "b_at": moment},
    )
    connection.execute(RETIRE, {"b_replica": replica, "b_kid": key.kid, "b_at": moment})


class KeyRing:
    """This replica's signing key (reloaded when its file changes) and every published
    public key (reloaded from the database)."""

    def __init__(
        self, db: Database, replica: str, path: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._replica = replica
        self._path = path
        self._clock = clock
        self.signing = load_key(path, create=True)
        self._file_stamp = self._stamp()
        self._public: dict[str, Ed25519PublicKey] = {}
        self._miss_reloads: deque[float] = deque()
        self._reloading: asyncio.Task[None] | None = None  # one reload that misses share

    async def start(self) -> None:
        await self._publish()
        await self.refresh()

    def public(self, kid: str) -> Ed25519PublicKey | None:
        return self._public.get(kid)

    async def public_or_reload(self, kid: str) -> Ed25519PublicKey | None:
        """A key published a moment ago by another replica is found without waiting for the
        next reload: calls that miss at once share one reload, and unknown kids reload the
        ring at most ten times a second."""
        known = self._public.get(kid)
        if known is not None:
            return known
        if self._reloading is None and self._may_reload():
            self._reloading = asyncio.create_task(self.refresh())
            self._reloading.add_done_callback(self._reloaded)
        if self._reloading is not None:
            await asyncio.shield(self._reloading)
        return self._public.get(kid)

    def _reloaded(self, task: asyncio.Task[None]) -> None:
        self._reloading = None

    def _may_reload(self) -> bool:
        moment = time.monotonic()
        while self._miss_reloads and self._miss_reloads[0] < moment - 1.0:
            self._miss_reloads.popleft()
        if len(self._miss_reloads) >= _RELOADS_ON_MISS_PER_SECOND:
            return False
        self._miss_reloads.append(moment)
        return True

    async def refresh(self) -> None:
        if self._stamp() != self._file_stamp:  # rotated: sign with the new key from now on
            self.signing = load_key(self._path, create=False)
            self._file_stamp = self._stamp()
            await self._publish()
            log.info("token signing key reloaded", extra={"fields": {"kid": self.signing.kid}})
        rows = await self._db.statements(
            lambda c: c.execute(select(KEYS.c.kid, KEYS.c.public_key)).all()
        )
        public = {}
        for kid, pem in rows:
            key = serialization.load_pem_public_key(pem.encode())
            if isinstance(key, Ed25519PublicKey):
                public[kid] = key
        self._public = public

    async def forget_retired(self, token_ttl: float) -> None:
        """Drops keys retired longer ago than a token lives: nothing they signed is valid."""
        cutoff = self._clock() - token_ttl
        await self._db.statements(
            lambda c: c.execute(
                delete(KEYS).where(KEYS.c.retired_at.is_not(None), KEYS.c.retired_at < cutoff)
            )
        )

    async def run_forever(self, interval: float = REFRESH_INTERVAL) -> None:
        await repeat(self.refresh, interval, log, "cannot reload the token keys")

    async def _publish(self) -> None:
        key, moment = self.signing, self._clock()
        await self._db.statements(lambda c: publish(c, self._replica, key, moment))

    def _stamp(self) -> tuple[int, int]:
        try:
            info = self._path.stat()
        except OSError:
            return (0, 0)
        return (info.st_mtime_ns, info.st_ino)


def _publish_statement(dialect: ModuleType) -> Executable:
    statement = dialect.insert(KEYS).values(
        kid=bindparam("b_kid"),
        replica=bindparam("b_replica"),
        public_key=bindparam("b_pem"),
        created_at=bindparam("b_at"),
        retired_at=None,
    )
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["kid"], set_={"retired_at": None}
    )
    return upsert


_PUBLISH = per_dialect(_publish_statement)
RETIRE = (
    update(KEYS)
    .where(
        KEYS.c.replica == bindparam("b_replica"),
        KEYS.c.kid != bindparam("b_kid"),
        KEYS.c.retired_at.is_(None),
    )
    .values(retired_at=bindparam("b_at"))
)
