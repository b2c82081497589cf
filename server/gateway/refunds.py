"""Refunds, in plain Python: who may refund which payment, the refund a request asks for
(``refund_order``), and the answer when the database refused to reserve it.

A refund is a payment of its own, from the original's payee back to its payer, linked to the
original by ``refund_of``; it runs through the same rounds as every payment. The rule that its
refunds never exceed a payment's amount is decided by the database, in the round that records
the refund (``payment_log.record``); what this module checks before is only to answer early,
and nothing here is trusted to keep money safe."""

from __future__ import annotations

from minipay.errors import ErrorReason
from server.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    MinipayError,
    PermissionDenied,
)
from server.common.vocabulary import Status
from server.gateway.history import not_found
from server.gateway.payment_state import PaymentOrder, PaymentView, status_of


def check_customer_may_refund(
    payment: PaymentView | None, payment_id: str, bank: str, account: str
) -> PaymentView:
    """PAYMENT, if the owner of BANK/ACCOUNT may refund it: its payee, once it committed.
    Whoever may not even see it learns nothing of it."""
    if payment is None:
        raise not_found(payment_id)
    paid = (payment.to_bank, payment.to_account) == (bank, account)
    made = (payment.from_bank, payment.from_account) == (bank, account)
    if not made and not (paid and status_of(payment.state) is Status.COMMITTED):
        raise not_found(payment_id)
    if not paid:
        raise PermissionDenied(
            "only a payment's payee can refund it, and you paid this one",
            ErrorReason.REFUND_NOT_ALLOWED,
            metadata={"payment_id": payment.id},
        )
    return check_refundable(payment)


def check_refundable(payment: PaymentView) -> PaymentView:
    """PAYMENT, if it is one that can be refunded at all: committed, and not a refund."""
    status = status_of(payment.state)
    if payment.refund_of is not None:
        raise not_refundable(payment, "it is a refund itself; a refund cannot be refunded")
    if status is not Status.COMMITTED:
        raise not_refundable(payment, f"it is {status.value.lower()}, not committed")
    return payment


def not_refundable(payment: PaymentView, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"payment {payment.id} cannot be refunded: {why}",
        ErrorReason.PAYMENT_NOT_REFUNDABLE,
        metadata={"payment_id": payment.id, "status": status_of(payment.state).value},
    )


def refund_order(
    original: PaymentView,
    payer: str,
    idempotency_key: str,
    amount: int | None = None,
    currency: str = "",
) -> PaymentOrder:
    """The refund of ORIGINAL that PAYER (its payee, or an admin) asks for: AMOUNT minor
    units in CURRENCY, which must be the original's, or (None) all that is left."""
    if amount is not None and currency != original.currency:
        raise InvalidArgument(
            f"amount.currency must be the payment's currency, {original.currency}, not {currency}",
            field="amount.currency",
        )
    return PaymentOrder(
        payer=payer,
        from_bank=original.to_bank,
        from_account=original.to_account,
        to_bank=original.from_bank,
        to_account=original.from_account,
        amount=0 if amount is None else amount,
        currency=original.currency,
        idempotency_key=idempotency_key,
        refund_of=original.id,
        whole_rest=amount is None,
        # A split payment's payee (``original`` as they see it) refunds their own share.
        of_share=original.is_split,
    )


def refused(order: PaymentOrder, original: PaymentView | None) -> MinipayError:
    """Why the database refused to reserve ORDER's refund, from ORIGINAL as it stood in the
    transaction that tried (None: it is gone)."""
    if original is not None:  # a split payment as the refunding payee sees it
        original = original.seen_by(order.from_bank, order.from_account)
    if original is None or (original.to_bank, original.to_account) != (
        order.from_bank,
        order.from_account,
    ):
        return not_found(order.refund_of or "")
    try:
        check_refundable(original)
    except FailedPrecondition as error:
        return error
    left = original.refundable
    asked = "all that is left" if order.whole_rest else _minor_units(order.amount)
    already = "it is refunded in full already" if left == 0 else f"{_minor_units(left)} left"
    return FailedPrecondition(
        f"a refund of {asked} is more than what is left to refund of payment {original.id}: "
        f"{already} (its amount less every refund committed or in flight)",
        ErrorReason.REFUND_EXCEEDS_PAYMENT,
        metadata={"payment_id": original.id, "refundable_minor_units": str(left)},
    )


def _minor_units(amount: int) -> str:
    return f"{amount} minor unit" + ("" if amount == 1 else "s")
