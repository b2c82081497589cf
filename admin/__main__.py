"""``python -m admin``: log in as an admin, list banks, create, list, disable and enable
users, and deposit money."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from client.api import GatewayClient
from client.cli import (
    add_command,
    config_from,
    log_in,
    log_out,
    money_fields,
    new_parser,
    parse,
    read_password,
    run,
    session_for,
    show,
    with_client,
)
from client.money import format_minor_units, to_minor_units
from protofiles.minipay.v1 import admin_pb2

SESSION_FILE = "admin-session.json"


def build_parser() -> argparse.ArgumentParser:
    parser, commands = new_parser("python -m admin", __doc__)
    login = add_command(commands, "login", "log in as an admin")
    login.add_argument("--username", required=True)
    login.add_argument("--password-stdin", action="store_true")
    add_command(commands, "logout", "revoke the admin token")
    add_command(commands, "list-banks", "the banks the gateway knows, and whether they answer")

    create = add_command(commands, "create-user", "create a customer and their account")
    create.add_argument("--username", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--bank", default="")
    create.add_argument("--account", default="")
    create.add_argument("--balance", default="0", help="opening balance, e.g. 100.00")
    create.add_argument("--currency", default="USD")
    create.add_argument("--role", default="customer", choices=["customer", "admin"])
    create.add_argument("--password-stdin", action="store_true")

    users = add_command(commands, "list-users", "customers and their accounts")
    users.add_argument("--bank", default="")
    for name, text in (
        ("disable-user", "disable a customer"),
        ("enable-user", "enable a customer"),
    ):
        toggle = add_command(commands, name, text)
        toggle.add_argument("--bank", required=True)
        toggle.add_argument("--username", required=True)

    deposit = add_command(commands, "deposit", "add money to an account")
    deposit.add_argument("--bank", required=True)
    deposit.add_argument("--account", required=True)
    deposit.add_argument("--amount", required=True)
    deposit.add_argument("--currency", default="USD")
    deposit.add_argument("--idempotency-key", default="")
    return parser


def user_fields(user: admin_pb2.User) -> dict[str, object]:
    return {
        "username": user.username,
        "name": user.name,
        "role": user.role,
        "disabled": user.disabled,
        "bank": user.account.bank,
        "account": user.account.account,
        **money_fields("balance", user.balance),
    }


def user_line(user: admin_pb2.User) -> str:
    state = "disabled" if user.disabled else "active"
    if user.role == "admin" and not user.account.bank:
        return f"{user.username:<12} admin"
    return (
        f"{user.username:<12} {user.name:<20} {user.account.bank}/{user.account.account:<10} "
        f"{format_minor_units(user.balance.minor_units, user.balance.currency):>12} "
        f"{user.balance.currency} {state}"
    )


async def main_async(args: argparse.Namespace) -> int:
    config = config_from(args, "admin")
    session = session_for(config, SESSION_FILE)

    async def work(client: GatewayClient) -> int:
        command = args.command
        if command == "login":
            await log_in(args, client, session)
        elif command == "logout":
            await log_out(args, client, session)
        elif command == "list-banks":
            banks = (await client.list_banks()).banks
            show(
                args,
                {
                    "banks": [
                        {"name": b.name, "address": b.address, "serving": b.serving} for b in banks
                    ]
                },
                "\n".join(
                    f"{b.name:<10} {b.address:<22} {'serving' if b.serving else 'NOT ANSWERING'}"
                    for b in banks
                ),
            )
        elif command == "create-user":
            balance = (
                to_minor_units(args.balance, args.currency)
                if args.balance not in ("0", "0.00")
                else 0
            )
            user = (
                await client.create_user(
                    username=args.username,
                    name=args.name,
                    password=read_password(args.password_stdin),
                    bank=args.bank,
                    account=args.account,
                    balance_minor=balance,
                    currency=args.currency,
                    role=args.role,
                )
            ).user
            show(args, user_fields(user), f"created {user_line(user)}")
        elif command == "list-users":
            users = (await client.list_users(args.bank)).users
            show(
                args,
                {"users": [user_fields(u) for u in users]},
                "\n".join(user_line(u) for u in users) or "no users",
            )
        elif command in ("disable-user", "enable-user"):
            user = (
                await client.set_disabled(args.bank, args.username, command == "disable-user")
            ).user
            show(args, user_fields(user), user_line(user))
        elif command == "deposit":
            minor = to_minor_units(args.amount, args.currency)
            answer = await client.deposit(
                args.bank, args.account, minor, args.currency, args.idempotency_key
            )
            show(
                args,
                {
                    "bank": args.bank,
                    "account": args.account,
                    **money_fields("balance", answer.balance),
                },
                f"deposited {format_minor_units(minor, args.currency)} {args.currency}; "
                f"{args.bank}/{args.account} balance "
                f"{format_minor_units(answer.balance.minor_units, answer.balance.currency)}",
            )
        return 0

    return await with_client(config, session, args.command != "login", work)


def main(argv: Sequence[str] | None = None) -> int:
    return run(main_async, parse(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
