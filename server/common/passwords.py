"""Password hashing with bcrypt. Hashing is slow on purpose, so callers run it in a thread."""

from __future__ import annotations

import asyncio

import bcrypt

# Checked when a username is unknown, so a wrong username costs as long as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds=4)).decode()

MAX_PASSWORD_BYTES = 72  # bcrypt ignores everything past this


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def check_password(password: str, password_hash: str | None) -> bool:
    ok = bcrypt.checkpw(
        password.encode()[:MAX_PASSWORD_BYTES], (password_hash or _DUMMY_HASH).encode()
    )
    return ok and password_hash is not None


async def hash_password_async(password: str, rounds: int) -> str:
    return await asyncio.to_thread(hash_password, password, rounds)


async def check_password_async(password: str, password_hash: str | None) -> bool:
    return await asyncio.to_thread(check_password, password, password_hash)
