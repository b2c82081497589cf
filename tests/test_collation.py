"""Ids compare alike in PostgreSQL and in Python whatever the server's locale: the reconcile
pages through payment and deposit ids in each database and merges them in Python, so a
database ordering "open:B-2001" after "open:B2000" (as ICU's en-US does, punctuation aside)
would make it find mismatches that are not there, or miss ones that are. The migrations give
those columns the C collation; here they run on databases made with ICU's en-US."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from devtools.scratch import fresh_postgres_databases
from server.common.db import upgrade
from tests.helpers import POSTGRES_URL, postgres_available

pytestmark = pytest.mark.skipif(not postgres_available(), reason="needs PostgreSQL")
IDS = ["open:B2000", "open:B-2001", "admin-ff", "pay_0A", "pay_0a", "open:b-1", "open:B 3"]


def _has_icu() -> bool:
    """Whether the server was built with ICU (Debian's is): the test needs a locale whose
    order differs from the bytes'."""
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'")
            ).first()
        return found is not None
    finally:
        engine.dispose()


@pytest.fixture
def icu_databases() -> Iterator[dict[str, Engine]]:
    if not _has_icu():
        pytest.skip("this PostgreSQL server has no ICU collations")
    prefix = f"minipay_icu_{uuid.uuid4().hex[:8]}"
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    with fresh_postgres_databases(POSTGRES_URL, ["gateway", "bank"], prefix, icu) as urls:
        engines = {kind: create_engine(url) for kind, url in urls.items()}
        try:
            yield engines
        finally:
            for engine in engines.values():
                engine.dispose()


def test_ids_order_as_python_orders_them_on_an_icu_database(
    icu_databases: dict[str, Engine],
) -> None:
    checks = {
        "gateway": [("payments", "id"), ("deposits", "deposit_id")],
        "bank": [
            ("bank_payments", "payment_id"),
            ("legs", "payment_id"),
            ("ledger_entries", "payment_id"),
            ("ledger_entries", "deposit_id"),
        ],
    }
    for kind, engine in icu_databases.items():
        upgrade(engine, kind)
        with engine.connect() as connection:
            # The server's own order differs from Python's: the test would prove nothing else.
            ordered = connection.execute(
                text("SELECT v FROM unnest(CAST(:ids AS text[])) AS v ORDER BY v"), {"ids": IDS}
            ).scalars()
            assert list(ordered) != sorted(IDS)
            for table, column in checks[kind]:
                collation = connection.execute(
                    text(
                        "SELECT collation_name FROM information_schema.columns "
                        "WHERE table_name = :t AND column_name = :c"
                    ),
                    {"t": table, "c": column},
                ).scalar()
                assert collation == "C", (table, column)
    with icu_databases["gateway"].begin() as connection:
        for deposit_id in IDS:
            connection.execute(
                text(
                    "INSERT INTO deposits (deposit_id, bank, account, amount, currency, admin, "
                    "state, created_at) VALUES (:id, 'beta', 'B-1', 1, 'USD', 'admin', "
                    "'APPLIED', 0)"
                ),
                {"id": deposit_id},
            )
        stored = connection.execute(
            text("SELECT deposit_id FROM deposits ORDER BY deposit_id")
        ).scalars()
        assert list(stored) == sorted(IDS)
        after = connection.execute(
            text("SELECT deposit_id FROM deposits WHERE deposit_id > 'open:B-2001' ORDER BY 1")
        ).scalars()
        assert list(after) == [i for i in sorted(IDS) if i > "open:B-2001"]
