"""Split payments, in plain Python: the checks of a split request and the order it makes
(``split_order``). A split payment is one payment with one debit of the total at the payer's
bank and one credit per payee; every bank involved votes, and if any votes no or does not
answer in time nothing moves anywhere (``payment_state.legs_by_bank``, the coordinator's
rounds). Its payees are stored in ``payment_payees`` (``payment_log``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from minipay.errors import ErrorReason
from minipay.money import MAX_MINOR_UNITS
from server.common import validation
from server.common.errors import InvalidArgument, NotFound
from server.gateway.payment_state import MAX_SHARES, MIN_SHARES, PaymentOrder, Share


@dataclass(frozen=True)
class AskedShare:
    """One share as the request gives it, unchecked."""

    bank: str
    account: str
    amount: int
    currency: str
    has_payee: bool = True
    has_amount: bool = True


def split_order(
    payer: str,
    from_bank: str,
    from_account: str,
    asked: Sequence[AskedShare],
    idempotency_key: str,
    banks: Collection[str],
    listed: str = "shares",
    payee: str = "payee",
) -> PaymentOrder:
    """The order of a split payment from FROM_BANK/FROM_ACCOUNT to the payees ASKED (at
    BANKS, the banks this gateway knows), or an InvalidArgument (NotFound for an unknown
    bank) naming the first field at fault. Nothing is recorded before this passes.

    The request names its payees LISTED, each payee's account PAYEE: ``shares[N].payee`` in
    Pay, ``items[N].to`` in an atomic PayBatch; the errors name the fields so."""
    if not MIN_SHARES <= len(asked) <= MAX_SHARES:
        raise InvalidArgument(
            f"a split payment has {MIN_SHARES} to {MAX_SHARES} payees, not {len(asked)}",
            field=listed,
        )
    shares: list[Share] = []
    seen: dict[tuple[str, str], int] = {}
    currency = ""
    for number, share in enumerate(asked):
        at = f"{listed}[{number}]"
        to = f"{at}.{payee}"
        if not share.has_payee or not share.bank or not share.account:
            raise InvalidArgument(f"{to}.bank and {to}.account are required", field=to)
        bank = validation.bank_name(share.bank, f"{to}.bank")
        if bank not in banks:
            raise NotFound(
                f"{at}: unknown bank {bank!r}; known banks: {', '.join(sorted(banks))}",
                ErrorReason.BANK_NOT_FOUND,
                field=f"{to}.bank",
                metadata={"bank": bank},
            )
        account = validation.account_number(share.account, f"{to}.account")
        if not share.has_amount:
            raise InvalidArgument(f"{at}.amount is required", field=f"{at}.amount")
        amount = validation.positive_amount(share.amount, f"{at}.amount.minor_units")
        this_currency = validation.currency(share.currency, f"{at}.amount.currency")
        if (bank, account) == (from_bank, from_account):
            raise InvalidArgument(
                f"{at}: you cannot pay your own account in a split payment", field=to
            )
        if (bank, account) in seen:
            raise InvalidArgument(
                f"{at}: payee {bank}/{account} is named twice "
                f"(also {listed}[{seen[(bank, account)]}]); give each payee one share",
                field=to,
            )
        if currency and this_currency != currency:
            raise InvalidArgument(
                f"{at}: every share of a split payment is in one currency: "
                f"{this_currency} is not {currency}",
                field=f"{at}.amount.currency",
            )
        seen[(bank, account)] = number
        currency = this_currency
        shares.append(Share(bank, account, amount))
    total = sum(share.amount for share in shares)
    if total > MAX_MINOR_UNITS:
        raise InvalidArgument(
            f"the {listed} add up to {total} minor units, more than the largest accepted "
            f"amount ({MAX_MINOR_UNITS})",
            field=listed,
        )
    return PaymentOrder(
        payer=payer,
        from_bank=from_bank,
        from_account=from_account,
        to_bank="",
        to_account="",
        amount=total,
        currency=currency,
        idempotency_key=validation.idempotency_key(idempotency_key),
        shares=tuple(shares),
    )
