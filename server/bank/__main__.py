"""``python -m server.bank --name NAME``: run one bank server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from server.bank.app import run_server
from server.common.errors import ConfigError
from server.common.logs import configure_logging
from server.common.serving import keep_files_private, wait_for_signal
from server.common.settings import BankSettings, parse_settings


async def serve(settings: BankSettings) -> None:
    bank = await run_server(settings)
    print(f"bank {settings.name} listening on port {bank.port}", file=sys.stderr, flush=True)
    await wait_for_signal()
    await bank.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(
            BankSettings, argv, "python -m server.bank", "Run one bank server (a 2PC participant)."
        )
    except ConfigError as error:
        print(f"error: bank: {error}", file=sys.stderr)
        return 2
    try:
        keep_files_private()
        configure_logging(settings)
        asyncio.run(serve(settings))
    except (ConfigError, ValueError) as error:
        print(f"error: bank {settings.name}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
