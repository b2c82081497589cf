"""The admin's command line (``minipay-admin``; ``python -m admin`` in a checkout): log in as
an admin, list banks, create, list, disable and enable users, deposit money, look at every
payment, read any payment's story (trace), refund one on its payee's behalf, reconcile the
gateway's books with every bank's, and see the system at a glance (overview).

The admin's session is kept apart from a customer's, in $MINIPAY_HOME/admin-session.json
(default ~/.minipay). Amounts are plain decimals in the currency's units ("100.00"); with
--json they come as text ("balance") and as integer minor units ("balance_minor_units")."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import uuid
from collections.abc import Sequence

from minipay.admin.books import show_overview, show_report
from minipay.audit import Head
from minipay.client.__main__ import (
    KINDS,
    STATUSES,
    payment_details,
    payment_fields,
    payment_json,
    show_outcome,
    since,
    until,
)
from minipay.client.api import ClientError, GatewayClient, Payment, User
from minipay.client.commandline import (
    TRACE_DETAILS,
    Commands,
    Invocation,
    PasswordRequest,
    Tool,
    add_refund_flags,
    command_name,
    currency_code,
    money_fields,
    parse,
    password_stdin,
    positive_int,
    run,
    show,
    show_trace,
    utc_text,
)
from minipay.client.event_commands import add_events_command, show_events
from minipay.money import format_minor_units, to_minor_units

TOOL = Tool(name="admin", default_cert="admin", session_file="admin-session.json")


def build_parser() -> argparse.ArgumentParser:
    commands = Commands(
        TOOL,
        f"{command_name('admin')}: log in as an admin, list banks, create, list, disable and\n"
        "enable users, and deposit money.\n\n"
        "The admin's session is kept apart from a customer's, in\n"
        "$MINIPAY_HOME/admin-session.json (MINIPAY_HOME: default ~/.minipay). Amounts are\n"
        'plain decimals in the currency\'s units ("100.00"); with --json they come as text\n'
        '("balance") and as integer minor units ("balance_minor_units").',
    )
    commands.add_login(
        "log in as an admin and keep the session in $MINIPAY_HOME/admin-session.json"
    )
    commands.add_logout_and_whoami()
    commands.add("list-banks", "the banks the gateway knows, and whether they answer")

    create = commands.add(
        "create-user",
        "create a customer and their account (or, with --role admin, an admin)",
        "The new user's password is asked twice at the terminal, or read from the first\n"
        "line of standard input with --password-stdin. A customer then registers once\n"
        f"('{command_name('client')} register') before logging in.",
    )
    create.add_argument("--username", required=True, help="the new user's username")
    create.add_argument("--name", required=True, help="the new user's full name")
    create.add_argument(
        "--bank", default="", help="the customer's bank, e.g. gamma (required for a customer)"
    )
    create.add_argument(
        "--account",
        default="",
        help="the new account's number, e.g. G-9 (required for a customer)",
    )
    create.add_argument(
        "--balance", default="0", help="opening balance, a plain decimal such as 100.00"
    )
    create.add_argument(
        "--currency", type=currency_code, default="USD", help="ISO 4217 currency code"
    )
    create.add_argument(
        "--role",
        default="customer",
        choices=["customer", "admin"],
        help="customer: has an account at --bank; admin: runs these commands, has no account",
    )
    password_stdin(create, "the new user's password")

    users = commands.add("list-users", "customers and their accounts")
    users.add_argument(
        "--bank", default="", help="only this bank's customers (default: every bank)"
    )
    for name, text in (
        ("disable-user", "disable a customer: no login, no payment, until enabled"),
        ("enable-user", "enable a disabled customer again"),
    ):
        toggle = commands.add(name, text)
        toggle.add_argument("--bank", required=True, help="the customer's bank")
        toggle.add_argument("--username", required=True, help="the customer's username")

    deposit = commands.add("deposit", "add money to an account")
    deposit.add_argument("--bank", required=True, help="the account's bank, e.g. alpha")
    deposit.add_argument("--account", required=True, help="the account's number, e.g. A-1001")
    deposit.add_argument("--amount", required=True, help="how much, a plain decimal such as 100.00")
    deposit.add_argument(
        "--currency", type=currency_code, default="USD", help="ISO 4217 currency code"
    )
    deposit.add_argument(
        "--idempotency-key",
        default="",
        metavar="KEY",
        help="any unique text; running the command again with the same key deposits once "
        "(default: a new random key)",
    )

    payments = commands.add(
        "payments",
        "every payment and refund, newest first, filtered",
        "A page may hold fewer payments than --page-size when few pass the filters, and\n"
        "still end with 'more: --page-token ...': reading on costs the same each time.",
    )
    payments.add_argument(
        "--bank", default="", help="only payments from or to this bank (default: any)"
    )
    payments.add_argument(
        "--account",
        default="",
        help="with --bank: only payments from or to this account (default: any)",
    )
    payments.add_argument(
        "--status", choices=sorted(STATUSES), help="only payments with this status (default: any)"
    )
    payments.add_argument(
        "--kind", choices=sorted(KINDS), help="only payments or only refunds (default: both)"
    )
    payments.add_argument(
        "--since",
        type=since,
        metavar="WHEN",
        help="only payments made at or after WHEN, an ISO 8601 date or date-time, UTC unless "
        "it has an offset (default: no limit)",
    )
    payments.add_argument(
        "--until",
        type=until,
        metavar="WHEN",
        help="only payments made before WHEN (a date: up to the end of that day) "
        "(default: no limit)",
    )
    payments.add_argument(
        "--page-size", type=positive_int, default=20, metavar="N", help="payments per page"
    )
    payments.add_argument(
        "--page-token",
        default="",
        metavar="TOKEN",
        help="the page to show, as printed after 'more:', with the same filters "
        "(default: the newest payments)",
    )

    payment = commands.add("payment", "any payment by its id, all of it, with all its refunds")
    payment.add_argument("payment_id", metavar="ID", help="the payment's id, e.g. pay_3f2a...")

    refund = commands.add(
        "refund",
        "refund a committed payment on its payee's behalf, in full or in part",
        "The money goes from the payee's account back to the payer's, as if the payee had\n"
        "refunded it (the same rules); the idempotency key is the admin's own. Exits 0\n"
        "when the refund is committed, 1 when it is not.",
    )
    add_refund_flags(refund)
    trace_command = commands.add(
        "trace",
        "any payment's story, step by step: every step of its two-phase commit",
        TRACE_DETAILS,
    )
    trace_command.add_argument("payment_id", metavar="ID", help="the payment's id")

    reconcile = commands.add(
        "reconcile",
        "prove the books: compare the gateway's payments and deposits with every bank's",
        "Reads every bank's ledger, holds and balances (through the gateway) and compares\n"
        "them with the gateway's decisions and deposits; prints a summary, and with --json\n"
        "every finding. What is younger than --older-than is in flight, not a mismatch.\n"
        "Exits 0 when the books agree, 1 when they do not (each mismatch named) or a bank\n"
        "did not answer. Nothing is changed.",
    )
    reconcile.add_argument(
        "--older-than",
        type=positive_int,
        default=60,
        metavar="S",
        help="seconds after which what is undecided, held or unconfirmed is a finding",
    )
    reconcile.add_argument(
        "--last",
        action="store_true",
        help="show the report of the last reconcile any replica ran instead of running one",
    )
    commands.add(
        "overview",
        "the system at a glance: banks, replicas, payments per second, payments open, the "
        "last reconcile",
    )
    add_events_command(commands, "every")
    audit = commands.add(
        "audit",
        "the audit chain: every admin action and decision, each record hashed with the one before",
        "'audit list' prints the records; 'audit verify' reads the whole chain and\n"
        "recomputes it here, trusting nothing but the records.",
    )
    audit_list = commands.add_under(audit, "list", "the chain's records, oldest first")
    audit_list.add_argument(
        "--after", type=int, default=0, metavar="N", help="only records after sequence N"
    )
    audit_list.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="at most N records"
    )
    verify = commands.add_under(
        audit,
        "verify",
        "recompute the whole chain; exit 0 with the head verified, 1 naming the first record "
        "that does not match",
        "Save the head it prints (SEQ:HASH) and give it to a later verify with --expect-head:\n"
        "a chain truncated, or rewritten from some point on, is caught too.",
    )
    verify.add_argument(
        "--expect-head",
        type=chain_head,
        metavar="SEQ:HASH",
        help="a head printed by an earlier verify, which must still be in the chain",
    )
    return commands.parser


def chain_head(text: str) -> Head:
    try:
        return Head.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_flags(args: argparse.Namespace) -> PasswordRequest | None:
    """Checks the flags before anything is asked or sent; says which password is needed."""
    if args.command == "create-user":
        args.balance_minor_units = to_minor_units(args.balance, args.currency, allow_zero=True)
        if args.role == "customer" and not (args.bank and args.account):
            raise ClientError("a customer needs --bank and --account")
        return PasswordRequest(
            f"Password for the new user {args.username}: ",
            confirm=f"Repeat the password for {args.username}: ",
        )
    if args.command == "deposit":
        args.amount_minor_units = to_minor_units(args.amount, args.currency)
    if args.command == "refund":
        amount = args.amount
        args.amount_minor_units = None if amount is None else to_minor_units(amount, args.currency)
    if args.command == "payments" and args.account and not args.bank:
        raise ClientError("--account needs --bank: the account's bank")
    return None


def user_fields(user: User) -> dict[str, object]:
    return {
        "username": user.username,
        "name": user.name,
        "role": user.role,
        "disabled": user.disabled,
        "bank": user.bank,
        "account": user.account,
        **money_fields("balance", user.balance_minor_units, user.currency),
    }


def user_line(user: User) -> str:
    state = "disabled" if user.disabled else "active"
    if user.role == "admin" and not user.bank:
        return f"{user.username:<12} admin"
    return (
        f"{user.username:<12} {user.name:<20} {user.bank}/{user.account:<10} "
        f"{format_minor_units(user.balance_minor_units, user.currency):>12} "
        f"{user.currency} {state}"
    )


async def work(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    command = args.command
    if command == "list-banks":
        listed = await client.list_banks()
        show(
            args,
            {
                "banks": [
                    {"name": b.name, "address": b.address, "serving": b.serving}
                    for b in listed.banks
                ]
            },
            "\n".join(
                f"{b.name:<10} {b.address:<22} {'serving' if b.serving else 'NOT ANSWERING'}"
                for b in listed.banks
            )
            or "no banks",
            listed.request_id,
        )
    elif command == "create-user":
        user = await client.create_user(
            username=args.username,
            name=args.name,
            password=invocation.password,
            bank=args.bank,
            account=args.account,
            balance_minor_units=args.balance_minor_units,
            currency=args.currency,
            role=args.role,
        )
        show(args, user_fields(user), f"created {user_line(user)}", user.request_id)
    elif command == "list-users":
        users = await client.list_users(args.bank)
        show(
            args,
            {"users": [user_fields(u) for u in users.users]},
            "\n".join(user_line(u) for u in users.users) or "no users",
            users.request_id,
        )
    elif command in ("disable-user", "enable-user"):
        user = await client.set_disabled(args.bank, args.username, command == "disable-user")
        show(args, user_fields(user), user_line(user), user.request_id)
    elif command == "deposit":
        await deposit(invocation, client)
    elif command == "payments":
        await payments(args, client)
    elif command == "payment":
        found = await client.admin_payment(args.payment_id)
        show(args, payment_json(found), "\n".join(payment_details(found)), found.request_id)
    elif command == "refund":
        return await refund(invocation, client)
    elif command == "trace":
        show_trace(args, await client.admin_payment_trace(args.payment_id))
    elif command == "reconcile":
        if args.last:
            last = await client.last_reconcile()
            if last is None:
                raise ClientError("no reconcile ran yet: run 'admin reconcile'")
            return show_report(args, last)
        return show_report(args, await client.reconcile(args.older_than))
    elif command == "overview":
        show_overview(args, await client.overview())
    elif command == "events":
        return await show_events(args, client, payment_fields)
    elif command == "audit":
        return await audit(args, client)
    return 0


async def audit(args: argparse.Namespace, client: GatewayClient) -> int:
    if args.subcommand == "verify":
        verdict = await client.verify_audit(args.expect_head)
        data = {
            "ok": verdict.ok,
            "records": verdict.records,
            "head": str(verdict.head),
            "problem": verdict.problem,
            "first_bad_sequence": verdict.at_sequence or None,
        }
        if verdict.ok:
            text = f"the chain holds: {verdict.records} records, head {verdict.head}"
        else:
            text = f"the chain does NOT hold: {verdict.problem}"
        show(args, data, text, None)
        return 0 if verdict.ok else 1
    cursor, shown = args.after, 0
    while shown < args.limit:
        page = await client.audit_page(cursor, min(1000, args.limit - shown))
        for record in page.records:
            if args.json:
                print(json.dumps(dataclasses.asdict(record)))
            else:
                print(f"{record.sequence} {record.hash[:16]} {record.body}")
        shown += len(page.records)
        if not page.records or page.records[-1].sequence >= page.head_sequence:
            break
        cursor = page.records[-1].sequence
    return 0


async def payments(args: argparse.Namespace, client: GatewayClient) -> None:
    page = await client.list_payments(
        args.page_size,
        args.page_token,
        bank=args.bank,
        account=args.account,
        status=STATUSES[args.status] if args.status else None,
        kind=KINDS[args.kind] if args.kind else None,
        created_from=args.since,
        created_before=args.until,
    )
    lines = [listing_line(p) for p in page.payments] or ["no payments on this page"]
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


def listing_line(payment: Payment) -> str:
    amount = format_minor_units(payment.amount_minor_units, payment.currency)
    refund = f"refund of {payment.refund_of}" if payment.refund_of else ""
    extras = " ".join(text for text in (payment.reason_code, refund) if text)
    return (
        f"{utc_text(payment.created_at)}  {payment.payment_id}  {amount:>12} "
        f"{payment.currency}  {payment.payer!s:<14} -> {payment.payee!s:<14} "
        f"{payment.status:<9} {extras}"
    ).rstrip()


async def refund(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    key = args.idempotency_key or str(uuid.uuid4())
    invocation.repeat_with_key, invocation.repeatable = key, "refund"
    minor_units: int | None = args.amount_minor_units
    done = await client.admin_refund(args.payment_id, minor_units, args.currency, key)
    return show_outcome(args, done, key)


async def deposit(invocation: Invocation, client: GatewayClient) -> None:
    args = invocation.args
    key = args.idempotency_key or str(uuid.uuid4())
    invocation.repeat_with_key, invocation.repeatable = key, "deposit"
    done = await client.deposit(
        args.bank, args.account, args.amount_minor_units, args.currency, key
    )
    amount = format_minor_units(done.amount_minor_units, done.currency)
    balance = format_minor_units(done.balance_minor_units, done.currency)
    show(
        args,
        {
            "bank": done.bank,
            "account": done.account,
            **money_fields("balance", done.balance_minor_units, done.currency),
            "amount": amount,
            "amount_minor_units": done.amount_minor_units,
            "idempotency_key": key,
        },
        f"deposited {amount} {done.currency}; {done.bank}/{done.account} balance {balance} "
        f"{done.currency}",
        done.request_id,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(TOOL, parse(build_parser(), argv), check_flags, work)


if __name__ == "__main__":
    sys.exit(main())
