"""What an account may read of the payment log, on a real (temporary) SQLite database: its
history in pages, filtered, and which payments it may see."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest

from server.common.db import Database
from server.common.errors import InvalidArgument
from server.common.vocabulary import Reason, Status
from server.gateway import history
from server.gateway.history import Direction, HistoryQuery
from server.gateway.payment_state import COMMIT, PaymentKind, PaymentView, abort
from tests.unit.test_payment_log import ORDER, decide, record


def history_ids(db: Database, bank: str, account: str, page_size: int, **filters: Any) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        query = HistoryQuery(bank, account, page_size, token, **filters)
        page, token = db.run_sync(functools.partial(history.history, query=query))
        assert len(page) <= page_size
        ids += [payment.id for payment in page]
        if not token:
            return ids


def test_history_pages_cover_every_payment_once(gateway_db: Database) -> None:
    # One round: every payment has the same creation time, so the cursor must break ties.
    orders = [dataclasses.replace(ORDER, idempotency_key=f"k{i}") for i in range(23)]
    made = {r.payment.id for r in record(gateway_db, *orders) if r.payment is not None}
    for page_size in (1, 2, 5, 7, 23, 50):
        ids = history_ids(gateway_db, "alpha", "A-1", page_size)
        assert len(ids) == len(set(ids)) == 23, page_size
        assert set(ids) == made


def test_history_is_the_account_s_own(gateway_db: Database) -> None:
    # Two customers of one bank: each sees only their own payments.
    alices = record(gateway_db, ORDER)[0].payment
    bobs = record(
        gateway_db,
        dataclasses.replace(ORDER, payer="bob", from_account="A-2", idempotency_key="b"),
    )[0].payment
    assert alices is not None and bobs is not None
    assert history_ids(gateway_db, "alpha", "A-1", 10) == [alices.id]
    assert history_ids(gateway_db, "alpha", "A-2", 10) == [bobs.id]
    assert history_ids(gateway_db, "gamma", "A-1", 10) == [], "same number at another bank"


def test_the_payee_sees_only_what_committed_to_it(gateway_db: Database) -> None:
    kept, dropped, open_ = (
        r.payment
        for r in record(gateway_db, *(dataclasses.replace(ORDER, idempotency_key=k) for k in "abc"))
    )
    assert kept is not None and dropped is not None and open_ is not None
    decide(gateway_db, (kept.id, COMMIT), (dropped.id, abort(Reason.INSUFFICIENT_FUNDS)))
    assert history_ids(gateway_db, "beta", "B-1", 10) == [kept.id]
    assert set(history_ids(gateway_db, "alpha", "A-1", 10)) == {kept.id, dropped.id, open_.id}


def test_history_filters_by_status_direction_and_time(gateway_db: Database) -> None:
    paid, failed = (
        r.payment
        for r in record(
            gateway_db, ORDER, dataclasses.replace(ORDER, idempotency_key="k2", amount=5)
        )
    )
    incoming = record(
        gateway_db,
        dataclasses.replace(
            ORDER,
            payer="carol",
            from_bank="beta",
            from_account="B-1",
            to_bank="alpha",
            to_account="A-1",
            idempotency_key="c",
        ),
    )[0].payment
    assert paid is not None and failed is not None and incoming is not None
    decide(gateway_db, (paid.id, COMMIT), (failed.id, abort(Reason.INSUFFICIENT_FUNDS)))
    decide(gateway_db, (incoming.id, COMMIT))
    mine = "alpha", "A-1", 10
    assert set(history_ids(gateway_db, *mine)) == {paid.id, failed.id, incoming.id}
    assert history_ids(gateway_db, *mine, status=Status.ABORTED) == [failed.id]
    assert set(history_ids(gateway_db, *mine, status=Status.COMMITTED)) == {paid.id, incoming.id}
    assert history_ids(gateway_db, *mine, direction=Direction.INCOMING) == [incoming.id]
    outgoing = set(history_ids(gateway_db, *mine, direction=Direction.OUTGOING))
    assert outgoing == {paid.id, failed.id}
    created = paid.created_at
    assert history_ids(gateway_db, *mine, created_before=created) == []
    assert len(history_ids(gateway_db, *mine, created_from=created)) == 3
    assert history_ids(gateway_db, *mine, created_from=incoming.created_at + 1) == []


def test_a_payment_is_visible_to_its_payer_and_to_its_payee_once_committed(
    gateway_db: Database,
) -> None:
    [recorded] = record(gateway_db, ORDER)
    payment = recorded.payment
    assert payment is not None
    assert history.visible_to(payment, "alpha", "A-1")
    assert not history.visible_to(payment, "beta", "B-1"), "not while it may still abort"
    [decided] = decide(gateway_db, (payment.id, COMMIT))
    assert history.visible_to(decided, "beta", "B-1")
    assert not history.visible_to(decided, "gamma", "A-1")


def test_a_page_token_this_server_never_gave_is_refused(gateway_db: Database) -> None:
    query = HistoryQuery("alpha", "A-1", 10, page_token="not-a-cursor")
    with pytest.raises(InvalidArgument) as refused:
        gateway_db.run_sync(functools.partial(history.history, query=query))
    assert refused.value.field == "page_token"


# -- every payment, as an admin reads them ------------------------------------------------------


def listed_ids(db: Database, page_size: int, **filters: Any) -> tuple[list[str], int]:
    """Every page's payments, and how many pages it took."""
    ids: list[str] = []
    token, pages = "", 0
    while True:
        query = history.PaymentsQuery(page_size, token, **filters)
        page, token = db.run_sync(functools.partial(history.all_payments, query=query))
        pages += 1
        assert len(page) <= page_size
        ids += [payment.id for payment in page]
        if not token:
            return ids, pages


def test_every_payment_pages_newest_first_with_bounded_reads(
    gateway_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = [
        dataclasses.replace(
            ORDER,
            idempotency_key=f"k{i}",
            from_account=f"A-{i % 3}",
            to_bank="beta" if i % 2 else "gamma",
        )
        for i in range(30)
    ]
    # Two rounds: two creation times, and many payments sharing each.
    recorded = [*record(gateway_db, *orders[:10]), *record(gateway_db, *orders[10:])]
    made: list[PaymentView] = [r.payment for r in recorded if r.payment is not None]
    ids = {p.id: p for p in made}
    committed = list(ids)[::4]
    decide(gateway_db, *((pid, COMMIT) for pid in committed))
    # Each page reads at most 4 rows of an index: filtered pages come back short, never
    # wrong, and together they hold every payment that passes, once.
    monkeypatch.setattr(history, "SCAN_ROWS", 4)
    everything, _ = listed_ids(gateway_db, 7)
    assert sorted(everything) == sorted(ids)
    newest_first = sorted(made, key=lambda p: (p.created_at, p.id), reverse=True)
    assert everything == [p.id for p in newest_first]
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"status": Status.COMMITTED}, set(committed)),
        ({"status": Status.PENDING}, set(ids) - set(committed)),
        ({"bank": "gamma"}, {pid for pid, p in ids.items() if p.to_bank == "gamma"}),
        (
            {"bank": "alpha", "account": "A-1"},
            {pid for pid, p in ids.items() if p.from_account == "A-1"},
        ),
        (
            {"bank": "beta", "account": "B-1", "status": Status.COMMITTED},
            {pid for pid in committed if ids[pid].to_bank == "beta"},
        ),
        ({"kind": PaymentKind.REFUND}, set()),
        ({"kind": PaymentKind.PAYMENT}, set(ids)),
    ]
    for filters, expected in cases:
        found, pages = listed_ids(gateway_db, 2, **filters)
        assert sorted(found) == sorted(expected), filters
        assert pages >= len(expected) // 2, filters


def test_every_payment_within_a_time_range(gateway_db: Database) -> None:
    early = record(gateway_db, ORDER)[0].payment
    late = record(gateway_db, dataclasses.replace(ORDER, idempotency_key="later"))[0].payment
    assert early is not None and late is not None
    between = (early.created_at + late.created_at) / 2
    assert listed_ids(gateway_db, 5, created_before=between)[0] == [early.id]
    assert listed_ids(gateway_db, 5, created_from=between)[0] == [late.id]
    assert listed_ids(gateway_db, 5, created_from=late.created_at + 1)[0] == []


def test_a_page_token_not_given_out_is_refused(gateway_db: Database) -> None:
    query = history.PaymentsQuery(5, "nonsense")
    with pytest.raises(InvalidArgument):
        gateway_db.run_sync(functools.partial(history.all_payments, query=query))


def test_an_account_s_payments_both_ways_page_once_each(
    gateway_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paid and received, read along two indexes that stop at different places: a page
    never goes past what one of them has not read yet."""
    back = dataclasses.replace(
        ORDER,
        payer="carol",
        from_bank="beta",
        from_account="B-1",
        to_bank="alpha",
        to_account="A-1",
    )
    made: list[PaymentView] = []
    for round_ in range(6):
        orders = [
            dataclasses.replace(order, idempotency_key=f"{round_}-{i}")
            for i, order in enumerate(
                (ORDER, ORDER, ORDER, back) if round_ % 2 else (back, back, ORDER)
            )
        ]
        made += [r.payment for r in record(gateway_db, *orders) if r.payment is not None]
    committed = [p.id for p in made[::3]]
    decide(gateway_db, *((pid, COMMIT) for pid in committed))
    monkeypatch.setattr(history, "SCAN_ROWS", 4)
    newest_first = [p.id for p in sorted(made, key=lambda p: (p.created_at, p.id), reverse=True)]
    for page_size in (1, 2, 3, 5):
        found, _ = listed_ids(
            gateway_db, page_size, bank="alpha", account="A-1", status=Status.COMMITTED
        )
        assert found == [pid for pid in newest_first if pid in committed], page_size
        everything, _ = listed_ids(gateway_db, page_size, bank="alpha", account="A-1")
        assert everything == newest_first, page_size
