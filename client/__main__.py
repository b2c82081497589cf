"""python -m client: register, log in, check the balance, pay and read the history.

A customer registers once (links their bank account to the gateway, with the password their
bank gave them), then logs in; the session is kept in $MINIPAY_HOME (default ~/.minipay).
Amounts are plain decimals in the currency's units ("12.34"); with --json they come as
text ("amount") and as integer minor units ("amount_minor_units")."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence

from client.api import GatewayClient
from client.cli import (
    Commands,
    Invocation,
    PasswordRequest,
    Tool,
    currency_code,
    money_fields,
    parse,
    password_stdin,
    positive_int,
    run,
    show,
)
from minipay.money import format_minor_units, to_minor_units
from minipay.v1 import gateway_pb2

TOOL = Tool(
    prog="python -m client",
    default_cert="client-1",
    session_file="session.json",
    sessionless=frozenset({"register", "login"}),
)
STATUS = {v: k.removeprefix("PAYMENT_STATUS_") for k, v in gateway_pb2.PaymentStatus.items()}
DIRECTION = {v: k.removeprefix("DIRECTION_").lower() for k, v in gateway_pb2.Direction.items()}


def build_parser() -> argparse.ArgumentParser:
    commands = Commands(TOOL, __doc__)

    register = commands.add(
        "register",
        "link your bank account to the gateway, once, before your first login",
        "Your bank checks the username and password it gave you; the gateway then knows\n"
        "which account is yours. Then log in with 'python -m client login'.",
    )
    register.add_argument("--bank", required=True, help="your bank, e.g. alpha")
    register.add_argument("--account", required=True, help="your account number, e.g. A-1001")
    register.add_argument("--username", required=True, help="the username your bank gave you")
    password_stdin(register, "your password")

    commands.add_login(
        "log in and keep the session in $MINIPAY_HOME/session.json",
        "A customer registers once ('python -m client register') before the first login.",
    )
    commands.add_logout_and_whoami()
    commands.add("balance", "your balance, and how much of it is available to pay with")

    pay = commands.add(
        "pay",
        "pay another account, at any bank",
        "Exits 0 when the payment is committed, 1 when it is not (the reason is printed).",
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

    history = commands.add("history", "your payments, newest first")
    history.add_argument(
        "--page-size", type=positive_int, default=20, metavar="N", help="payments per page"
    )
    history.add_argument(
        "--page-token",
        default="",
        metavar="TOKEN",
        help="the page to show, as printed after 'more:' (default: the newest payments)",
    )
    return commands.parser


def prepare(args: argparse.Namespace) -> PasswordRequest | None:
    """Checks the flags before anything is asked or sent; says which password is needed."""
    if args.command == "register":
        return PasswordRequest(f"Password for {args.username}: ")
    if args.command == "pay":
        args.amount_minor_units = to_minor_units(args.amount, args.currency)
    return None


async def work(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    if args.command == "register":
        answer = await client.register(args.username, invocation.password, args.bank, args.account)
        show(
            args,
            {
                "username": answer.username,
                "bank": answer.account.bank,
                "account": answer.account.account,
            },
            f"registered {answer.username}: account {answer.account.account} "
            f"at bank {answer.account.bank}; now log in with "
            f"'{TOOL.prog} login --username {answer.username}'",
        )
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
        return await pay(invocation, client)
    elif args.command == "history":
        return await history(args, client)
    return 0


async def pay(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    key = args.idempotency_key or str(uuid.uuid4())
    invocation.repeat_with_key, invocation.repeatable = key, "payment"
    minor_units: int = args.amount_minor_units
    answer = await client.pay(args.to_bank, args.to_account, minor_units, args.currency, key)
    status = STATUS[answer.status]
    amount = format_minor_units(minor_units, args.currency)
    data = {
        "payment_id": answer.payment_id,
        "status": status,
        "reason": answer.reason,
        "reason_code": answer.reason_code,
        "replayed": answer.replayed,
        "amount": amount,
        "amount_minor_units": minor_units,
        "currency": args.currency,
        "idempotency_key": key,
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
    return run(TOOL, parse(build_parser(), argv), prepare, work)


if __name__ == "__main__":
    sys.exit(main())
