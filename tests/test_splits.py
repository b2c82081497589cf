"""Split payments end to end on real clusters: one payment to several payees at several
banks, all or nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

from minipay.client.api import SplitShare
from tests.conftest import ClusterFactory
from tests.helpers import (
    COMMITTED,
    SEED_ACCOUNTS,
    assert_atomic,
    balances,
    customer,
    moved,
    settle,
    total_money,
)

ALICE = SEED_ACCOUNTS["alice"]
BOB, CAROL, ERIN = SEED_ACCOUNTS["bob"], SEED_ACCOUNTS["carol"], SEED_ACCOUNTS["erin"]


def key() -> str:
    return f"split-{uuid.uuid4()}"


def test_a_split_of_three_payees_at_three_banks_commits_everywhere(
    make_cluster: ClusterFactory, certs: Path, backend: str
) -> None:
    cluster = make_cluster(backend)
    alice = customer(cluster, certs, "alice")
    money = total_money(cluster)
    before = balances(cluster)
    shares = [SplitShare(*BOB, 1_000), SplitShare(*CAROL, 2_000), SplitShare(*ERIN, 3_000)]
    paid = alice.pay_split(shares, idempotency_key=key())
    assert paid.status == COMMITTED, paid
    assert paid.amount_minor_units == 6_000
    assert [s.amount_minor_units for s in paid.shares] == [1_000, 2_000, 3_000]
    settle(cluster)
    assert moved(before, balances(cluster)) == {ALICE: -6_000, BOB: 1_000, CAROL: 2_000, ERIN: 3_000}
    assert_atomic(cluster, money)
