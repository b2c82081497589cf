"""The customer's command line (``minipay``; ``python -m client`` in a checkout): register,
log in, check the balance, pay (one payee, or every row of a CSV file), refund a payment
received, look up a payment, read its story (trace) and read the history.

A customer registers once (links their bank account to the gateway, with the password their
bank gave them), then logs in; the session is kept in $MINIPAY_HOME (default ~/.minipay).
Amounts are plain decimals in the currency's units ("12.34"); with --json they come as
text ("amount") and as integer minor units ("amount_minor_units"). Payments' times are
shown in UTC, as --since and --until take them back."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from minipay.client import batch_file, pay_batch
from minipay.client.api import DEFAULT_PAGE_SIZE, MAX_BATCH_ITEMS, MAX_PAGE_SIZE, GatewayClient
from minipay.client.commandline import (
    TRACE_DETAILS,
    Commands,
    Invocation,
    PasswordRequest,
    Tool,
    add_refund_flags,
    command_name,
    currency_code,
    iso,
    money_fields,
    page_size,
    parse,
    password_stdin,
    run,
    show,
    show_trace,
    utc_text,
)
from minipay.client.event_commands import add_events_command, show_events
from minipay.client.results import Direction, Payment, PaymentKind, PaymentStatus
from minipay.money import format_minor_units, to_minor_units

TOOL = Tool(
    name="client",
    default_cert="client-1",
    session_file="session.json",
    sessionless=frozenset({"register", "login"}),
)
DIRECTIONS = {"in": Direction.INCOMING, "out": Direction.OUTGOING}
STATUSES = {status.lower(): status for status in PaymentStatus}
KINDS = {kind.value: kind for kind in PaymentKind}


def moment(text: str, *, whole_day_until: bool = False) -> datetime:
    """An ISO 8601 date or date-time, UTC unless it has an offset. With WHOLE_DAY_UNTIL, a
    bare date means the end of that day (the next midnight), so the day is included."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or date-time like 2024-05-01 or 2024-05-01T12:30:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if whole_day_until and _is_bare_date(text):
        parsed += timedelta(days=1)
    return parsed


def _is_bare_date(text: str) -> bool:
    try:
        date.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


def since(text: str) -> datetime:
    return moment(text)


def until(text: str) -> datetime:
    return moment(text, whole_day_until=True)


def build_parser() -> argparse.ArgumentParser:
    prog = command_name("client")
    commands = Commands(
        TOOL,
        f"{prog}: register, log in, check the balance, pay (one payee, or every row of a CSV\n"
        "file), look up a payment and read the history.\n\n"
        "A customer registers once (links their bank account to the gateway, with the password\n"
        "their bank gave them), then logs in; the session is kept in\n"
        "$MINIPAY_HOME/session.json (MINIPAY_HOME: default ~/.minipay). Amounts are plain\n"
        'decimals in the currency\'s units ("12.34"); with --json they come as text ("amount")\n'
        'and as integer minor units ("amount_minor_units"). Payments\' times are shown in UTC,\n'
        "as --since and --until take them back.",
    )

    register = commands.add(
        "register",
        "link your bank account to the gateway, once, before your first login",
        "Your bank checks the username and password it gave you; the gateway then knows\n"
        f"which account is yours. Then log in with '{prog} login'.",
    )
    register.add_argument("--bank", required=True, help="your bank, e.g. alpha")
    register.add_argument("--account", required=True, help="your account number, e.g. A-1001")
    register.add_argument("--username", required=True, help="the username your bank gave you")
    password_stdin(register, "your password")

    commands.add_login(
        "log in and keep the session in $MINIPAY_HOME/session.json",
        f"A customer registers once ('{prog} register') before the first login.",
    )
    commands.add_logout_and_whoami()
    commands.add(
        "balance",
        "your balance, what is held for payments being decided, and what is available",
    )

    pay = commands.add(
        "pay",
        "pay another account, at any bank",
        "Prints the payment: COMMITTED, or ABORTED with its reason code and reason.\n"
        "Exits 0 when the payment is committed, 1 when it is not.",
    )
    pay.add_argument("--to-bank", required=True, help="the payee's bank, e.g. beta")
    pay.add_argument("--to-account", required=True, help="the payee's account, e.g. B-2001")
    pay.add_argument(
        "--amount",
        required=True,
        help="how much, as a plain decimal in the currency's units, e.g. 12.34",
    )
    pay.add_argument("--currency", type=currency_code, default="USD", help="ISO 4217 currency code")
    pay.add_argument(
        "--idempotency-key",
        default="",
        metavar="KEY",
        help="any unique text; running the command again with the same key returns the first "
        "outcome and never pays twice (default: a new random key, shown with --json)",
    )

    refund = commands.add(
        "refund",
        "give back a payment you received, in full or in part",
        "A refund is a payment of its own, from your account back to the payer's, linked to\n"
        "the payment it gives back; the refunds of a payment never add up to more than it.\n"
        "Prints the refund: COMMITTED, or ABORTED with its reason code and reason (then\n"
        "nothing moved and the amount may be refunded again). Exits 0 when the refund is\n"
        "committed, 1 when it is not.",
    )
    add_refund_flags(refund)

    batch = commands.add(
        "pay-batch",
        f"pay every row of a CSV file, in calls of up to {MAX_BATCH_ITEMS}",
        f"FILE's first line is a header naming its columns, in any order:\n"
        f"  {batch_file.HEADER}\n"
        "(no other columns). Each row is a payment of its own, with its own outcome. Every\n"
        "row is checked before anything is sent: bad rows are listed with their line\n"
        "numbers and nothing is paid. A row without an idempotency_key gets one derived\n"
        "from its bank, account, amount and currency and how many rows before it have the\n"
        "same: the same file again pays nothing twice (for 24 hours), and a row edited\n"
        "pays that row alone. Shows a progress bar on a terminal (with tqdm installed),\n"
        "then a summary, and writes each row's outcome to FILE.results.csv beside it.\n"
        f"At most {batch_file.MAX_ROWS} rows and {batch_file.MAX_FILE_BYTES // 2**20} MiB.\n"
        "With --atomic the file is one split payment instead: each row one of its 2-100\n"
        "payees, in one currency, each once; every payee is paid or none is, and the\n"
        "payment's key comes from all the rows (the same file again replays it).\n"
        "Exits 0 when every row is committed, 1 when not.",
    )
    batch.add_argument("file", metavar="FILE.csv", type=Path, help="the payments, one per row")
    batch.add_argument(
        "--currency",
        type=currency_code,
        default="USD",
        help="the currency of rows without one (no currency column, or an empty cell)",
    )
    batch.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="where to write each row's outcome (default: FILE.results.csv, beside FILE.csv)",
    )
    batch.add_argument(
        "--atomic",
        action="store_true",
        help="the file is one split payment: every row one of its 2-100 payees, all paid "
        "or none (no row with a key of its own: the payment's key comes from the rows)",
    )

    payment = commands.add(
        "payment",
        "one payment you made or received, by its id, with its refunds",
        "A payee sees a payment once it committed, and never why a payment was aborted.\n"
        "Shows what was refunded of it and, to its payee, what is left to refund.",
    )
    payment.add_argument("payment_id", metavar="ID", help="the payment's id, e.g. pay_3f2a...")

    trace_command = commands.add(
        "trace",
        "one payment's story, step by step: a timeline of its two-phase commit",
        TRACE_DETAILS + "\nA payee sees a payment's story once it committed, without the\n"
        "payer's bank's votes.",
    )
    trace_command.add_argument("payment_id", metavar="ID", help="the payment's id")

    history = commands.add("history", "your payments, newest first")
    history.add_argument(
        "--page-size",
        type=page_size,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"payments per page, 1-{MAX_PAGE_SIZE}",
    )
    history.add_argument(
        "--page-token",
        default="",
        metavar="TOKEN",
        help="the page to show, as printed after 'more:', with the same filters "
        "(default: the newest payments)",
    )
    history.add_argument(
        "--status", choices=sorted(STATUSES), help="only payments with this status (default: any)"
    )
    history.add_argument(
        "--direction",
        choices=sorted(DIRECTIONS),
        help="only payments you received (in) or made (out) (default: both)",
    )
    history.add_argument(
        "--since",
        type=since,
        metavar="WHEN",
        help="only payments made at or after WHEN: an ISO 8601 date or date-time, UTC unless "
        "it has an offset, e.g. 2024-05-01 or 2024-05-01T12:30:00+02:00 (default: no limit)",
    )
    history.add_argument(
        "--until",
        type=until,
        metavar="WHEN",
        help="only payments made before WHEN (a date: up to the end of that day), same forms "
        "as --since (default: no limit)",
    )
    history.add_argument(
        "--kind", choices=sorted(KINDS), help="only payments or only refunds (default: both)"
    )
    add_events_command(commands, "your account's")
    return commands.parser


def check_flags(args: argparse.Namespace) -> PasswordRequest | None:
    """Checks the flags before anything is asked or sent; says which password is needed."""
    if args.command == "register":
        return PasswordRequest(f"Password for {args.username}: ")
    if args.command == "pay":
        args.amount_minor_units = to_minor_units(args.amount, args.currency)
    if args.command == "refund":
        amount = args.amount
        args.amount_minor_units = None if amount is None else to_minor_units(amount, args.currency)
    if args.command == "pay-batch":
        pay_batch.check_file(args)
    return None


def payment_fields(payment: Payment) -> dict[str, Any]:
    """A payment for --json: amounts as text and minor units, times in ISO 8601."""
    return {
        "payment_id": payment.payment_id,
        "direction": payment.direction.value if payment.direction else "",
        "payer": {"bank": payment.payer.bank, "account": payment.payer.account},
        "payee": {"bank": payment.payee.bank, "account": payment.payee.account},
        **money_fields("amount", payment.amount_minor_units, payment.currency),
        "status": payment.status.value,
        "reason_code": payment.reason_code,
        "reason": payment.reason,
        "created_at": iso(payment.created_at),
        "decided_at": iso(payment.decided_at),
        "kind": payment.kind.value,
        "refund_of": payment.refund_of or None,
        "refunded": format_minor_units(payment.refunded_minor_units, payment.currency),
        "refunded_minor_units": payment.refunded_minor_units,
        "refundable": format_minor_units(payment.refundable_minor_units, payment.currency),
        "refundable_minor_units": payment.refundable_minor_units,
        # A split payment: its payees (the payer's and an admin's view), or the caller's own.
        "shares": [
            {
                "payee": {"bank": s.payee.bank, "account": s.payee.account},
                **money_fields("amount", s.amount_minor_units, payment.currency),
                "refunded_minor_units": s.refunded_minor_units,
                "refundable_minor_units": s.refundable_minor_units,
            }
            for s in payment.shares
        ],
    }


def payment_line(payment: Payment) -> str:
    """ "payment pay_... ABORTED: 12.34 USD to beta/B-2001 (INSUFFICIENT_FUNDS: ...)", or
    "refund pay_... COMMITTED: 5.00 USD to alpha/A-1001, refund of pay_..." for a refund."""
    amount = format_minor_units(payment.amount_minor_units, payment.currency)
    if payment.is_split and not payment.payee.bank:  # the payer's or an admin's: every payee
        payees = ", ".join(
            f"{s.payee} {format_minor_units(s.amount_minor_units, payment.currency)}"
            for s in payment.shares
        )
        parties = f"{'from ' + str(payment.payer) + ' ' if payment.direction is None else ''}"
        parties += f"split to {len(payment.shares)} payees: {payees}"
    elif payment.direction is None:  # an admin's view: both sides
        parties = f"from {payment.payer} to {payment.payee}"
    else:
        towards = "from" if payment.direction is Direction.INCOMING else "to"
        parties = f"{towards} {payment.counterparty}"
    text = (
        f"{payment.kind} {payment.payment_id} {payment.status}: {amount} {payment.currency} "
        f"{parties}"
    )
    if payment.refund_of:
        text += f", refund of {payment.refund_of}"
    if payment.reason_code:
        text += f" ({payment.reason_code}: {payment.reason})"
    return text


def payment_details(payment: Payment) -> list[str]:
    """PAYMENT's line, its times, what was refunded of it and its refunds."""
    lines = [payment_line(payment), f"created {utc_text(payment.created_at)}"]
    if payment.decided_at is not None:
        lines.append(f"decided {utc_text(payment.decided_at)}")
    if payment.kind is PaymentKind.PAYMENT and payment.status is PaymentStatus.COMMITTED:
        currency = payment.currency
        refunded = format_minor_units(payment.refunded_minor_units, currency)
        line = f"refunded {refunded} {currency}"
        if payment.direction is not Direction.OUTGOING:
            left = format_minor_units(payment.refundable_minor_units, currency)
            line += f", refundable {left} {currency}"
        lines.append(line)
    lines += [f"  {payment_line(refund)}" for refund in payment.refunds]
    return lines


def payment_json(payment: Payment) -> dict[str, Any]:
    """A payment looked up by id for --json: with its refunds."""
    return {**payment_fields(payment), "refunds": [payment_fields(r) for r in payment.refunds]}


async def work(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    if args.command == "register":
        return await register(invocation, client)
    if args.command == "balance":
        return await balance(args, client)
    if args.command == "pay":
        return await pay(invocation, client)
    if args.command == "refund":
        return await refund(invocation, client)
    if args.command == "pay-batch":
        return await pay_batch.pay_batch(invocation, client)
    if args.command == "payment":
        return await payment(args, client)
    if args.command == "history":
        return await history(args, client)
    if args.command == "events":
        return await show_events(args, client, payment_fields)
    if args.command == "trace":
        show_trace(args, await client.payment_trace(args.payment_id))
    return 0


async def register(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    done = await client.register(args.username, invocation.password, args.bank, args.account)
    show(
        args,
        {"username": done.username, "bank": done.bank, "account": done.account},
        f"registered {done.username}: account {done.account} at bank {done.bank}; now log in "
        f"with '{TOOL.prog} login --username {done.username}'",
        done.request_id,
    )
    return 0


async def balance(args: argparse.Namespace, client: GatewayClient) -> int:
    found = await client.balance()
    currency = found.currency
    data = {
        "bank": found.bank,
        "account": found.account,
        **money_fields("balance", found.balance_minor_units, currency),
        **money_fields("held", found.held_minor_units, currency),
        **money_fields("available", found.available_minor_units, currency),
    }
    show(
        args,
        data,
        f"{found.bank}/{found.account}: balance {data['balance']} {currency}, "
        f"held {data['held']} {currency}, available {data['available']} {currency}",
        found.request_id,
    )
    return 0


async def pay(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    key = args.idempotency_key or str(uuid.uuid4())
    invocation.repeat_with_key, invocation.repeatable = key, "payment"
    minor_units: int = args.amount_minor_units
    paid = await client.pay(args.to_bank, args.to_account, minor_units, args.currency, key)
    return show_outcome(args, paid, key)


async def refund(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    key = args.idempotency_key or str(uuid.uuid4())
    invocation.repeat_with_key, invocation.repeatable = key, "refund"
    minor_units: int | None = args.amount_minor_units
    done = await client.refund(args.payment_id, minor_units, args.currency, key)
    return show_outcome(args, done, key)


def show_outcome(args: argparse.Namespace, done: Payment, key: str) -> int:
    """A payment or refund just asked for: exit 0 when it committed, 1 when it did not."""
    text = payment_line(done)
    if done.replayed:
        text += " [replayed: this key was used before]"
    data = {**payment_fields(done), "replayed": done.replayed, "idempotency_key": key}
    show(args, data, text, done.request_id)
    return 0 if done.status is PaymentStatus.COMMITTED else 1


async def payment(args: argparse.Namespace, client: GatewayClient) -> int:
    found = await client.payment(args.payment_id)
    show(args, payment_json(found), "\n".join(payment_details(found)), found.request_id)
    return 0


async def history(args: argparse.Namespace, client: GatewayClient) -> int:
    page = await client.history(
        args.page_size,
        args.page_token,
        status=STATUSES[args.status] if args.status else None,
        direction=DIRECTIONS[args.direction] if args.direction else None,
        created_from=args.since,
        created_before=args.until,
        kind=KINDS[args.kind] if args.kind else None,
    )
    lines = [history_line(p) for p in page.payments] or ["no payments"]
    if page.next_page_token:
        lines.append(f"more: --page-token {page.next_page_token}")
    show(
        args,
        {
            "payments": [payment_fields(p) for p in page.payments],
            "next_page_token": page.next_page_token,
        },
        "\n".join(lines),
        page.request_id,
    )
    return 0


def history_line(payment: Payment) -> str:
    amount = format_minor_units(payment.amount_minor_units, payment.currency)
    refund = f"refund of {payment.refund_of}" if payment.refund_of else ""
    extras = " ".join(text for text in (payment.reason_code, refund) if text)
    return (
        f"{utc_text(payment.created_at)}  {payment.direction or '':<8} {amount:>12} "
        f"{payment.currency}  {payment.counterparty!s:<18} {payment.status:<9} "
        f"{payment.payment_id} {extras}"
    ).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    return run(TOOL, parse(build_parser(), argv), check_flags, work)


if __name__ == "__main__":
    sys.exit(main())
