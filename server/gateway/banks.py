"""The gateway's one seam to the banks: a mutual-TLS channel per bank and the calls the
gateway makes on it. Everything above this module calls plain async methods with plain
values (legs, votes, acknowledged ids, credential checks, accounts and customers) and never
sees a stub, a bank message or a status code: a failed call becomes a domain result here (a
no vote, an unacknowledged decision) or a domain error of its own kind.

Nothing a caller of the gateway sends reaches a bank unbounded: the one piece of caller
metadata passed on is the request id, each of at most MAX_REQUEST_ID_LENGTH plain ASCII
characters (any other is left out), in a header of at most MAX_REQUEST_IDS_BYTES per call.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from minipay.errors import DOMAIN, ErrorReason
from minipay.service_names import bank_server_name
from minipay.v1 import bank_pb2, bank_pb2_grpc, common_pb2
from server.common import errors, validation
from server.common.logs import REQUEST_ID
from server.common.tls import TlsFiles, channel_credentials, channel_options
from server.common.vocabulary import Leg, Reason, Side
from server.gateway import reconcile
from server.gateway.payment_state import YES, Delivered, Prepared, Vote, no_vote

ACCOUNTS_TIMEOUT = 10.0
# A page of a bank's books, or its totals (read over the whole ledger, in one snapshot).
LEDGER_TIMEOUT = 60.0
# A bank refuses a call whose metadata passes 8 KiB: the request ids a call carries (one per
# payment in a round) stay far below, and an id too long to quote is left out.
MAX_REQUEST_ID_LENGTH = 64
MAX_REQUEST_IDS_BYTES = 1024
# Letters, digits and "_.:-": what any metadata and log can carry (a comma separates ids).
_PASSED_ON_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
_SIDES = {Side.DEBIT: bank_pb2.LEG_SIDE_DEBIT, Side.CREDIT: bank_pb2.LEG_SIDE_CREDIT}
_SIDE_NAMES = {value: side.value for side, value in _SIDES.items()}
# A bank's refusal the gateway's caller sees as it is, each as its own kind of error.
_PASSED_ON: dict[grpc.StatusCode, type[errors.MinipayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
}
_NOT_ANSWERING = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class AccountInfo:
    """An account as its bank reports it: amounts in minor units of ``currency``."""

    number: str
    currency: str
    balance: int
    available: int  # the balance less what outgoing payments still being decided hold
    held: int
    disabled: bool


@dataclass(frozen=True)
class CustomerInfo:
    username: str
    name: str
    role: str
    disabled: bool
    account: AccountInfo | None  # None: a customer with no account


@dataclass(frozen=True)
class NewCustomer:
    """A customer for a bank to open, with one account; the bank checks every field."""

    username: str
    name: str
    password: str
    role: str
    account: str
    initial_balance: int  # minor units
    currency: str  # empty: the bank's default


@dataclass(frozen=True)
class CredentialCheck:
    """A bank's answer to "is this the customer's password (and account)?"."""

    ok: bool
    role: str = ""
    account: str = ""
    disabled: bool = False


def request_metadata(request_ids: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Metadata for a call to a bank: the request ids it serves (one, or a round's worth),
    those short and plain enough to pass on, as many as fit in MAX_REQUEST_IDS_BYTES."""
    header = ""
    for request_id in dict.fromkeys(request_ids):
        if not _PASSED_ON_ID.fullmatch(request_id):
            continue
        joined = f"{header},{request_id}" if header else request_id
        if len(joined) > MAX_REQUEST_IDS_BYTES:
            break
        header = joined
    return (("x-request-id", header),) if header else ()


def _own_request_id() -> tuple[str, ...]:
    """The request id of the call being served, if any: for a call made on its behalf."""
    return (REQUEST_ID.get(),) if REQUEST_ID.get() else ()


class BankClient:
    """One bank, reached over its own channel."""

    def __init__(self, name: str, address: str, credentials: grpc.ChannelCredentials) -> None:
        self.name = name
        self.address = address
        # TLS refuses a server on this address that cannot prove it is this very bank.
        self._channel = grpc.aio.secure_channel(
            address, credentials, channel_options(bank_server_name(name))
        )
        self._participant = bank_pb2_grpc.ParticipantStub(self._channel)
        self._accounts = bank_pb2_grpc.AccountsStub(self._channel)
        self._ledger = bank_pb2_grpc.LedgerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    # -- the participant: phase one and phase two ---------------------------------------------

    async def prepare(
        self,
        legs: Sequence[Leg],
        timeout: float,
        request_ids: Sequence[str] = (),
        commit: Sequence[str] = (),
        abort: Sequence[str] = (),
    ) -> Prepared:
        """This bank's vote on each payment the legs belong to (a payment the bank gave no
        vote on, because the call failed, timed out or left it out, is a no), and which of
        the decisions on earlier payments riding along it applied."""
        payment_ids = list(dict.fromkeys(leg.payment_id for leg in legs))
        request = bank_pb2.PrepareRequest(commit=commit, abort=abort)
        for leg in legs:  # set in place: a round's hundreds of legs, without nested messages
            message = request.legs.add()
            message.payment_id = leg.payment_id
            message.side = _SIDES[leg.side]
            message.account = leg.account
            message.amount.minor_units = leg.amount
            message.amount.currency = leg.currency
        try:
            answer = await self._participant.Prepare(
                request, timeout=timeout, metadata=request_metadata(request_ids)
            )
        except grpc.aio.AioRpcError as error:
            code = (
                Reason.TIMEOUT
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else Reason.BANK_UNAVAILABLE
            )
            failed = no_vote(code, f"bank {self.name}: {code.sentence}")
            return Prepared(dict.fromkeys(payment_ids, failed), set())
        votes: dict[str, Vote] = {}
        for message in answer.votes:
            # A payment with two legs here is yes only if both are.
            if message.value == bank_pb2.VOTE_VALUE_YES:
                votes.setdefault(message.payment_id, YES)
            else:
                code = Reason.parse(message.reason_code)
                votes[message.payment_id] = no_vote(code, message.reason)
        unanswered = no_vote(Reason.ABORTED, f"bank {self.name} gave no vote")
        return Prepared(
            {payment_id: votes.get(payment_id, unanswered) for payment_id in payment_ids},
            set(answer.acknowledged),
        )

    async def deliver(
        self,
        commit: bool,
        payment_ids: Sequence[str],
        timeout: float,
        request_ids: Sequence[str] = (),
    ) -> Delivered:
        """Sends Commit or Abort; the payments the bank acknowledged (none if the call failed:
        they are sent again), and how a failed call failed."""
        ids = list(payment_ids)
        try:
            if commit:
                answer = await self._participant.Commit(
                    bank_pb2.CommitRequest(payment_ids=ids),
                    timeout=timeout,
                    metadata=request_metadata(request_ids),
                )
            else:
                answer = await self._participant.Abort(
                    bank_pb2.AbortRequest(payment_ids=ids),
                    timeout=timeout,
                    metadata=request_metadata(request_ids),
                )
        except grpc.aio.AioRpcError as error:
            unreachable = error.code() in _NOT_ANSWERING
            return Delivered(set(), refused=not unreachable, unreachable=unreachable)
        return Delivered(set(answer.acknowledged))

    # -- the bank's customers and accounts -----------------------------------------------------

    async def verify_credentials(
        self, username: str, password: str, account: str
    ) -> CredentialCheck:
        answer = await self._account_call(
            self._accounts.VerifyCredentials,
            bank_pb2.VerifyCredentialsRequest(
                username=username, password=password, account=account
            ),
        )
        return CredentialCheck(answer.ok, answer.role, answer.account, answer.disabled)

    async def account(self, number: str) -> AccountInfo:
        answer: bank_pb2.GetAccountResponse = await self._account_call(
            self._accounts.GetAccount, bank_pb2.GetAccountRequest(account=number)
        )
        return _account_info(answer.account)

    async def create_customer(self, customer: NewCustomer) -> CustomerInfo:
        request = bank_pb2.CreateCustomerRequest(
            username=customer.username,
            name=customer.name,
            password=customer.password,
            role=customer.role,
            account=customer.account,
            initial_balance=common_pb2.Money(
                minor_units=customer.initial_balance, currency=customer.currency
            ),
        )
        answer: bank_pb2.CreateCustomerResponse = await self._account_call(
            self._accounts.CreateCustomer, request
        )
        return _customer_info(answer.customer)

    async def list_customers(self) -> list[CustomerInfo]:
        answer: bank_pb2.ListCustomersResponse = await self._account_call(
            self._accounts.ListCustomers, bank_pb2.ListCustomersRequest()
        )
        return [_customer_info(customer) for customer in answer.customers]

    async def set_customer_disabled(self, username: str, disabled: bool) -> CustomerInfo:
        answer: bank_pb2.SetCustomerDisabledResponse = await self._account_call(
            self._accounts.SetCustomerDisabled,
            bank_pb2.SetCustomerDisabledRequest(username=username, disabled=disabled),
        )
        return _customer_info(answer.customer)

    async def deposit(
        self, account: str, amount: int, currency: str, deposit_id: str
    ) -> AccountInfo:
        answer: bank_pb2.ApplyDepositResponse = await self._account_call(
            self._accounts.ApplyDeposit,
            bank_pb2.ApplyDepositRequest(
                account=account,
                amount=common_pb2.Money(minor_units=amount, currency=currency),
                deposit_id=deposit_id,
            ),
        )
        return _account_info(answer.account)

    # -- the bank's books, for the reconcile ---------------------------------------------------

    async def books(self, accounts_only: bool = False) -> reconcile.BankBooks:
        """The bank's totals and the disagreements within its books, in one snapshot (with
        ACCOUNTS_ONLY: only the accounts' totals and the payments in doubt)."""
        answer: bank_pb2.GetBooksResponse = await self._ledger_call(
            self._ledger.GetBooks, bank_pb2.GetBooksRequest(accounts_only=accounts_only)
        )
        return reconcile.BankBooks(
            currencies=tuple(
                reconcile.CurrencyTotals(
                    c.currency, c.balances, c.held, c.incoming, c.deposits, c.debits, c.credits
                )
                for c in answer.currencies
            ),
            accounts=answer.accounts,
            payments=answer.payments,
            ledger_entries=answer.ledger_entries,
            in_doubt=answer.in_doubt,
            oldest_in_doubt=answer.oldest_in_doubt or None,
            mismatches=tuple(
                reconcile.AccountMismatch(
                    m.account,
                    m.currency,
                    m.balance,
                    m.ledger_sum,
                    m.held,
                    m.open_holds,
                    m.incoming,
                    m.open_credits,
                )
                for m in answer.mismatches
            ),
            mismatches_total=answer.mismatches_total,
            stray_entries=tuple(
                reconcile.BankEntry(e.id, e.account, e.amount) for e in answer.stray_entries
            ),
            stray_entries_total=answer.stray_entries_total,
        )

    async def bank_payments_page(
        self, after: str, page_size: int
    ) -> tuple[reconcile.BankPaymentPage, bool]:
        """Up to PAGE_SIZE of the bank's payment records after AFTER, in id order, as columns
        (no object per record: the event loop serves payments meanwhile), and whether they
        are the last."""
        answer: bank_pb2.ListBankPaymentsResponse = await self._ledger_call(
            self._ledger.ListBankPayments,
            bank_pb2.ListBankPaymentsRequest(after_payment_id=after, page_size=page_size),
        )
        try:
            page = reconcile.BankPaymentPage(
                list(answer.payment_ids),
                list(answer.states),
                list(answer.created_at),
                list(answer.leg_counts),
                list(map(_SIDE_NAMES.get, answer.leg_sides, itertools.repeat(""))),
                list(answer.leg_accounts),
                list(answer.leg_amounts),
                list(answer.leg_currencies),
                list(answer.entry_counts),
                list(answer.entry_ids),
                list(answer.entry_accounts),
                list(answer.entry_amounts),
            )
        except ValueError as error:
            raise errors.Unavailable(f"bank {self.name} sent a bad page: {error}") from None
        return page, answer.done

    async def deposits_page(
        self, after: str, page_size: int
    ) -> tuple[list[reconcile.BankDeposit], bool]:
        """Up to PAGE_SIZE of the bank's deposit entries after AFTER, in deposit id order."""
        answer: bank_pb2.ListDepositsResponse = await self._ledger_call(
            self._ledger.ListDeposits,
            bank_pb2.ListDepositsRequest(after_deposit_id=after, page_size=page_size),
        )
        return [
            reconcile.BankDeposit(
                d.deposit_id, d.account, d.amount.minor_units, d.amount.currency, d.created_at
            )
            for d in answer.deposits
        ], answer.done

    async def _ledger_call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=LEDGER_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None

    async def serving(self, timeout: float = 1.0) -> bool:
        try:
            answer = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    async def _account_call(self, method: Any, request: Any) -> Any:
        try:
            return await method(
                request, timeout=ACCOUNTS_TIMEOUT, metadata=request_metadata(_own_request_id())
            )
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None

    def _error(self, error: grpc.aio.AioRpcError) -> errors.MinipayError:
        """The bank's refusal as the same kind of error, with its reason and details; a bank
        that did not answer as UNAVAILABLE."""
        kind = _PASSED_ON.get(error.code())
        if kind is not None:
            info = _error_info(error)
            reason = _known_reason(info.reason) if info is not None else None
            metadata = {**(info.metadata if info is not None else {}), "bank": self.name}
            return kind(
                error.details() or error.code().name,
                reason,
                field=metadata.get("field", ""),
                metadata=metadata,
            )
        if error.code() in _NOT_ANSWERING:
            return errors.Unavailable(
                f"bank {self.name} is not answering right now; try again shortly",
                ErrorReason.BANK_UNAVAILABLE,
                metadata={"bank": self.name},
            )
        return errors.Internal(f"bank {self.name} refused the request ({error.code().name})")


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of a bank's error, if it sent one (a peer's bytes: checked)."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        return None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == DOMAIN:
            return info
    return None


def _known_reason(value: str) -> ErrorReason | None:
    try:
        return ErrorReason(value)
    except ValueError:
        return None


def _account_info(message: bank_pb2.AccountInfo) -> AccountInfo:
    return AccountInfo(
        number=message.account,
        currency=message.balance.currency,
        balance=message.balance.minor_units,
        available=message.available.minor_units,
        held=message.held.minor_units,
        disabled=message.disabled,
    )


def _customer_info(message: bank_pb2.CustomerInfo) -> CustomerInfo:
    return CustomerInfo(
        username=message.username,
        name=message.name,
        role=message.role,
        disabled=message.disabled,
        account=_account_info(message.account) if message.HasField("account") else None,
    )


class BankDirectory:
    """Every bank the gateway knows, by name; the coordinator's ``Participants``."""

    def __init__(self, addresses: dict[str, str], tls: TlsFiles) -> None:
        credentials = channel_credentials(tls)
        self._banks = {
            name: BankClient(name, address, credentials) for name, address in addresses.items()
        }

    @property
    def names(self) -> list[str]:
        return sorted(self._banks)

    def all(self) -> list[BankClient]:
        return [self._banks[name] for name in self.names]

    def get(self, name: str) -> BankClient:
        bank = self._banks.get(validation.bank_name(name))
        if bank is None:
            raise errors.NotFound(
                f"unknown bank {name!r}; known banks: {', '.join(self.names)}",
                ErrorReason.BANK_NOT_FOUND,
                metadata={"bank": name[:64]},
            )
        return bank

    async def prepare(
        self,
        bank: str,
        legs: Sequence[Leg],
        timeout: float,
        request_ids: Sequence[str],
        commit: Sequence[str] = (),
        abort: Sequence[str] = (),
    ) -> Prepared:
        return await self.get(bank).prepare(legs, timeout, request_ids, commit, abort)

    async def deliver(
        self,
        bank: str,
        commit: bool,
        payment_ids: Sequence[str],
        timeout: float,
        request_ids: Sequence[str] = (),
    ) -> Delivered:
        return await self.get(bank).deliver(commit, payment_ids, timeout, request_ids)

    async def verify_credentials(
        self, bank: str, username: str, password: str, account: str
    ) -> CredentialCheck:
        return await self.get(bank).verify_credentials(username, password, account)

    async def close(self) -> None:
        for bank in self._banks.values():
            await bank.close()
