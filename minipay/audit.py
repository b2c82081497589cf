"""The audit chain's rules, shared by the gateway that appends to it and the admin who
verifies it: a record's body is canonical JSON, and its hash is SHA-256 over the previous
record's hash (its 64 hex characters) followed by the body, both UTF-8. The first record's
previous hash is 64 zeros.

``verify`` recomputes a chain from its records alone: whoever edits a body, deletes or swaps
records, or rewrites the chain from some point on (recomputing every hash after it) is caught,
the last by comparing with a head (sequence and hash) saved earlier."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(body: Mapping[str, Any]) -> str:
    """BODY as the chain hashes it: sorted keys, no spaces, UTF-8 (not escaped)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True)
class Record:
    sequence: int
    prev_hash: str
    hash: str
    body: str


@dataclass(frozen=True)
class Head:
    sequence: int
    hash: str

    def __str__(self) -> str:
        return f"{self.sequence}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """SEQ:HASH, as ``verify`` prints it."""
        sequence, _, digest = text.strip().partition(":")
        if not sequence.isdigit() or len(digest) != 64 or not _is_hex(digest):
            raise ValueError(f"not a chain head (SEQ:HASH, 64 hex characters): {text!r}")
        return cls(int(sequence), digest.lower())


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: the head it verified, and the first problem (None: none)."""

    head: Head
    records: int
    problem: str | None = None
    at_sequence: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(
    records: Iterable[Record], expect_head: Head | None = None, declared: Head | None = None
) -> Verdict:
    """Recomputes the chain RECORDS (in sequence order, from the first). EXPECT_HEAD, a head
    saved earlier, must still be in the chain, unchanged; DECLARED, the head the gateway says
    it has, must be the last record."""
    head = Head(0, GENESIS)
    count = 0
    for record in records:
        expected = head.sequence + 1
        if record.sequence != expected:
            missing = "missing" if record.sequence > expected else "out of order"
            return Verdict(head, count, f"record {expected} is {missing}", expected)
        if record.prev_hash != head.hash:
            return Verdict(
                head,
                count,
                f"record {record.sequence} does not follow record {head.sequence}"
                " (its prev_hash is not that record's hash)",
                record.sequence,
            )
        if chain_hash(record.prev_hash, record.body) != record.hash:
            return Verdict(
                head,
                count,
                f"record {record.sequence} was changed (its hash does not match its body)",
                record.sequence,
            )
        if (
            expect_head is not None
            and record.sequence == expect_head.sequence
            and record.hash != expect_head.hash
        ):
            return Verdict(
                head,
                count,
                f"record {record.sequence} is not the one saved earlier: the"
                " chain was rewritten from there or before",
                record.sequence,
            )
        head = Head(record.sequence, record.hash)
        count += 1
    if expect_head is not None and head.sequence < expect_head.sequence:
        return Verdict(
            head,
            count,
            f"the chain ends at record {head.sequence}, before the head saved"
            f" earlier ({expect_head.sequence}): it was truncated",
            head.sequence + 1,
        )
    if declared is not None and declared != head:
        return Verdict(
            head,
            count,
            f"the gateway's head is {declared.sequence} but the chain ends at"
            f" {head.sequence}: records were removed or added behind its back",
            min(declared.sequence, head.sequence) + 1,
        )
    return Verdict(head, count)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
