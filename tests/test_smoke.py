"""The happy path end to end: a customer registers, logs in, pays across banks."""

from pathlib import Path

from server.cluster import Cluster
from tests.helpers import assert_books_balance, customer, total_money


def test_cross_bank_payment(cluster: Cluster, certs: Path) -> None:
    before = total_money(cluster)
    alice = customer(cluster, certs, "alice")
    answer = alice.pay("beta", "B-2001", 1234)
    assert answer.status == 2, answer
    assert alice.balance().balance.minor_units == 100000 - 1234
    assert total_money(cluster) == before
    assert_books_balance(cluster)
