"""What the client and admin command lines share: connection flags, the session file,
reading passwords, printing text or JSON, and turning errors into one line and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc

from client.api import ClientConfig, ClientError, GatewayClient, SavedSession
from client.money import AmountError, format_minor_units
from protofiles.minipay.v1 import common_pb2
from server.common.logs import JsonFormatter

EXIT_ERROR = 1
EXIT_USAGE = 2


def _connection_flags() -> argparse.ArgumentParser:
    # SUPPRESS: a flag given before or after the command name is kept, not reset by the other.
    flags = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    flags.add_argument("--gateway", help="gateway address [env MINIPAY_GATEWAY; 127.0.0.1:50051]")
    flags.add_argument("--ca", type=Path, help="CA certificate [env MINIPAY_CA; dev CA]")
    flags.add_argument("--cert", type=Path, help="client certificate [env MINIPAY_CERT]")
    flags.add_argument("--key", type=Path, help="client private key [env MINIPAY_KEY]")
    flags.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )
    flags.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log retries to standard error",
    )
    return flags


CONNECTION_FLAGS = _connection_flags()


def new_parser(
    prog: str, description: str | None
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[Any]]:
    """A parser whose connection flags work before or after the command."""
    parser = argparse.ArgumentParser(prog=prog, description=description, parents=[CONNECTION_FLAGS])
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def add_command(
    commands: argparse._SubParsersAction[Any], name: str, help: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, parents=[CONNECTION_FLAGS]
    )
    return parser


def config_from(args: argparse.Namespace, default_cert: str) -> ClientConfig:
    return ClientConfig.from_env(
        default_cert, gateway=args.gateway, ca=args.ca, cert=args.cert, key=args.key
    )


def read_password(from_stdin: bool, prompt: str = "Password: ") -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


def money_fields(name: str, money: common_pb2.Money) -> dict[str, Any]:
    return {
        name: format_minor_units(money.minor_units, money.currency),
        f"{name}_minor": money.minor_units,
        "currency": money.currency,
    }


def show(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def session_for(config: ClientConfig, filename: str) -> SavedSession:
    return SavedSession(config.home / filename)


async def with_client(
    config: ClientConfig,
    session: SavedSession,
    needs_token: bool,
    work: Callable[[GatewayClient], Awaitable[int]],
) -> int:
    token = ""
    if needs_token:
        token = str(session.load().get("token", ""))
        if not token:
            raise ClientError("not logged in: run the 'login' command first")
    async with GatewayClient(config, token) as client:
        return await work(client)


def configure_client_logging(args: argparse.Namespace) -> None:
    """JSON lines to MINIPAY_HOME/logs/client.log; to standard error too with --verbose."""
    home = ClientConfig.from_env().home
    handlers: list[logging.Handler] = []
    try:
        (home / "logs").mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(home / "logs" / "client.log"))
    except OSError:
        pass  # logging must never stop a command
    if args.verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    logger = logging.getLogger("minipay.client")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in handlers:
        handler.setFormatter(JsonFormatter("client"))
        logger.addHandler(handler)


async def log_in(args: argparse.Namespace, client: GatewayClient, session: SavedSession) -> None:
    login = await client.login(args.username, read_password(args.password_stdin))
    session.save(
        {
            "token": login.token,
            "username": args.username,
            "role": login.role,
            "expires_at": login.expires_at,
        }
    )
    until = time.strftime("%H:%M:%S", time.localtime(login.expires_at))
    show(
        args,
        {"username": args.username, "role": login.role, "expires_at": login.expires_at},
        f"logged in as {args.username} ({login.role}) until {until}",
    )


async def log_out(args: argparse.Namespace, client: GatewayClient, session: SavedSession) -> None:
    await client.logout()
    session.clear()
    show(args, {"logged_out": True}, "logged out")


def run(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace
) -> int:
    """Runs a command; expected errors become one line on stderr and a non-zero exit."""
    configure_client_logging(args)
    try:
        return asyncio.run(main(args))
    except grpc.aio.AioRpcError as error:
        return _fail(args, error.code().name, error.details() or "", EXIT_ERROR)
    except (ClientError, AmountError) as error:
        return _fail(args, "CLIENT_ERROR", str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        return 130


def _fail(args: argparse.Namespace, code: str, message: str, exit_code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message}}))
    print(
        f"error: {code}: {message}" if code != "CLIENT_ERROR" else f"error: {message}",
        file=sys.stderr,
    )
    return exit_code


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    # Not set_defaults: the flag actions are shared with every command's parser.
    for name, default in (
        ("gateway", None),
        ("ca", None),
        ("cert", None),
        ("key", None),
        ("json", False),
        ("verbose", False),
    ):
        if not hasattr(args, name):
            setattr(args, name, default)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return args
