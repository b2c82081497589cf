"""Hand-made payment traces, as the gateway's GetPaymentTrace would answer them: one for each
story a drawing must tell (committed, aborted for each cause, recovered, taken over, split,
refunded, a refund, a newer gateway's unknown step)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from minipay.client.trace import PaymentTrace
from minipay.v1 import common_pb2, gateway_pb2

T0 = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
PAYMENT_ID = "pay_7c1e4f0a9b2d4e6f8a0b1c2d3e4f5a6b"
REFUND_ID = "pay_0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4"

K = gateway_pb2
RECORDED, VOTED, DECIDED = (
    K.TRACE_STEP_KIND_RECORDED,
    K.TRACE_STEP_KIND_VOTED,
    K.TRACE_STEP_KIND_DECIDED,
)
ACKNOWLEDGED, NOT_ACKNOWLEDGED = K.TRACE_STEP_KIND_ACKNOWLEDGED, K.TRACE_STEP_KIND_NOT_ACKNOWLEDGED
ASKED, TAKEN_OVER, REFUND = (
    K.TRACE_STEP_KIND_ASKED,
    K.TRACE_STEP_KIND_TAKEN_OVER,
    K.TRACE_STEP_KIND_REFUND,
)
FINISHED, REPLAYED = K.TRACE_STEP_KIND_FINISHED, K.TRACE_STEP_KIND_REPLAYED


def stamp(ms: int) -> timestamp_pb2.Timestamp:
    moment = timestamp_pb2.Timestamp()
    moment.FromDatetime(T0 + timedelta(milliseconds=ms))
    return moment


def step(
    kind: int,
    at: int,
    *,
    sent: int | None = None,
    replica: str = "gateway",
    bank: str = "",
    outcome: str = "",
    detail: str = "",
    in_round: str = "",
    **attributes: str,
) -> gateway_pb2.TraceStep:
    """A step taken AT milliseconds after T0 (its message sent at SENT)."""
    made = gateway_pb2.TraceStep(
        kind=kind,  # type: ignore[arg-type]  # an int: a newer gateway's kind too
        at=stamp(at),
        replica=replica,
        bank=bank,
        round=in_round,
        outcome=outcome,
        detail=detail,
        attributes=attributes,
    )
    if sent is not None:
        made.sent_at.CopyFrom(stamp(sent))
    return made


def account(bank: str, number: str) -> common_pb2.AccountRef:
    return common_pb2.AccountRef(bank=bank, account=number)


def usd(minor_units: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency="USD")


def payment(
    status: int = K.PAYMENT_STATUS_COMMITTED,
    reason_code: str = "",
    *,
    payment_id: str = PAYMENT_ID,
    payer: common_pb2.AccountRef | None = None,
    payee: common_pb2.AccountRef | None = None,
    amount: int = 1234,
    shares: tuple[tuple[common_pb2.AccountRef, int], ...] = (),
    refund_of: str = "",
) -> gateway_pb2.Payment:
    """alpha/A-1 pays beta/B-1 12.34 USD, as the payer sees it."""
    made = gateway_pb2.Payment(
        payment_id=payment_id,
        direction=K.DIRECTION_OUTGOING,
        payer=payer or account("alpha", "A-1"),
        amount=usd(amount),
        status=status,  # type: ignore[arg-type]
        reason_code=reason_code,
        created_at=stamp(0),
        kind=K.PAYMENT_KIND_REFUND if refund_of else K.PAYMENT_KIND_PAYMENT,
        refund_of=refund_of,
        shares=[gateway_pb2.Share(payee=to, amount=usd(part)) for to, part in shares],
    )
    if not shares:
        made.payee.CopyFrom(payee or account("beta", "B-1"))
    return made


def answer(paid: gateway_pb2.Payment, *steps: gateway_pb2.TraceStep) -> PaymentTrace:
    response = gateway_pb2.GetPaymentTraceResponse(payment=paid, steps=steps)
    return PaymentTrace.from_message(response, "req-trace-1")


def recorded(replica: str = "gateway") -> gateway_pb2.TraceStep:
    return step(RECORDED, 0, replica=replica, request_id="req-pay-1", certificate="client-1")


def yes(bank: str, sent: int, at: int, replica: str = "gateway") -> gateway_pb2.TraceStep:
    return step(VOTED, at, sent=sent, bank=bank, outcome="YES", replica=replica, in_round="7.12")


def ack(
    bank: str, sent: int, at: int, outcome: str = "COMMIT", **attributes: str
) -> gateway_pb2.TraceStep:
    replica = attributes.pop("replica", "gateway")
    return step(
        ACKNOWLEDGED, at, sent=sent, bank=bank, outcome=outcome, replica=replica, **attributes
    )


def committed_steps() -> list[gateway_pb2.TraceStep]:
    """Two banks vote yes; beta's Commit rides on the Prepare of a later round."""
    return [
        recorded(),
        yes("alpha", 1, 4),
        yes("beta", 1, 6),
        step(DECIDED, 7, outcome="COMMIT", detail="every vote yes"),
        ack("alpha", 7, 9),
        ack("beta", 15, 18, via="prepare"),
        step(FINISHED, 18),
    ]


def committed() -> PaymentTrace:
    return answer(payment(), *committed_steps())


def aborted_insufficient_funds() -> PaymentTrace:
    return answer(
        payment(K.PAYMENT_STATUS_ABORTED, "INSUFFICIENT_FUNDS"),
        recorded(),
        step(
            VOTED,
            3,
            sent=1,
            bank="alpha",
            outcome="INSUFFICIENT_FUNDS",
            detail="insufficient funds",
        ),
        yes("beta", 1, 5),
        step(DECIDED, 5, outcome="ABORT", detail="alpha voted no: INSUFFICIENT_FUNDS"),
        ack("beta", 5, 8, "ABORT"),
        step(FINISHED, 8),
    )


def aborted_timeout() -> PaymentTrace:
    """beta does not vote within 2 s; the Abort to it goes unanswered once, then is re-sent."""
    return answer(
        payment(K.PAYMENT_STATUS_ABORTED, "TIMEOUT"),
        recorded(),
        yes("alpha", 1, 3),
        step(VOTED, 2001, sent=1, bank="beta", outcome="TIMEOUT", detail="no vote in 2000 ms"),
        step(DECIDED, 2001, outcome="ABORT", detail="beta did not vote within the timeout"),
        ack("alpha", 2001, 2004, "ABORT"),
        step(NOT_ACKNOWLEDGED, 3001, sent=2001, bank="beta", outcome="ABORT"),
        ack("beta", 6001, 6003, "ABORT"),
        step(FINISHED, 6003),
    )


def aborted_bank_unavailable() -> PaymentTrace:
    return answer(
        payment(K.PAYMENT_STATUS_ABORTED, "BANK_UNAVAILABLE"),
        recorded(),
        yes("alpha", 1, 3),
        step(
            VOTED, 2, sent=1, bank="beta", outcome="BANK_UNAVAILABLE", detail="connection refused"
        ),
        step(DECIDED, 3, outcome="ABORT", detail="beta could not be reached"),
        ack("alpha", 3, 5, "ABORT"),
        step(FINISHED, 5),
    )


def recovered() -> PaymentTrace:
    """beta is killed after voting yes; restarted, it asks for the decision."""
    return answer(
        payment(),
        recorded(),
        yes("alpha", 1, 3),
        yes("beta", 1, 4),
        step(DECIDED, 4, outcome="COMMIT", detail="every vote yes"),
        ack("alpha", 4, 6),
        step(NOT_ACKNOWLEDGED, 1004, sent=4, bank="beta", outcome="COMMIT"),
        step(ASKED, 4212, sent=4210, bank="beta", outcome="COMMIT"),
        step(FINISHED, 4212),
    )


def taken_over() -> PaymentTrace:
    """The gateway decides and is killed before telling the banks; gateway-2 takes over."""
    return answer(
        payment(),
        recorded(),
        yes("alpha", 1, 3),
        yes("beta", 1, 4),
        step(DECIDED, 5, outcome="COMMIT", detail="every vote yes"),
        step(TAKEN_OVER, 5012, replica="gateway-2", from_replica="gateway"),
        ack("alpha", 5012, 5015, replica="gateway-2"),
        ack("beta", 5012, 5016, replica="gateway-2"),
        step(FINISHED, 5016, replica="gateway-2"),
    )


def split() -> PaymentTrace:
    """alpha/A-1 pays three payees at three banks, all or nothing."""
    payees = (("beta", "B-1", 1000), ("gamma", "C-1", 2000), ("delta", "D-1", 3000))
    return answer(
        payment(amount=6000, shares=tuple((account(b, n), m) for b, n, m in payees)),
        recorded(),
        yes("alpha", 1, 3),
        yes("beta", 1, 4),
        yes("gamma", 1, 5),
        yes("delta", 1, 6),
        step(DECIDED, 6, outcome="COMMIT", detail="every vote yes"),
        *(
            ack(bank, 6, 8 + number)
            for number, bank in enumerate(("alpha", "beta", "gamma", "delta"))
        ),
        step(FINISHED, 11),
    )


def refunded() -> PaymentTrace:
    """The committed payment, and a minute later its payee refunds 5.00 of it."""
    steps = committed_steps()
    steps.append(
        step(REFUND, 61000, outcome="COMMITTED", refund_id=REFUND_ID, amount_minor_units="500")
    )
    return answer(payment(), *steps)


def refund() -> PaymentTrace:
    """The refund itself: beta/B-1 gives 5.00 back to alpha/A-1."""
    return answer(
        payment(
            payment_id=REFUND_ID,
            payer=account("beta", "B-1"),
            payee=account("alpha", "A-1"),
            amount=500,
            refund_of=PAYMENT_ID,
        ),
        recorded(),
        yes("beta", 1, 3),
        yes("alpha", 1, 4),
        step(DECIDED, 4, outcome="COMMIT", detail="every vote yes"),
        ack("beta", 4, 6),
        ack("alpha", 4, 7),
        step(FINISHED, 7),
    )


def unknown_kind() -> PaymentTrace:
    """A newer gateway's trace: a kind this client does not know, and one left unspecified."""
    steps = committed_steps()
    steps.insert(3, step(42, 6, bank="beta", outcome="FAST", detail="a newer step"))
    steps.insert(4, step(0, 6))
    return answer(payment(), *steps)


CASES: dict[str, Callable[[], PaymentTrace]] = {
    "committed": committed,
    "aborted-insufficient-funds": aborted_insufficient_funds,
    "aborted-timeout": aborted_timeout,
    "aborted-bank-unavailable": aborted_bank_unavailable,
    "recovered": recovered,
    "taken-over": taken_over,
    "split": split,
    "refunded": refunded,
    "refund": refund,
    "unknown-kind": unknown_kind,
}
