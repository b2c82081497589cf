"""``python -m server.gateway``: run the payment gateway until Ctrl-C or SIGTERM.

``python -m server.gateway create-admin --username U --password-stdin`` adds an admin to the
gateway's database (run it where that database is), like Django's ``createsuperuser``;
``python -m server.gateway rotate-key`` gives a replica a new token signing key.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Sequence

from server.common import validation
from server.common.db import open_database
from server.common.errors import ConfigError, MinipayError
from server.common.logs import configure_logging
from server.common.passwords import hash_password
from server.common.serving import keep_files_private, wait_for_signal
from server.common.settings import GatewaySettings, add_arguments, from_namespace
from server.gateway.app import run_server
from server.gateway.token_keys import load_key, publish, write_new_key
from server.gateway.users import create_admin


async def serve(settings: GatewaySettings) -> None:
    gateway = await run_server(settings)
    print(f"gateway listening on port {gateway.port}", file=sys.stderr, flush=True)
    await wait_for_signal()
    await gateway.stop()


def create_admin_command(settings: GatewaySettings, username: str, password_stdin: bool) -> None:
    password = sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass()
    validation.username(username)
    validation.password(password)
    # Not exclusive: a running gateway may hold the database; this only adds a row.
    database = open_database(settings.db_url, "gateway", exclusive=False)
    password_hash = hash_password(password, settings.bcrypt_rounds)
    database.run_sync(lambda s: create_admin(s, username, password_hash))
    database.close()
    print(f"admin {username} created")


def rotate_key_command(settings: GatewaySettings) -> None:
    """A new token signing key for this replica, published for every replica to verify."""
    database = open_database(settings.db_url, "gateway", exclusive=False)
    try:
        write_new_key(settings.token_key_path)
        key = load_key(settings.token_key_path, create=False)
        database.run_statements(lambda c: publish(c, settings.name, key, time.time()))
    finally:
        database.close()
    print(
        f"replica {settings.name} signs new tokens with key {key.kid} (within a second if it "
        "runs); every replica refuses the tokens its old key signed within a second: their "
        "holders log in again"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.gateway",
        description="Run the payment gateway (the 2PC coordinator).",
    )
    add_arguments(parser, GatewaySettings)
    commands = parser.add_subparsers(dest="command")
    admin = commands.add_parser("create-admin", help="add an admin to the gateway's database")
    admin.add_argument("--username", required=True)
    admin.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of a prompt",
    )
    commands.add_parser(
        "rotate-key",
        help="give this replica a new token signing key (the old key's tokens end at once)",
    )
    args = parser.parse_args(argv)
    try:
        settings = from_namespace(GatewaySettings, args)
        keep_files_private()
        if args.command == "create-admin":
            create_admin_command(settings, args.username, args.password_stdin)
            return 0
        if args.command == "rotate-key":
            rotate_key_command(settings)
            return 0
        configure_logging(settings)
        asyncio.run(serve(settings))
    except (ConfigError, ValueError) as error:
        print(f"error: gateway: {error}", file=sys.stderr)
        return 2
    except MinipayError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
