"""The keys login tokens are signed with. Each gateway replica signs with an Ed25519 key of
its own (a file only its owner reads) and publishes the public half, under a key id (``kid``,
a hash of the public key), in the shared database; every replica verifies a token with the
published key its ``kid`` names. Why a key per replica rather than one shared key: a private
key never leaves the host that uses it, and the database (which every replica can read) holds
nothing that signs.

Only a key in use verifies anything. ``python -m server.gateway rotate-key`` writes a new key
for a replica and publishes it, retiring the old one: every replica refuses the tokens it
signed within a reload (half a second), so a copied key is worth nothing from then on. A key
whose replica has held no lease for a token's lifetime is retired too (every token it signed
has expired by then; a copy of it signs nothing more), and a replica that comes back
publishes its key again.
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
from sqlalchemy import Connection, bindparam, delete, exists, select, update
from sqlalchemy.sql import Executable

from server.common.db import Database, db_now, per_dialect
from server.common.errors import ConfigError
from server.common.periodic import repeat
from server.gateway import audit, events, journal
from server.gateway.models import Base

log = logging.getLogger(__name__)

KEYS = Base.metadata.tables["token_keys"]
REPLICAS = Base.metadata.tables["replicas"]
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
    """Publishes KEY as REPLICA's signing key; the replica's older keys are retired (the
    tokens they signed are refused from the next reload on). A key published for the first
    time is a rotation: an event and an audit record."""
    known = connection.execute(select(KEYS.c.kid).where(KEYS.c.kid == key.kid)).first()
    connection.execute(
        _PUBLISH[connection.dialect.name],
        {"b_kid": key.kid, "b_replica": replica, "b_pem": key.public_pem, "b_at": moment},
    )
    connection.execute(RETIRE, {"b_replica": replica, "b_kid": key.kid, "b_at": moment})
    if known is None:
        record = audit.admin_action(
            moment,
            action="rotate_key",
            admin="",
            certificate="",
            what={"kid": key.kid},
            outcome="OK",
            replica=replica,
        )
        rotated = events.key_rotated(moment, replica=replica, kid=key.kid)
        journal.write(connection, [rotated], [record])


class KeyRing:
    """This replica's signing key (reloaded when its file changes) and every public key in use
    (reloaded from the database)."""

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
        """The key KID names, if it is in use as of the last reload."""
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
            await self._load_rotated_key()
        public = await self._db.statements(_keys_in_use)
        if self.signing.kid not in public:
            # Retired while this replica was away (paused past the grace), or its row was
            # deleted: it signs with this key, so it publishes it again, unless the file has
            # just been rotated, in which case the new key is the one to publish.
            if self._stamp() != self._file_stamp:
                await self._load_rotated_key()
            else:
                await self._publish()
            public = await self._db.statements(_keys_in_use)
        self._public = public

    async def retire_unused(self, grace: float) -> None:
        """Retires every key whose replica has held no lease for GRACE seconds."""
        moment = self._clock()
        await self._db.statements(
            lambda c: c.execute(RETIRE_UNUSED, {"b_grace": grace, "b_at": moment})
        )

    async def forget_retired(self, token_ttl: float) -> None:
        """Drops keys retired longer ago than a token lives: kept that long for the record."""
        cutoff = self._clock() - token_ttl
        await self._db.statements(
            lambda c: c.execute(
                delete(KEYS).where(KEYS.c.retired_at.is_not(None), KEYS.c.retired_at < cutoff)
            )
        )

    async def run_forever(self, interval: float = REFRESH_INTERVAL) -> None:
        await repeat(self.refresh, interval, log, "cannot reload the token keys")

    async def _load_rotated_key(self) -> None:
        self.signing = load_key(self._path, create=False)
        self._file_stamp = self._stamp()
        await self._publish()
        log.info("token signing key reloaded", extra={"fields": {"kid": self.signing.kid}})

    async def _publish(self) -> None:
        key, moment = self.signing, self._clock()
        await self._db.statements(lambda c: publish(c, self._replica, key, moment))

    def _stamp(self) -> tuple[int, int]:
        try:
            info = self._path.stat()
        except OSError:
            return (0, 0)
        return (info.st_mtime_ns, info.st_ino)


def _keys_in_use(connection: Connection) -> dict[str, Ed25519PublicKey]:
    """Every key no replica has retired, by kid; a row whose kid is not its key's is no key."""
    rows = connection.execute(
        select(KEYS.c.kid, KEYS.c.public_key).where(KEYS.c.retired_at.is_(None))
    ).all()
    public = {}
    for kid, pem in rows:
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError:
            continue
        if isinstance(key, Ed25519PublicKey) and key_id(key) == kid:
            public[kid] = key
    return public


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
# Only this replica's other keys: every other replica's stay in use.
RETIRE = (
    update(KEYS)
    .where(
        KEYS.c.replica == bindparam("b_replica"),
        KEYS.c.kid != bindparam("b_kid"),
        KEYS.c.retired_at.is_(None),
    )
    .values(retired_at=bindparam("b_at"))
)
# Keys of replicas that have held no lease for the grace (by the database's clock, which the
# leases are kept in), and of names no replica has.
RETIRE_UNUSED = (
    update(KEYS)
    .where(
        KEYS.c.retired_at.is_(None),
        ~exists().where(
            REPLICAS.c.name == KEYS.c.replica,
            REPLICAS.c.lease_expires_at > db_now() - bindparam("b_grace"),
        ),
    )
    .values(retired_at=bindparam("b_at"))
)
