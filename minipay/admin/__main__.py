"""python -m admin: log in as an admin, list banks, create, list, disable and enable
users, deposit money, and read any payment's story (trace).

The admin's session is kept apart from a customer's, in $MINIPAY_HOME/admin-session.json
(default ~/.minipay). Amounts are plain decimals in the currency's units ("100.00"); with
--json they come as text ("balance") and as integer minor units ("balance_minor_units")."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence

from minipay.client.api import ClientError, GatewayClient, User
from minipay.client.commandline import (
    TRACE_DETAILS,
    Commands,
    Invocation,
    PasswordRequest,
    Tool,
    currency_code,
    money_fields,
    parse,
    password_stdin,
    run,
    show,
    show_trace,
)
from minipay.money import format_minor_units, to_minor_units

TOOL = Tool(prog="python -m admin", default_cert="admin", session_file="admin-session.json")


def build_parser() -> argparse.ArgumentParser:
    commands = Commands(TOOL, __doc__)
    commands.add_login("log in as an admin and keep the session in $MINIPAY_HOME")
    commands.add_logout_and_whoami()
    commands.add("list-banks", "the banks the gateway knows, and whether they answer")

    create = commands.add(
        "create-user",
        "create a customer and their account (or, with --role admin, an admin)",
        "The new user's password is asked twice at the terminal, or read from the first\n"
        "line of standard input with --password-stdin. A customer then registers once\n"
        "('python -m client register') before logging in.",
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
    trace_command = commands.add(
        "trace",
        "any payment's story, step by step: every step of its two-phase commit",
        TRACE_DETAILS,
    )
    trace_command.add_argument("payment_id", metavar="ID", help="the payment's id")
    return commands.parser


def prepare(args: argparse.Namespace) -> PasswordRequest | None:
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
    elif command == "trace":
        show_trace(args, await client.admin_payment_trace(args.payment_id))
    return 0


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
    return run(TOOL, parse(build_parser(), argv), prepare, work)


if __name__ == "__main__":
    sys.exit(main())
