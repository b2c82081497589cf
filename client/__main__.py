"""``python -m client``: register, log in, check the balance, pay and read the history."""

from __future__ import annotations

import argparse
import sys
import time
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
from protofiles.minipay.v1 import gateway_pb2

SESSION_FILE = "session.json"
STATUS = {v: k.removeprefix("PAYMENT_STATUS_") for k, v in gateway_pb2.PaymentStatus.items()}
DIRECTION = {v: k.removeprefix("DIRECTION_").lower() for k, v in gateway_pb2.Direction.items()}


def build_parser() -> argparse.ArgumentParser:
    parser, commands = new_parser("python -m client", __doc__)

    register = add_command(commands, "register", "link your bank account to the gateway")
    register.add_argument("--bank", required=True)
    register.add_argument("--account", required=True)
    register.add_argument("--username", required=True)
    register.add_argument("--password-stdin", action="store_true")

    login = add_command(commands, "login", "log in and keep the token in the session file")
    login.add_argument("--username", required=True)
    login.add_argument("--password-stdin", action="store_true")

    add_command(commands, "logout", "revoke the token and forget it")
    add_command(commands, "balance", "your balance and what is available")

    pay = add_command(commands, "pay", "pay another account, at any bank")
    pay.add_argument("--to-bank", required=True)
    pay.add_argument("--to-account", required=True)
    pay.add_argument("--amount", required=True, help="e.g. 12.34")
    pay.add_argument("--currency", default="USD")
    pay.add_argument(
        "--idempotency-key", default="", help="reuse to retry safely (default: a new UUID)"
    )

    history = add_command(commands, "history", "your payments, newest first")
    history.add_argument("--page-size", type=int, default=20)
    history.add_argument("--page-token", default="")
    return parser


async def main_async(args: argparse.Namespace) -> int:
    config = config_from(args, "client-1")
    session = session_for(config, SESSION_FILE)
    needs_token = args.command not in {"register", "login"}

    async def work(client: GatewayClient) -> int:
        if args.command == "register":
            answer = await client.register(
                args.username, read_password(args.password_stdin), args.bank, args.account
            )
            show(
                args,
                {
                    "username": answer.username,
                    "bank": answer.account.bank,
                    "account": answer.account.account,
                },
                f"registered {answer.username}: account {answer.account.account} "
                f"at bank {answer.account.bank}",
            )
        elif args.command == "login":
            await log_in(args, client, session)
        elif args.command == "logout":
            await log_out(args, client, session)
        elif args.command == "balance":
            balance = await client.balance()
            data = {
                "bank": balance.account.bank,
                "account": balance.account.account,
                **money_fields("balance", balance.balance),
                **money_fields("available", balance.available),
            }
            show(
                args,
                data,
                f"{balance.account.bank}/{balance.account.account}: "
                f"balance {data['balance']} {balance.balance.currency}, "
                f"available {data['available']} {balance.available.currency}",
            )
        elif args.command == "pay":
            return await pay(args, client)
        elif args.command == "history":
            return await history(args, client)
        return 0

    return await with_client(config, session, needs_token, work)


async def pay(args: argparse.Namespace, client: GatewayClient) -> int:
    minor = to_minor_units(args.amount, args.currency)
    answer = await client.pay(
        args.to_bank, args.to_account, minor, args.currency, args.idempotency_key
    )
    status = STATUS[answer.status]
    amount = format_minor_units(minor, args.currency)
    data = {
        "payment_id": answer.payment_id,
        "status": status,
        "reason": answer.reason,
        "reason_code": answer.reason_code,
        "replayed": answer.replayed,
        "amount": amount,
        "amount_minor": minor,
        "currency": args.currency,
    }
    text = (
        f"payment {answer.payment_id} {status}: {amount} {args.currency} to "
        f"{args.to_bank}/{args.to_account}"
    )
    if answer.reason:
        text += f" ({answer.reason})"
    if answer.replayed:
        text += " [replayed: this key was used before]"
    show(args, data, text)
    return 0 if status == "COMMITTED" else 1


async def history(args: argparse.Namespace, client: GatewayClient) -> int:
    answer = await client.history(args.page_size, args.page_token)
    entries = [
        {
            "payment_id": e.payment_id,
            "direction": DIRECTION[e.direction],
            "counterparty": {"bank": e.counterparty.bank, "account": e.counterparty.account},
            **money_fields("amount", e.amount),
            "status": STATUS[e.status],
            "reason": e.reason,
            "created_at": e.created_at,
        }
        for e in answer.entries
    ]
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['created_at']))}  "
        f"{e['direction']:<8} {e['amount']:>12} {e['currency']}  "
        f"{e['counterparty']['bank'] + '/' + e['counterparty']['account']:<18} "
        f"{e['status']:<9} "
        f"{e['payment_id']}"
        for e in entries
    ] or ["no payments yet"]
    if answer.next_page_token:
        lines.append(f"more: --page-token {answer.next_page_token}")
    show(args, {"entries": entries, "next_page_token": answer.next_page_token}, "\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(main_async, parse(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
