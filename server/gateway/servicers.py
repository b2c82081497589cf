"""The gateway's gRPC servicers. Thin: check and translate the request, call the identity
service, the coordinator or a bank, translate the answer. The caller's account always comes
from their token, never from the request (an admin's refund: from the payment refunded)."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from minipay.service_names import bank_of
from minipay.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from server.common import validation
from server.common.clock import now
from server.common.db import Database
from server.common.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MinipayError,
    NotFound,
    Throttled,
    Unavailable,
)
from server.common.principal import current_claims, current_principal
from server.common.vocabulary import Status
from server.gateway import (
    audit,
    deposits,
    events,
    history,
    journal,
    overview,
    payment_log,
    reconcile,
    reconcile_run,
    reconcile_store,
    refunds,
    splits,
    trace,
    users,
)
from server.gateway.banks import BankClient, BankDirectory, CustomerInfo, NewCustomer
from server.gateway.coordinator import Coordinator
from server.gateway.event_feed import EventFeed
from server.gateway.payment_state import (
    CoordinatorState,
    Outcome,
    PaymentKind,
    PaymentOrder,
    PaymentView,
    status_of,
)
from server.gateway.rate_limit import RateLimiter
from server.interceptors.status import status_of as status_code_of

log = logging.getLogger(__name__)

_STATUS = {
    Status.PENDING: gateway_pb2.PAYMENT_STATUS_PENDING,
    Status.COMMITTED: gateway_pb2.PAYMENT_STATUS_COMMITTED,
    Status.ABORTED: gateway_pb2.PAYMENT_STATUS_ABORTED,
}
_STATUS_FILTER = {value: status for status, value in _STATUS.items()}
_DIRECTION_FILTER = {
    gateway_pb2.DIRECTION_OUTGOING: history.Direction.OUTGOING,
    gateway_pb2.DIRECTION_INCOMING: history.Direction.INCOMING,
}
_KIND = {
    PaymentKind.PAYMENT: gateway_pb2.PAYMENT_KIND_PAYMENT,
    PaymentKind.REFUND: gateway_pb2.PAYMENT_KIND_REFUND,
}
_KIND_FILTER = {value: kind for kind, value in _KIND.items()}
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 200
MAX_BATCH_ITEMS = 1000


def money(minor_units: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency=currency)


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return float(stamp.ToNanoseconds()) / 1e9


class AuthService(gateway_pb2_grpc.AuthServicer):  # type: ignore[misc]
    def __init__(self, identities: users.UserService) -> None:
        self._identities = identities

    async def Register(
        self, request: gateway_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RegisterResponse:
        saved = await self._identities.register(
            request.username,
            request.password,
            request.bank,
            request.account,
            current_principal().peer.thumbprint,
        )
        return gateway_pb2.RegisterResponse(
            username=saved.username,
            account=common_pb2.AccountRef(bank=saved.bank, account=saved.account),
        )

    async def Login(
        self, request: gateway_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.LoginResponse:
        result = await self._identities.login(
            request.username, request.password, current_principal().peer.thumbprint
        )
        return gateway_pb2.LoginResponse(
            token=result.token,
            role=result.claims.role,
            expires_at=timestamp(result.claims.expires_at),
        )

    async def Logout(
        self, request: gateway_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.LogoutResponse:
        await self._identities.logout(current_claims())
        return gateway_pb2.LogoutResponse()


class PaymentsService(gateway_pb2_grpc.PaymentsServicer):  # type: ignore[misc]
    def __init__(
        self,
        db: Database,
        banks: BankDirectory,
        coordinator: Coordinator,
        limiter: RateLimiter,
    ) -> None:
        self._db = db
        self._banks = banks
        self._coordinator = coordinator
        self._limiter = limiter

    async def GetBalance(
        self, request: gateway_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetBalanceResponse:
        claims = current_claims()
        # Read your writes: what was decided for this account reaches its bank first.
        await self._coordinator.delivery.deliver_before_read(claims.bank, claims.account)
        info = await self._banks.get(claims.bank).account(claims.account)
        return gateway_pb2.GetBalanceResponse(
            account=common_pb2.AccountRef(bank=claims.bank, account=claims.account),
            balance=money(info.balance, info.currency),
            available=money(info.available, info.currency),
            held=money(info.held, info.currency),
        )

    async def Pay(
        self, request: gateway_pb2.PayRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PayResponse:
        order = self._split_order(request) if len(request.shares) else self._order(request)
        outcome = await self._pay_one(order, context)
        # Recorded, whatever happened next: the payment is the answer, never an error.
        return gateway_pb2.PayResponse(
            payment=payment_message(outcome.payment, order.from_bank, order.from_account),
            replayed=outcome.replayed,
        )

    async def _pay_one(self, order: PaymentOrder, context: grpc.aio.ServicerContext) -> Outcome:
        """ORDER paid (or its key's outcome replayed), once the caller's bucket holds its
        cost: one token per payee, as a batch's items each take one."""
        # RATE_LIMITED: nothing recorded.
        self._limiter.take(order.payer, cost=max(1, len(order.shares)))
        # A repeat of a key being decided elsewhere waits for it, within the caller's deadline.
        remaining = context.time_remaining()
        return await self._coordinator.pay(order, wait=remaining - 0.5 if remaining else None)

    async def PayBatch(
        self, request: gateway_pb2.PayBatchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PayBatchResponse:
        if request.atomic:
            return await self._pay_atomic(request, context)
        if request.idempotency_key:
            raise InvalidArgument(
                "idempotency_key is an atomic batch's key for its one payment: without atomic, "
                "each item carries its own",
                field="idempotency_key",
            )
        items = request.items
        if not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise InvalidArgument(
                f"a batch has 1 to {MAX_BATCH_ITEMS} items, not {len(items)}", field="items"
            )
        # The call as a whole costs its items (RATE_LIMITED: nothing recorded).
        self._limiter.take(current_claims().subject, cost=len(items))
        checked: list[PaymentOrder | MinipayError] = []
        for item in items:
            try:
                checked.append(self._order(item))
            except MinipayError as error:  # this item only: the others go on
                checked.append(error)
        orders = [order for order in checked if isinstance(order, PaymentOrder)]
        remaining = context.time_remaining()
        outcomes = iter(
            await self._coordinator.pay_many(orders, wait=remaining - 0.5 if remaining else None)
        )
        claims = current_claims()
        unexpected: dict[int, Internal] = {}  # one reference per failure, however many items
        results = []
        for order in checked:
            outcome = next(outcomes) if isinstance(order, PaymentOrder) else order
            if isinstance(outcome, Outcome):
                results.append(
                    gateway_pb2.PayBatchResult(
                        payment=payment_message(outcome.payment, claims.bank, claims.account),
                        replayed=outcome.replayed,
                    )
                )
                continue
            if not isinstance(outcome, MinipayError):
                if id(outcome) not in unexpected:
                    unexpected[id(outcome)] = _internal(outcome)
                outcome = unexpected[id(outcome)]
            results.append(gateway_pb2.PayBatchResult(error=item_error(outcome)))
        return gateway_pb2.PayBatchResponse(results=results)

    async def _pay_atomic(
        self, request: gateway_pb2.PayBatchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PayBatchResponse:
        """The items as the payees of one split payment, exactly as Pay with shares pays it:
        refused whole, or one payment that every item's result names."""
        for number, item in enumerate(request.items):
            if item.idempotency_key:
                raise InvalidArgument(
                    f"items[{number}].idempotency_key: the items of an atomic batch carry no "
                    "key; the batch's idempotency_key is the key of its one payment",
                    field=f"items[{number}].idempotency_key",
                )
        asked = [
            splits.AskedShare(
                bank=item.to.bank,
                account=item.to.account,
                amount=item.amount.minor_units,
                currency=item.amount.currency,
                has_payee=item.HasField("to"),
                has_amount=item.HasField("amount"),
            )
            for item in request.items
        ]
        order = self._split(asked, request.idempotency_key, listed="items", payee="to")
        outcome = await self._pay_one(order, context)
        result = gateway_pb2.PayBatchResult(
            payment=payment_message(outcome.payment, order.from_bank, order.from_account),
            replayed=outcome.replayed,
        )
        return gateway_pb2.PayBatchResponse(results=[result] * len(request.items))

    def _order(self, request: gateway_pb2.PayRequest | gateway_pb2.PayBatchItem) -> PaymentOrder:
        claims = current_claims()
        if not request.HasField("to") or not request.to.bank or not request.to.account:
            raise InvalidArgument("to.bank and to.account are required", field="to")
        if not request.HasField("amount"):
            raise InvalidArgument("amount is required", field="amount")
        self._banks.get(request.to.bank)  # NOT_FOUND for an unknown bank
        order = PaymentOrder(
            payer=claims.subject,
            from_bank=claims.bank,
            from_account=claims.account,
            to_bank=request.to.bank,
            to_account=validation.account_number(request.to.account, "to.account"),
            amount=validation.positive_amount(request.amount.minor_units),
            currency=validation.currency(request.amount.currency),
            idempotency_key=validation.idempotency_key(request.idempotency_key),
        )
        if (order.to_bank, order.to_account) == (order.from_bank, order.from_account):
            raise InvalidArgument("you cannot pay your own account", field="to")
        return order

    def _split_order(self, request: gateway_pb2.PayRequest) -> PaymentOrder:
        if request.HasField("to") or request.HasField("amount"):
            raise InvalidArgument(
                "a split payment names its payees in shares: leave to and amount unset",
                field="to" if request.HasField("to") else "amount",
            )
        asked = [
            splits.AskedShare(
                bank=share.payee.bank,
                account=share.payee.account,
                amount=share.amount.minor_units,
                currency=share.amount.currency,
                has_payee=share.HasField("payee"),
                has_amount=share.HasField("amount"),
            )
            for share in request.shares
        ]
        return self._split(asked, request.idempotency_key)

    def _split(
        self,
        asked: Sequence[splits.AskedShare],
        idempotency_key: str,
        listed: str = "shares",
        payee: str = "payee",
    ) -> PaymentOrder:
        claims = current_claims()
        return splits.split_order(
            claims.subject,
            claims.bank,
            claims.account,
            asked,
            idempotency_key,
            self._banks.names,
            listed,
            payee,
        )

    async def GetPayment(
        self, request: gateway_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetPaymentResponse:
        claims = current_claims()
        payment_id = validation.payment_id(request.payment_id)
        payment = await _payment(self._db, payment_id)
        if payment is None or not history.visible_to(payment, claims.bank, claims.account):
            raise history.not_found(payment_id)
        shown = [
            refund
            for refund in await _refunds_of(self._db, payment)
            if history.visible_to(refund, claims.bank, claims.account)
        ]
        return gateway_pb2.GetPaymentResponse(
            payment=payment_message(payment, claims.bank, claims.account),
            refunds=[payment_message(refund, claims.bank, claims.account) for refund in shown],
        )

    async def GetPaymentTrace(
        self, request: gateway_pb2.GetPaymentTraceRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetPaymentTraceResponse:
        claims = current_claims()
        payment_id = validation.payment_id(request.payment_id)

        def viewer(payment: PaymentView) -> trace.Viewer | None:
            if not history.visible_to(payment, claims.bank, claims.account):
                return None
            outgoing = (payment.from_bank, payment.from_account) == (claims.bank, claims.account)
            return trace.Viewer.PAYER if outgoing else trace.Viewer.PAYEE

        payment, steps = await _story(
            self._db,
            payment_id,
            viewer,
            history.not_found(payment_id),
            (claims.bank, claims.account),
        )
        return gateway_pb2.GetPaymentTraceResponse(
            payment=payment_message(payment, claims.bank, claims.account),
            steps=[trace_step_message(step) for step in steps],
        )

    async def ListHistory(
        self, request: gateway_pb2.ListHistoryRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListHistoryResponse:
        claims = current_claims()
        _check_page_size(request.page_size)
        query = history.HistoryQuery(
            bank=claims.bank,
            account=claims.account,
            page_size=request.page_size or DEFAULT_PAGE_SIZE,
            page_token=request.page_token,
            status=_STATUS_FILTER.get(request.status),
            direction=_DIRECTION_FILTER.get(request.direction),
            created_from=_seconds(request.created_from)
            if request.HasField("created_from")
            else None,
            created_before=(
                _seconds(request.created_before) if request.HasField("created_before") else None
            ),
            kind=_KIND_FILTER.get(request.kind),
        )
        payments, next_token = await self._db.transaction(lambda s: history.history(s, query))
        return gateway_pb2.ListHistoryResponse(
            payments=[payment_message(p, claims.bank, claims.account) for p in payments],
            next_page_token=next_token,
        )

    async def Refund(
        self, request: gateway_pb2.RefundRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RefundResponse:
        claims = current_claims()
        payment_id, amount, currency, key = _refund_fields(request)
        self._limiter.take(claims.subject)  # RATE_LIMITED: nothing recorded
        payment = await _payment(self._db, payment_id)
        original = refunds.check_customer_may_refund(
            # A split payment's payee refunds their own share.
            payment.seen_by(claims.bank, claims.account) if payment is not None else None,
            payment_id,
            claims.bank,
            claims.account,
        )
        order = refunds.refund_order(original, claims.subject, key, amount, currency)
        outcome = await _refund(self._coordinator, original, order, context)
        return gateway_pb2.RefundResponse(
            refund=payment_message(outcome.payment, claims.bank, claims.account),
            replayed=outcome.replayed,
        )


async def _payment(db: Database, payment_id: str) -> PaymentView | None:
    """The payment with this id, if there is one."""
    found = await db.statements(lambda c: payment_log.by_ids(c, [payment_id]))
    return found.get(payment_id)


async def _refunds_of(db: Database, payment: PaymentView) -> list[PaymentView]:
    if payment.kind is PaymentKind.REFUND:
        return []
    return await db.transaction(lambda s: history.refunds_of(s, payment.id))


def _refund_fields(
    request: gateway_pb2.RefundRequest | admin_pb2.AdminRefundRequest,
) -> tuple[str, int | None, str, str]:
    """(payment id, amount or None for all that is left, its currency, idempotency key)."""
    payment_id = validation.payment_id(request.payment_id)
    amount, currency = None, ""
    if request.HasField("amount"):
        amount = validation.positive_amount(request.amount.minor_units)
        currency = validation.currency(request.amount.currency)
    return payment_id, amount, currency, validation.idempotency_key(request.idempotency_key)


async def _refund(
    coordinator: Coordinator,
    original: PaymentView,
    order: PaymentOrder,
    context: grpc.aio.ServicerContext,
) -> Outcome:
    """Runs the refund ORDER of ORIGINAL: recorded (its amount reserved) or refused, then
    decided in a round like any payment."""
    if original.state is CoordinatorState.COMMITTING:
        # The refund's debit must never reach the payee's bank before the original's credit.
        missing = await coordinator.delivery.deliver_before_read(
            original.to_bank, original.to_account
        )
        if original.id in missing:
            raise Unavailable(
                f"payment {original.id} has not reached the payee's bank yet; try again",
                metadata={"bank": original.to_bank},
            )
    remaining = context.time_remaining()
    return await coordinator.pay(order, wait=remaining - 0.5 if remaining else None)


async def _story(
    db: Database,
    payment_id: str,
    viewer_of: Callable[[PaymentView], trace.Viewer | None],
    missing: NotFound,
    seen_by: tuple[str, str] | None = None,
) -> tuple[PaymentView, list[trace.Step]]:
    """The payment and what its viewer (VIEWER_OF the payment; None: not theirs to see, which
    is answered exactly like a payment that does not exist: MISSING) may see of its story:
    a customer's (SEEN_BY: their bank and account) as that customer sees the payment."""

    def read(connection: Connection) -> tuple[PaymentView, list[trace.Step]] | None:
        payment = payment_log.by_ids(connection, [payment_id]).get(payment_id)
        viewer = viewer_of(payment) if payment is not None else None
        if payment is None or viewer is None:
            return None
        seen = payment.seen_by(*seen_by) if seen_by is not None else payment
        return payment, trace.visible_steps(trace.read(connection, payment_id), viewer, seen)

    found = await db.statements(read)
    if found is None:
        raise missing
    return found


def trace_step_message(step: trace.Step) -> gateway_pb2.TraceStep:
    message = gateway_pb2.TraceStep(
        kind=f"TRACE_STEP_KIND_{step.kind.value}",
        replica=step.replica,
        bank=step.bank,
        round=step.round,
        outcome=step.outcome,
        detail=step.detail,
        attributes=dict(step.attributes),
    )
    message.at.FromMilliseconds(step.at_ms)
    if step.sent_ms is not None:
        message.sent_at.FromMilliseconds(step.sent_ms)
    return message


def payment_message(payment: PaymentView, bank: str, account: str) -> gateway_pb2.Payment:
    """PAYMENT as the owner of BANK/ACCOUNT sees it: the payee never learns why the payer's
    side failed, and only the payee how much is left to refund; a split payment's payee sees
    it as paying them their share, and no other share."""
    outgoing = (payment.from_bank, payment.from_account) == (bank, account)
    return _message(
        payment if outgoing else payment.seen_by(bank, account),
        gateway_pb2.DIRECTION_OUTGOING if outgoing else gateway_pb2.DIRECTION_INCOMING,
        reasons=outgoing,
        refundable=not outgoing,
    )


def admin_payment_message(payment: PaymentView) -> gateway_pb2.Payment:
    """PAYMENT as an admin sees it: all of it, from neither side."""
    return _message(payment, gateway_pb2.DIRECTION_UNSPECIFIED, reasons=True, refundable=True)


def _message(
    payment: PaymentView,
    direction: gateway_pb2.Direction,
    *,
    reasons: bool,
    refundable: bool,
) -> gateway_pb2.Payment:
    # Fields set in place, not built from nested messages: a batch answers a thousand of
    # these, and this is three times quicker.
    status = status_of(payment.state)
    message = gateway_pb2.Payment(
        payment_id=payment.id,
        direction=direction,
        status=_STATUS[status],
        kind=_KIND[payment.kind],
    )
    message.payer.bank = payment.from_bank
    message.payer.account = payment.from_account
    message.payee.bank = payment.to_bank
    message.payee.account = payment.to_account
    _set_money(message.amount, payment.amount, payment.currency)
    if reasons and payment.reason_code:
        message.reason_code = payment.reason_code
        message.reason = payment.reason
    message.created_at.FromNanoseconds(int(payment.created_at * 1e9))
    if payment.refund_of:
        message.refund_of = payment.refund_of
    _set_money(message.refunded, payment.refunded, payment.currency)
    _set_money(message.refundable, payment.refundable if refundable else 0, payment.currency)
    if status is not Status.PENDING and payment.decided_at is not None:
        message.decided_at.FromNanoseconds(int(payment.decided_at * 1e9))
    committed = status is Status.COMMITTED and payment.refund_of is None
    for share in payment.shares:
        item = message.shares.add()
        item.payee.bank = share.bank
        item.payee.account = share.account
        _set_money(item.amount, share.amount, payment.currency)
        _set_money(item.refunded, share.refunded, payment.currency)
        refundable_share = share.refundable if refundable and committed else 0
        _set_money(item.refundable, refundable_share, payment.currency)
    return message


def _set_money(message: common_pb2.Money, minor_units: int, currency: str) -> None:
    message.minor_units = minor_units
    message.currency = currency


def item_error(error: MinipayError) -> gateway_pb2.ItemError:
    """The error Pay would have raised for one item alone, as a batch reports it."""
    metadata = dict(error.metadata)
    if error.field:
        metadata.setdefault("field", error.field)
    return gateway_pb2.ItemError(
        code=status_code_of(error).name,
        reason=error.reason.value,
        message=error.message,
        metadata=metadata,
    )


def _internal(error: Exception) -> Internal:
    """An item that failed for no reason of its own (a round's database transaction, say):
    INTERNAL with a reference to quote, its traceback logged under that reference."""
    reference = uuid.uuid4().hex[:12]
    log.error("batch_items_failed", exc_info=error, extra={"fields": {"reference": reference}})
    return Internal(f"internal error (reference {reference})", metadata={"reference": reference})


class CoordinatorService(gateway_pb2_grpc.CoordinatorServicer):  # type: ignore[misc]
    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    async def GetDecision(
        self, request: gateway_pb2.GetDecisionRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetDecisionResponse:
        asking = bank_of(current_principal().peer.spiffe_id) or ""
        answers = await self._coordinator.statuses(list(request.payment_ids), asking)
        values = {
            Status.PENDING: gateway_pb2.DECISION_PENDING,
            Status.COMMITTED: gateway_pb2.DECISION_COMMIT,
            Status.ABORTED: gateway_pb2.DECISION_ABORT,
        }
        return gateway_pb2.GetDecisionResponse(
            decisions=[
                gateway_pb2.PaymentDecision(payment_id=pid, decision=values[status])
                for pid, status in answers.items()
            ]
        )


# The events an admin action makes, gathered while it runs and written with its audit record.
_ACTION_EVENTS: contextvars.ContextVar[list[events.NewEvent]] = contextvars.ContextVar(
    "action_events"
)
_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _emit(event: events.NewEvent) -> None:
    _ACTION_EVENTS.get().append(event)


def audited(
    action: str | Callable[[Any], str], what: Callable[[Any], dict[str, Any]]
) -> Callable[[_Method], _Method]:
    """An admin action that lands in the audit chain whatever its outcome (OK, or the reason
    it was refused), with the events it made, before its answer leaves: who, from which
    certificate, WHAT of the request (never a password)."""

    def decorate(method: _Method) -> _Method:
        @functools.wraps(method)
        async def run(self: AdminService, request: Any, context: grpc.aio.ServicerContext) -> Any:
            made: list[events.NewEvent] = []
            reset = _ACTION_EVENTS.set(made)
            outcome = "OK"
            try:
                return await method(self, request, context)
            except MinipayError as error:
                outcome = error.reason.value
                made.clear()
                raise
            except Exception:
                outcome = ErrorReason.INTERNAL_ERROR.value
                made.clear()
                raise
            finally:
                _ACTION_EVENTS.reset(reset)
                principal = current_principal()
                record = audit.admin_action(
                    time.time(),
                    action=action if isinstance(action, str) else action(request),
                    admin=current_claims().subject,
                    certificate=principal.peer.common_name,
                    what=what(request),
                    outcome=outcome,
                    replica=self._replica,
                )
                await self._journal.record(made, [record])

        return run  # type: ignore[return-value]

    return decorate


class AdminService(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    def __init__(
        self,
        banks: BankDirectory,
        identities: users.UserService,
        db: Database,
        coordinator: Coordinator,
        limiter: RateLimiter,
        journal: journal.Journal,
        replica: str,
    ) -> None:
        self._banks = banks
        self._replica = replica
        self._identities = identities
        self._db = db
        self._coordinator = coordinator
        self._limiter = limiter
        self._journal = journal
        # Runs in the transaction that marks a deposit applied (``deposits.OnApplied``).
        # A deposit's event rides on the transaction that marks it applied, once.
        self.on_deposit_applied: deposits.OnApplied = _deposit_event

    async def GetPaymentTrace(
        self, request: admin_pb2.AdminGetPaymentTraceRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AdminGetPaymentTraceResponse:
        payment_id = validation.payment_id(request.payment_id)
        admin = trace.Viewer.ADMIN
        payment, steps = await _story(
            self._db, payment_id, lambda _: admin, history.not_found(payment_id, "")
        )
        return admin_pb2.AdminGetPaymentTraceResponse(
            # As its payer sees it: the whole payment, its reason included.
            payment=payment_message(payment, payment.from_bank, payment.from_account),
            steps=[trace_step_message(step) for step in steps],
        )

    async def ListBanks(
        self, request: admin_pb2.ListBanksRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListBanksResponse:
        banks = self._banks.all()
        serving = await asyncio.gather(*(bank.serving() for bank in banks))
        return admin_pb2.ListBanksResponse(
            banks=[
                admin_pb2.BankInfo(name=bank.name, address=bank.address, serving=up)
                for bank, up in zip(banks, serving, strict=True)
            ]
        )

    @audited(
        "create_user",
        lambda r: {
            "username": r.username[:64],
            "name": r.name[:200],
            "role": r.role[:20] or "customer",
            "bank": r.account.bank[:64],
            "account": r.account.account[:34],
            "initial_balance": r.initial_balance.minor_units,
            "currency": r.initial_balance.currency[:3],
        },
    )
    async def CreateUser(
        self, request: admin_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateUserResponse:
        role = validation.role(request.role or "customer")
        username = validation.username(request.username)
        if role == "admin":
            await self._identities.create_admin(username, request.password)
            _emit(
                events.user_event(
                    events.EventType.USER_CREATED,
                    time.time(),
                    username=username,
                    name=request.name,
                    role="admin",
                    disabled=False,
                )
            )
            return admin_pb2.CreateUserResponse(
                user=admin_pb2.User(username=username, name=request.name, role="admin")
            )
        bank = self._banks.get(request.account.bank)
        info = await self._identities.open_customer(
            username,
            bank.name,
            lambda: bank.create_customer(
                NewCustomer(
                    username=username,
                    name=request.name,
                    password=request.password,
                    role=role,
                    account=request.account.account,
                    initial_balance=request.initial_balance.minor_units,
                    currency=request.initial_balance.currency,
                )
            ),
        )
        _emit(_user_event(events.EventType.USER_CREATED, bank.name, info))
        return admin_pb2.CreateUserResponse(user=_user(bank.name, info))

    async def ListUsers(
        self, request: admin_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListUsersResponse:
        banks = [self._banks.get(request.bank)] if request.bank else list(self._banks.all())
        answers = await asyncio.gather(*(bank.list_customers() for bank in banks))
        return admin_pb2.ListUsersResponse(
            users=[
                _user(bank.name, info)
                for bank, customers in zip(banks, answers, strict=True)
                for info in customers
            ]
        )

    @audited(
        lambda r: "disable_user" if r.disabled else "enable_user",
        lambda r: {"bank": r.bank[:64], "username": r.username[:64]},
    )
    async def SetUserDisabled(
        self, request: admin_pb2.SetUserDisabledRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetUserDisabledResponse:
        bank = self._banks.get(request.bank)
        username = validation.username(request.username)
        info = await bank.set_customer_disabled(username, request.disabled)
        # The bank refuses the user's payments; the gateway refuses their tokens, from now.
        await self._identities.set_disabled(bank.name, info.username, request.disabled)
        kind = events.EventType.USER_DISABLED if request.disabled else events.EventType.USER_ENABLED
        _emit(_user_event(kind, bank.name, info))
        return admin_pb2.SetUserDisabledResponse(user=_user(bank.name, info))

    @audited(
        "deposit",
        lambda r: {
            "bank": r.account.bank[:64],
            "account": r.account.account[:34],
            "amount": r.amount.minor_units,
            "currency": r.amount.currency[:3],
            "idempotency_key": r.idempotency_key[:255],
        },
    )
    async def Deposit(
        self, request: admin_pb2.DepositRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DepositResponse:
        bank = self._banks.get(request.account.bank)
        key = validation.idempotency_key(request.idempotency_key)
        account = validation.account_number(request.account.account, "account.account")
        amount = validation.positive_amount(request.amount.minor_units)
        currency = validation.currency(request.amount.currency)
        admin = current_claims().subject
        # One deposit per admin and key, in a bounded id the bank can store; recorded before
        # the bank is asked, so that reconcile knows every deposit a bank may hold.
        deposit_id = deposits.deposit_id(admin, key)
        await self._db.transaction(
            lambda s: deposits.record(
                s,
                deposit_id=deposit_id,
                bank=bank.name,
                account=account,
                amount=amount,
                currency=currency,
                admin=admin,
            )
        )
        try:
            info = await bank.deposit(account, amount, currency, deposit_id)
        except (InvalidArgument, NotFound, FailedPrecondition):
            # The bank said no: nothing was applied. (Unreachable: it stays RECORDED, and a
            # retry with the same key finishes it.)
            await self._db.transaction(lambda s: deposits.mark_refused(s, deposit_id))
            raise
        hook = self.on_deposit_applied
        await self._db.transaction(lambda s: deposits.mark_applied(s, deposit_id, hook))
        return admin_pb2.DepositResponse(balance=money(info.balance, info.currency))

    @audited(
        "refund",
        lambda r: {
            "payment_id": r.payment_id[:64],
            "amount": r.amount.minor_units,
            "currency": r.amount.currency[:3],
            "idempotency_key": r.idempotency_key[:255],
        },
    )
    async def Refund(
        self, request: admin_pb2.AdminRefundRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AdminRefundResponse:
        payment_id, amount, currency, key = _refund_fields(request)
        self._limiter.take(current_claims().subject)  # the admin's own bucket
        original = await _payment(self._db, payment_id)
        if original is None:
            raise history.not_found(payment_id, "")
        if original.is_split:
            # A split payment is refunded one share at a time: the payee names it.
            payee = (request.payee.bank, request.payee.account)
            if not request.HasField("payee") or original.share_of(*payee) is None:
                raise InvalidArgument(
                    f"payment {payment_id} is a split payment: payee must name the payee "
                    "whose share to refund",
                    field="payee",
                )
            original = original.seen_by(*payee)
        elif request.HasField("payee") and (request.payee.bank, request.payee.account) != (
            original.to_bank,
            original.to_account,
        ):
            raise InvalidArgument(
                f"payee is not the payee of payment {payment_id}; leave it unset", field="payee"
            )
        refunds.check_refundable(original)
        # On the payee's behalf, with the admin's own idempotency keys.
        order = refunds.refund_order(original, current_claims().subject, key, amount, currency)
        outcome = await _refund(self._coordinator, original, order, context)
        return admin_pb2.AdminRefundResponse(
            refund=admin_payment_message(outcome.payment), replayed=outcome.replayed
        )

    async def ListAudit(
        self, request: admin_pb2.ListAuditRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListAuditResponse:
        return await _list_audit(self._db, request)

    async def GetPayment(
        self, request: admin_pb2.AdminGetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AdminGetPaymentResponse:
        payment_id = validation.payment_id(request.payment_id)
        payment = await _payment(self._db, payment_id)
        if payment is None:
            raise history.not_found(payment_id, "")
        return admin_pb2.AdminGetPaymentResponse(
            payment=admin_payment_message(payment),
            refunds=[admin_payment_message(r) for r in await _refunds_of(self._db, payment)],
        )

    async def ListPayments(
        self, request: admin_pb2.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListPaymentsResponse:
        _check_page_size(request.page_size)
        if request.account and not request.bank:
            raise InvalidArgument("account needs bank: the account's bank", field="account")
        if request.bank:
            self._banks.get(request.bank)  # NOT_FOUND for an unknown bank
        query = history.PaymentsQuery(
            page_size=request.page_size or DEFAULT_PAGE_SIZE,
            page_token=request.page_token,
            bank=request.bank or None,
            account=validation.account_number(request.account) if request.account else None,
            status=_STATUS_FILTER.get(request.status),
            kind=_KIND_FILTER.get(request.kind),
            created_from=_seconds(request.created_from)
            if request.HasField("created_from")
            else None,
            created_before=(
                _seconds(request.created_before) if request.HasField("created_before") else None
            ),
        )
        payments, next_token = await self._db.transaction(lambda s: history.all_payments(s, query))
        return admin_pb2.ListPaymentsResponse(
            payments=[admin_payment_message(p) for p in payments], next_page_token=next_token
        )

    async def Reconcile(
        self, request: admin_pb2.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ReconcileResponse:
        older_than = request.older_than_seconds or reconcile.DEFAULT_OLDER_THAN
        if not 1 <= older_than <= MAX_OLDER_THAN:
            raise InvalidArgument(
                f"older_than_seconds must be 1 to {MAX_OLDER_THAN} "
                f"(0: {reconcile.DEFAULT_OLDER_THAN})",
                field="older_than_seconds",
            )
        report = await reconcile_run.run(self._db, self._banks.all(), older_than)
        message = report_message(report, reconcile_run.new_run_id(), self._replica)
        blob = message.SerializeToString()
        await self._db.statements(
            lambda c: reconcile_store.save_run(
                c,
                message.run_id,
                message.replica,
                report.started_at,
                report.finished_at,
                message.agreed,
                blob,
            )
        )
        log.info(
            "reconciled",
            extra={
                "fields": {
                    "run_id": message.run_id,
                    "agreed": message.agreed,
                    "findings": report.findings_total,
                    "payments": report.payments_checked,
                    "seconds": round(report.finished_at - report.started_at, 3),
                    **{name: round(value, 3) for name, value in report.timings.items()},
                }
            },
        )
        return admin_pb2.ReconcileResponse(report=message)

    async def GetLastReconcile(
        self, request: admin_pb2.GetLastReconcileRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetLastReconcileResponse:
        answer = admin_pb2.GetLastReconcileResponse()
        last = await self._last_reconcile()
        if last is not None:
            answer.report.CopyFrom(last)
        return answer

    async def _last_reconcile(self) -> admin_pb2.ReconcileReport | None:
        blob = await self._db.statements(reconcile_store.last_run)
        if blob is None:
            return None
        report = admin_pb2.ReconcileReport()
        report.ParseFromString(blob)
        return report

    async def GetOverview(
        self, request: admin_pb2.GetOverviewRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetOverviewResponse:
        banks = self._banks.all()

        async def bank_overview(bank: BankClient) -> admin_pb2.BankOverview:
            message = admin_pb2.BankOverview(name=bank.name, address=bank.address)
            message.serving = await bank.serving()
            if not message.serving:
                return message
            try:
                books = await bank.books(accounts_only=True)
            except MinipayError:
                message.serving = False
                return message
            _fill_books(message, books)
            return message

        def read(
            connection: Connection,
        ) -> tuple[
            list[overview.ReplicaRow],
            overview.OpenPayments,
            list[overview.Bucket],
            dict[str, tuple[int, str]],
        ]:
            return (
                overview.replicas(connection),
                overview.open_payments(connection),
                overview.throughput(connection, now()),
                journal.heads(connection),
            )

        answers, (replicas, open_payments, buckets, heads), last = await asyncio.gather(
            asyncio.gather(*(bank_overview(bank) for bank in banks)),
            self._db.statements(read),
            self._last_reconcile(),
        )
        message = admin_pb2.GetOverviewResponse(
            banks=answers,
            replicas=[
                admin_pb2.ReplicaInfo(
                    name=r.name,
                    live=r.live,
                    started_at=timestamp(r.started_at),
                    lease_expires_at=timestamp(r.lease_expires_at),
                )
                for r in replicas
            ],
            throughput=[
                admin_pb2.ThroughputBucket(
                    start=timestamp(b.start),
                    seconds=overview.BUCKET_SECONDS,
                    committed=b.committed,
                    aborted=b.aborted,
                )
                for b in buckets
            ],
            open_payments=open_payments.open,
            undecided_payments=open_payments.undecided,
            audit_head_sequence=heads.get("audit", (0, ""))[0],
            audit_head_hash=heads.get("audit", (0, ""))[1],
            last_event_sequence=heads.get("events", (0, ""))[0],
        )
        if open_payments.oldest is not None:
            message.oldest_open_payment.CopyFrom(timestamp(open_payments.oldest))
        if last is not None:
            message.last_reconcile.CopyFrom(last)
        return message


MAX_OLDER_THAN = 30 * 86_400


def _fill_books(
    message: admin_pb2.BankBooks | admin_pb2.BankOverview, books: reconcile.BankBooks
) -> None:
    message.in_doubt = books.in_doubt
    if books.oldest_in_doubt is not None:
        message.oldest_in_doubt.CopyFrom(timestamp(books.oldest_in_doubt))
    message.balances.extend(money(c.balances, c.currency) for c in books.currencies)
    message.held.extend(money(c.held, c.currency) for c in books.currencies)


def report_message(
    report: reconcile.Report, run_id: str, replica: str
) -> admin_pb2.ReconcileReport:
    message = admin_pb2.ReconcileReport(
        run_id=run_id,
        replica=replica,
        started_at=timestamp(report.started_at),
        finished_at=timestamp(report.finished_at),
        agreed=report.agreed,
        older_than_seconds=report.older_than,
        payments_checked=report.payments_checked,
        entries_checked=report.entries_checked,
        deposits_checked=report.deposits_checked,
        in_flight=report.in_flight,
        findings=[
            admin_pb2.ReconcileFinding(
                code=f.code.value,
                bank=f.bank,
                payment_id=f.payment_id,
                account=f.account,
                expected=f.expected,
                found=f.found,
                detail=f.detail,
            )
            for f in report.findings
        ],
        findings_total=report.findings_total,
        currencies=[
            admin_pb2.CurrencyBooks(
                currency=currency,
                balances=money(balances, currency),
                deposits=money(report.deposits.get(currency, 0), currency),
            )
            for currency, balances in sorted(report.balances.items())
        ],
    )
    for summary in report.banks:
        bank = message.banks.add(bank=summary.bank, reachable=summary.reachable)
        if summary.books is not None:
            bank.accounts = summary.books.accounts
            bank.payments = summary.books.payments
            bank.ledger_entries = summary.books.ledger_entries
            _fill_books(bank, summary.books)
    return message


async def _list_audit(
    db: Database, request: admin_pb2.ListAuditRequest
) -> admin_pb2.ListAuditResponse:
    if request.after_sequence < 0:
        raise InvalidArgument("after_sequence must be 0 or more", field="after_sequence")
    if not 0 <= request.page_size <= audit.MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be 0 to {audit.MAX_PAGE_SIZE} (0: {audit.DEFAULT_PAGE_SIZE})",
            field="page_size",
        )
    size = request.page_size or audit.DEFAULT_PAGE_SIZE
    records, head, digest = await db.statements(
        lambda c: audit.page(c, request.after_sequence, size)
    )
    return admin_pb2.ListAuditResponse(
        records=[
            admin_pb2.AuditRecord(sequence=seq, prev_hash=prev, hash=h, body=body)
            for seq, prev, h, body in records
        ],
        head_sequence=head,
        head_hash=digest,
    )


def _deposit_event(session: Session, deposit: deposits.DepositView) -> None:
    event = events.deposit_event(
        deposit.applied_at or now(),
        bank=deposit.bank,
        account=deposit.account,
        amount=deposit.amount,
        currency=deposit.currency,
        admin=deposit.admin,
    )
    journal.write(session.connection(), [event])


def _user_event(kind: events.EventType, bank: str, info: CustomerInfo) -> events.NewEvent:
    return events.user_event(
        kind,
        time.time(),
        username=info.username,
        name=info.name,
        role=info.role,
        disabled=info.disabled,
        bank=bank,
        account=info.account.number if info.account is not None else "",
    )


def _check_page_size(page_size: int) -> None:
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be 0 to {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})", field="page_size"
        )


def _user(bank: str, info: CustomerInfo) -> admin_pb2.User:
    user = admin_pb2.User(
        username=info.username,
        name=info.name,
        role=info.role,
        disabled=info.disabled,
        account=common_pb2.AccountRef(bank=bank),
    )
    if info.account is not None:
        user.account.account = info.account.number
        user.balance.CopyFrom(money(info.account.balance, info.account.currency))
    return user


_EVENT_TYPE = {
    events.EventType.PAYMENT_COMMITTED: events_pb2.EVENT_TYPE_PAYMENT_COMMITTED,
    events.EventType.PAYMENT_ABORTED: events_pb2.EVENT_TYPE_PAYMENT_ABORTED,
    events.EventType.REFUND_COMMITTED: events_pb2.EVENT_TYPE_REFUND_COMMITTED,
    events.EventType.REFUND_ABORTED: events_pb2.EVENT_TYPE_REFUND_ABORTED,
    events.EventType.DEPOSIT_APPLIED: events_pb2.EVENT_TYPE_DEPOSIT_APPLIED,
    events.EventType.USER_CREATED: events_pb2.EVENT_TYPE_USER_CREATED,
    events.EventType.USER_DISABLED: events_pb2.EVENT_TYPE_USER_DISABLED,
    events.EventType.USER_ENABLED: events_pb2.EVENT_TYPE_USER_ENABLED,
    events.EventType.KEY_ROTATED: events_pb2.EVENT_TYPE_KEY_ROTATED,
}
_EVENT_TYPE_OF: dict[int, events.EventType] = {int(v): kind for kind, v in _EVENT_TYPE.items()}
# Watch: the most events per response, and how long a quiet stream waits before a heartbeat
# (an empty response with the cursor: it moves a customer's cursor past others' events).
WATCH_PAGE = 200
HEARTBEAT = 15.0
# A watcher that takes longer than this to take one response is cut off: the server does not
# keep a call open for a reader that does not read (its memory stays one page either way).
STALLED = 60.0


class EventsService(events_pb2_grpc.EventsServicer):  # type: ignore[misc]
    def __init__(self, db: Database, feed: EventFeed) -> None:
        self._db = db
        self._feed = feed

    async def List(
        self, request: events_pb2.EventsListRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.EventsListResponse:
        query = _events_query(
            request.after_sequence, request.page_size or events.DEFAULT_PAGE_SIZE, request.types
        )
        events.check_query(request.after_sequence, request.page_size, query.types)
        page = await self._db.statements(lambda c: events.read(c, query))
        return events_pb2.EventsListResponse(
            events=[event_message(e, query.reader) for e in page.events],
            next_after_sequence=page.next_after,
        )

    async def Watch(
        self, request: events_pb2.EventsWatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.EventsWatchResponse]:
        query = _events_query(request.after_sequence, WATCH_PAGE, request.types)
        events.check_query(request.after_sequence, 0, query.types)
        async with self._feed.watching():
            heartbeat_due = time.monotonic() + HEARTBEAT
            while True:
                page = await self._db.statements(functools.partial(events.read, query=query))
                query = dataclasses.replace(query, after=page.next_after)
                if page.events or time.monotonic() >= heartbeat_due:
                    sent = time.monotonic()
                    yield events_pb2.EventsWatchResponse(
                        events=[event_message(e, query.reader) for e in page.events],
                        next_after_sequence=page.next_after,
                    )
                    heartbeat_due = time.monotonic() + HEARTBEAT
                    if heartbeat_due - sent > HEARTBEAT + STALLED:
                        raise Throttled(
                            f"this watcher took over {STALLED:.0f} s to take one response; "
                            f"resume after sequence {page.next_after}",
                            ErrorReason.WATCHER_TOO_SLOW,
                            metadata={"next_after_sequence": str(page.next_after)},
                        )
                    if len(page.events) == query.limit:
                        continue  # behind: the next page at once
                await self._feed.wait_past(page.head, max(0.0, heartbeat_due - time.monotonic()))


def _events_query(after: int, limit: int, types: Sequence[int]) -> events.Query:
    """The query of a List or Watch: the caller's own account's events, or every one for an
    admin."""
    kinds = []
    for value in types:
        if value not in _EVENT_TYPE_OF:
            raise InvalidArgument(f"types: {value} is not an event type", field="types")
        kinds.append(_EVENT_TYPE_OF[value])
    claims = current_claims()
    reader = None if claims.role == "admin" else events.account_key(claims.bank, claims.account)
    return events.Query(max(after, 0), limit, tuple(kinds), reader)


def event_message(event: events.StoredEvent, reader: str | None) -> events_pb2.Event:
    """EVENT as READER (an account key; None: an admin) sees it."""
    message = events_pb2.Event(
        sequence=event.sequence,
        type=_EVENT_TYPE[event.type],
        occurred_at=timestamp(event.occurred_at),
    )
    subject = event.subject
    if event.type.value.startswith(("payment.", "refund.")):
        payment = event.payment()
        if reader is None:
            message.payment.CopyFrom(admin_payment_message(payment))
        else:
            bank, _, account = reader.partition("/")
            message.payment.CopyFrom(payment_message(payment, bank, account))
    elif event.type.value.startswith("user."):
        message.user.CopyFrom(
            admin_pb2.User(
                username=subject["username"],
                name=subject["name"],
                role=subject["role"],
                disabled=subject["disabled"],
                account=common_pb2.AccountRef(bank=subject["bank"], account=subject["account"]),
            )
        )
    elif event.type is events.EventType.DEPOSIT_APPLIED:
        message.deposit.CopyFrom(
            events_pb2.DepositEvent(
                account=common_pb2.AccountRef(bank=subject["bank"], account=subject["account"]),
                amount=money(subject["amount"], subject["currency"]),
                admin=subject["admin"] if reader is None else "",
            )
        )
    elif event.type is events.EventType.KEY_ROTATED:
        message.key_rotation.CopyFrom(
            events_pb2.KeyRotation(replica=subject["replica"], kid=subject["kid"])
        )
    return message
