"""A bank's gRPC servicers. Thin: translate messages, call the participant and ledger rules
inside one unit of work, translate back."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from sqlalchemy.orm import Session

from minipay.v1 import bank_pb2, bank_pb2_grpc, common_pb2
from server.bank import accounts, books, participant
from server.common import validation
from server.common.db import Database
from server.common.errors import InvalidArgument, Unavailable
from server.common.faults import Faults
from server.common.passwords import Passwords
from server.common.vocabulary import Leg, Side

_SIDES = {bank_pb2.LEG_SIDE_DEBIT: Side.DEBIT, bank_pb2.LEG_SIDE_CREDIT: Side.CREDIT}
_SIDE_ENUMS = {side: enum for enum, side in _SIDES.items()}
_SIDE_ENUMS_BY_NAME = {side.value: enum for enum, side in _SIDES.items()}


def money(minor_units: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency=currency)


def account_info(view: accounts.AccountView) -> bank_pb2.AccountInfo:
    return bank_pb2.AccountInfo(
        account=view.number,
        balance=money(view.balance, view.currency),
        available=money(view.available, view.currency),
        held=money(view.held, view.currency),
        disabled=view.disabled,
    )


def customer_info(view: accounts.CustomerView) -> bank_pb2.CustomerInfo:
    info = bank_pb2.CustomerInfo(
        username=view.username, name=view.name, role=view.role, disabled=view.disabled
    )
    if view.account is not None:
        info.account.CopyFrom(account_info(view.account))
    return info


def _payment_ids(ids: Iterable[str]) -> list[str]:
    checked = list(ids)
    if any(not payment_id or len(payment_id) > 64 for payment_id in checked):
        raise InvalidArgument("every payment id must be 1-64 characters", field="payment_ids")
    return checked


def _leg(leg: bank_pb2.Leg) -> Leg:
    if not leg.payment_id or len(leg.payment_id) > 64:
        raise InvalidArgument(
            "every leg needs a payment_id of at most 64 characters", field="legs.payment_id"
        )
    if leg.side not in _SIDES:
        raise InvalidArgument(f"leg of payment {leg.payment_id!r} has no side", field="legs.side")
    return Leg(
        payment_id=leg.payment_id,
        side=_SIDES[leg.side],
        account=validation.account_number(leg.account),
        amount=validation.positive_amount(leg.amount.minor_units),
        currency=validation.currency(leg.amount.currency),
    )


class ParticipantService(bank_pb2_grpc.ParticipantServicer):  # type: ignore[misc]
    def __init__(self, db: Database, faults: Faults) -> None:
        self._db = db
        self._faults = faults

    async def Prepare(
        self, request: bank_pb2.PrepareRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.PrepareResponse:
        legs = [_leg(leg) for leg in request.legs]
        commits, aborts = _payment_ids(request.commit), _payment_ids(request.abort)
        await self._faults.delay("delay_prepare")
        result = await self._db.statements(
            lambda c: participant.run_round(c, legs, commits, aborts)
        )
        self._after_commits(result.committed)
        self._faults.crash_point("crash_after_vote_yes")
        return bank_pb2.PrepareResponse(
            votes=[
                bank_pb2.Vote(
                    payment_id=vote.payment_id,
                    side=_SIDE_ENUMS[vote.side],
                    value=bank_pb2.VOTE_VALUE_YES if vote.yes else bank_pb2.VOTE_VALUE_NO,
                    reason_code=vote.reason_code.value if vote.reason_code else "",
                    reason=vote.reason,
                )
                for vote in result.votes
            ],
            acknowledged=[*result.committed, *result.aborted],
        )

    def _after_commits(self, committed: list[str]) -> None:
        if committed:
            self._faults.crash_point("crash_after_commit_applied")
            if self._faults.take("drop_commit_ack"):
                raise Unavailable("fault injection: commit acknowledgement dropped")

    async def Commit(
        self, request: bank_pb2.CommitRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.CommitResponse:
        ids = _payment_ids(request.payment_ids)
        applied = await self._db.statements(lambda s: participant.commit(s, ids))
        self._after_commits(applied)
        return bank_pb2.CommitResponse(acknowledged=applied)

    async def Abort(
        self, request: bank_pb2.AbortRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.AbortResponse:
        ids = _payment_ids(request.payment_ids)
        released = await self._db.statements(lambda s: participant.abort(s, ids))
        return bank_pb2.AbortResponse(acknowledged=released)


class AccountsService(bank_pb2_grpc.AccountsServicer):  # type: ignore[misc]
    def __init__(self, db: Database, passwords: Passwords) -> None:
        self._db = db
        self._passwords = passwords

    async def VerifyCredentials(
        self, request: bank_pb2.VerifyCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.VerifyCredentialsResponse:
        def lookup(session: Session) -> tuple[str | None, str, str, bool]:
            customer = accounts.find_customer(session, request.username)
            if customer is None:
                return None, "", "", False
            numbers = [account.number for account in customer.accounts]
            account = request.account if request.account in numbers else ""
            if request.account and not account:
                return None, "", "", False  # someone else's account: same answer as a bad password
            return customer.password_hash, customer.role, account or numbers[0], customer.disabled

        password_hash, role, account, disabled = await self._db.transaction(lookup)
        ok = await self._passwords.check(request.password, password_hash)
        if not ok:
            return bank_pb2.VerifyCredentialsResponse(ok=False)
        return bank_pb2.VerifyCredentialsResponse(
            ok=True, role=role, account=account, disabled=disabled
        )

    async def GetAccount(
        self, request: bank_pb2.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.GetAccountResponse:
        view = await self._db.transaction(
            lambda s: accounts.view_account(
                accounts.get_account(s, validation.account_number(request.account))
            )
        )
        return bank_pb2.GetAccountResponse(account=account_info(view))

    async def CreateCustomer(
        self, request: bank_pb2.CreateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.CreateCustomerResponse:
        username = validation.username(request.username)
        number = validation.account_number(request.account)
        role = validation.role(request.role or "customer")
        currency = validation.currency(request.initial_balance.currency or "USD")
        balance = validation.non_negative_amount(
            request.initial_balance.minor_units, "initial_balance.minor_units"
        )
        name = validation.display_name(request.name)
        password_hash = await self._passwords.hash(validation.password(request.password))
        view = await self._db.transaction(
            lambda s: accounts.view_customer(
                accounts.open_customer(
                    s,
                    username=username,
                    name=name,
                    password_hash=password_hash,
                    role=role,
                    account_number=number,
                    currency=currency,
                    initial_balance=balance,
                )
            )
        )
        return bank_pb2.CreateCustomerResponse(customer=customer_info(view))

    async def ListCustomers(
        self, request: bank_pb2.ListCustomersRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.ListCustomersResponse:
        views = await self._db.transaction(accounts.list_customers)
        return bank_pb2.ListCustomersResponse(customers=[customer_info(v) for v in views])

    async def SetCustomerDisabled(
        self, request: bank_pb2.SetCustomerDisabledRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.SetCustomerDisabledResponse:
        view = await self._db.transaction(
            lambda s: accounts.view_customer(
                accounts.set_disabled(s, validation.username(request.username), request.disabled)
            )
        )
        return bank_pb2.SetCustomerDisabledResponse(customer=customer_info(view))

    async def ApplyDeposit(
        self, request: bank_pb2.ApplyDepositRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.ApplyDepositResponse:
        amount = validation.positive_amount(request.amount.minor_units)
        currency = validation.currency(request.amount.currency)
        deposit_id = request.deposit_id
        if not 1 <= len(deposit_id) <= 64:
            raise InvalidArgument(
                "deposit_id is required (at most 64 characters)", field="deposit_id"
            )
        view = await self._db.transaction(
            lambda s: accounts.view_account(
                accounts.deposit(
                    s, validation.account_number(request.account), amount, currency, deposit_id
                )
            )
        )
        return bank_pb2.ApplyDepositResponse(account=account_info(view))


MAX_LEDGER_PAGE = 5000


def _ledger_page_size(page_size: int) -> int:
    if not 1 <= page_size <= MAX_LEDGER_PAGE:
        raise InvalidArgument(f"page_size must be 1 to {MAX_LEDGER_PAGE}", field="page_size")
    return page_size


class LedgerService(bank_pb2_grpc.LedgerServicer):  # type: ignore[misc]
    """The bank's books for the gateway's reconcile: read only, page by page."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def ListBankPayments(
        self, request: bank_pb2.ListBankPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.ListBankPaymentsResponse:
        limit = _ledger_page_size(request.page_size)
        after = request.after_payment_id[:64]
        page = await self._db.statements(lambda c: books.list_bank_payments(c, after, limit))
        # Columns in, columns out: no message per record (a reconcile reads millions).
        return bank_pb2.ListBankPaymentsResponse(
            done=len(page.payment_ids) < limit,
            payment_ids=page.payment_ids,
            states=page.states,
            created_at=page.created_at,
            leg_counts=page.leg_counts,
            leg_sides=list(map(_SIDE_ENUMS_BY_NAME.__getitem__, page.leg_sides)),
            leg_accounts=page.leg_accounts,
            leg_amounts=page.leg_amounts,
            leg_currencies=page.leg_currencies,
            entry_counts=page.entry_counts,
            entry_ids=page.entry_ids,
            entry_accounts=page.entry_accounts,
            entry_amounts=page.entry_amounts,
        )

    async def ListDeposits(
        self, request: bank_pb2.ListDepositsRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.ListDepositsResponse:
        limit = _ledger_page_size(request.page_size)
        after = request.after_deposit_id[:64]
        rows = await self._db.statements(lambda c: books.list_deposits(c, after, limit))
        return bank_pb2.ListDepositsResponse(
            deposits=[
                bank_pb2.DepositRecord(
                    deposit_id=row.deposit_id,
                    account=row.account,
                    amount=money(row.amount, row.currency),
                    created_at=row.created_at,
                    entry_id=row.entry_id,
                )
                for row in rows
            ],
            done=len(rows) < limit,
        )

    async def GetBooks(
        self, request: bank_pb2.GetBooksRequest, context: grpc.aio.ServicerContext
    ) -> bank_pb2.GetBooksResponse:
        accounts_only = request.accounts_only
        found = await self._db.statements(lambda c: books.books(c, accounts_only))
        return bank_pb2.GetBooksResponse(
            currencies=[
                bank_pb2.CurrencyTotals(
                    currency=row.currency,
                    accounts=row.accounts,
                    balances=row.balances,
                    held=row.held,
                    incoming=row.incoming,
                    deposits=row.deposits,
                    debits=row.debits,
                    credits=row.credits,
                )
                for row in found.currencies
            ],
            accounts=found.accounts,
            payments=found.payments,
            ledger_entries=found.ledger_entries,
            in_doubt=found.in_doubt,
            oldest_in_doubt=found.oldest_in_doubt or 0.0,
            mismatches=[
                bank_pb2.AccountMismatch(
                    account=m.account,
                    currency=m.currency,
                    balance=m.balance,
                    ledger_sum=m.ledger_sum,
                    held=m.held,
                    open_holds=m.open_holds,
                    incoming=m.incoming,
                    open_credits=m.open_credits,
                )
                for m in found.mismatches
            ],
            mismatches_total=found.mismatches_total,
            stray_entries=[
                bank_pb2.LedgerEntryRecord(id=e.id, account=e.account, amount=e.amount)
                for e in found.stray_entries
            ],
            stray_entries_total=found.stray_entries_total,
            read_at=found.read_at,
        )
