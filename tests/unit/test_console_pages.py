"""The console's pages with what the gateway answers once every method is served, in
milliseconds and without a gateway: the overview from GetOverview, GetLastReconcile and
ListAudit (and "not available" without them), the live page's words for each event, the
stream's cursor, and the throughput chart (text only, never markup)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from starlette.requests import Request

from console.charts import throughput_chart
from console.live import cursor, describe
from console.web import templates
from minipay.v1 import admin_pb2, common_pb2, events_pb2, gateway_pb2

TEMPLATES = templates(str(Path(__file__).resolve().parents[2] / "console" / "templates"))
SESSION = SimpleNamespace(username="admin", role="admin", csrf="token")
NOW = Timestamp(seconds=1_800_000_000)


def money(minor_units: int, currency: str = "USD") -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency=currency)


def report(agreed: bool) -> admin_pb2.ReconcileReport:
    findings = [] if agreed else [
        admin_pb2.ReconcileFinding(
            code="HOLD_LEFT", bank="beta", payment_id="pay_1", detail="<b>held</b> too long"
        )
    ]  # fmt: skip
    return admin_pb2.ReconcileReport(
        run_id="r1",
        replica="gateway-2",
        started_at=NOW,
        finished_at=NOW,
        agreed=agreed,
        payments_checked=12,
        entries_checked=40,
        findings=findings,
        findings_total=len(findings),
        currencies=[
            admin_pb2.CurrencyBooks(currency="USD", balances=money(500), deposits=money(500))
        ],
    )


def overview() -> admin_pb2.GetOverviewResponse:
    return admin_pb2.GetOverviewResponse(
        banks=[
            admin_pb2.BankOverview(
                name="alpha",
                address="127.0.0.1:1",
                serving=True,
                balances=[money(123456)],
                held=[money(100)],
                in_doubt=1,
                oldest_in_doubt=NOW,
            )
        ],
        replicas=[admin_pb2.ReplicaInfo(name="gateway", live=True, started_at=NOW)],
        throughput=[
            admin_pb2.ThroughputBucket(start=NOW, seconds=10, committed=30, aborted=2),
            admin_pb2.ThroughputBucket(start=NOW, seconds=10, committed=10, aborted=0),
        ],
        open_payments=3,
        oldest_open_payment=NOW,
        undecided_payments=1,
        audit_head_sequence=77,
        audit_head_hash="ab" * 32,
        last_event_sequence=900,
    )


def render(name: str, **context: Any) -> str:
    values = {"session": SESSION, "csrf": SESSION.csrf, "outcome": None, **context}
    return TEMPLATES.env.get_template(name).render(values)


def test_the_overview_shows_every_figure_when_the_gateway_serves_them() -> None:
    audit = admin_pb2.ListAuditResponse(head_sequence=77, head_hash="cd" * 32)
    page = render(
        "admin_overview.html",
        summary=overview(),
        banks=None,
        chart=throughput_chart(overview().throughput),
        report=report(agreed=False),
        has_reconcile=True,
        audit=audit,
        has_audit=True,
    )
    assert "1234.56 USD" in page and "1.00 USD" in page  # totals and held, per bank
    assert "2.1" in page  # 42 payments in 20 s
    assert "undecided at the gateway" in page
    assert "#77" in page and "cdcdcdcd" in page
    assert "1 finding(s)" in page and "HOLD_LEFT" in page
    assert "&lt;b&gt;held&lt;/b&gt;" in page  # a finding's words are text
    assert "not available" not in page
    agreed = render(
        "admin_overview.html",
        summary=overview(),
        banks=None,
        chart=None,
        report=report(agreed=True),
        has_reconcile=True,
        audit=None,
        has_audit=True,
    )
    assert "the books agree" in agreed and "#77" in agreed  # the head from the overview


def test_the_overview_says_what_the_gateway_does_not_serve_yet() -> None:
    banks = SimpleNamespace(banks=[SimpleNamespace(name="alpha", address="a:1", serving=False)])
    page = render(
        "admin_overview.html",
        summary=None,
        banks=banks,
        chart=None,
        report=None,
        has_reconcile=False,
        audit=None,
        has_audit=False,
    )
    assert "not serving" in page
    assert page.count("not available") >= 4
    assert "Admin/GetOverview" in page and "Admin/ListAudit" in page
    assert "Run reconcile" in page


def test_each_event_is_described_in_words_with_a_link_to_its_payment() -> None:
    payment = gateway_pb2.Payment(
        payment_id="pay_9",
        payer=common_pb2.AccountRef(bank="alpha", account="A-1"),
        payee=common_pb2.AccountRef(bank="beta", account="B-<2>"),
        amount=money(1234),
        reason_code="INSUFFICIENT_FUNDS",
    )
    aborted = events_pb2.Event(
        sequence=5, type=events_pb2.EVENT_TYPE_PAYMENT_ABORTED, occurred_at=NOW, payment=payment
    )
    shown = describe(aborted)
    assert shown["type"] == "PAYMENT_ABORTED"
    assert shown["summary"] == "alpha/A-1 → beta/B-<2> 12.34 USD (INSUFFICIENT_FUNDS)"
    assert shown["url"] == "/admin/payments/pay_9"
    assert shown["sequence"] == "5" and shown["occurred_at"].endswith("UTC")
    deposit = events_pb2.Event(
        sequence=6,
        type=events_pb2.EVENT_TYPE_DEPOSIT_APPLIED,
        deposit=events_pb2.DepositEvent(
            account=common_pb2.AccountRef(bank="gamma", account="G-1"),
            amount=money(500),
            admin="root",
        ),
    )
    assert describe(deposit)["summary"] == "5.00 USD to gamma/G-1 by root"
    assert describe(deposit)["url"] == ""
    user = events_pb2.Event(
        sequence=7,
        type=events_pb2.EVENT_TYPE_USER_DISABLED,
        user=admin_pb2.User(username="zed", role="customer"),
    )
    assert describe(user)["summary"] == "zed (customer)"


def _request(headers: dict[str, str], query: str = "") -> Request:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "query_string": query.encode()})


def test_a_stream_resumes_from_last_event_id_else_after() -> None:
    assert cursor(_request({})) is None
    assert cursor(_request({}, "after=41")) == 41
    assert cursor(_request({"last-event-id": "42"}, "after=41")) == 42
    assert cursor(_request({"last-event-id": "x"}, "after=-1")) is None
    assert cursor(_request({}, "after=" + "9" * 30)) is None


def test_the_throughput_chart_is_text_and_shapes_only() -> None:
    buckets = [SimpleNamespace(seconds=10, committed=n, aborted=n % 2) for n in range(30)]
    svg = throughput_chart(buckets)
    assert svg.startswith("<svg") and "<script" not in svg and "style" not in svg
    assert svg.count("<rect") == 30 + 14  # a committed bar each but the empty one, 15 aborted
    assert "450 payments decided in the last 300 s" in svg
    assert "<rect" not in throughput_chart([])
