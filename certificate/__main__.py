"""Command line of the dev certificate tool: ``python -m certificate init|issue-service|
issue-client``.

This module owns argument parsing and how results and errors are shown to a person;
certificate.ca does the work.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from certificate.ca import (
    ADMIN,
    CLIENTS_CA,
    CLIENTS_CA_KEY,
    DEFAULT_BANKS,
    DEFAULT_CLIENTS,
    DEV_DIR,
    GATEWAY,
    SERVICES_CA,
    SERVICES_CA_KEY,
    CertificateError,
    ensure_dev_pki,
    issue_client,
    issue_service,
    obsolete_files,
)
from minipay.service_names import (
    GATEWAY_ID,
    GATEWAY_SERVER_NAME,
    bank_id,
    bank_server_name,
    client_id,
)


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake in one ``error:`` line, like every other error of the tool."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _display(path: Path) -> str:
    """PATH relative to the current folder when it is inside it, as a person would type it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _add_out_and_force(parser: argparse.ArgumentParser, force_help: str) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=DEV_DIR,
        metavar="DIR",
        help=f"the folder of the CAs and certificates (default: {_display(DEV_DIR)})",
    )
    parser.add_argument("--force", action="store_true", help=force_help)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m certificate",
        description="Creates the development CAs and the certificates that minipay's processes "
        f"use for mutual TLS: the services CA ({SERVICES_CA}) signs only the gateway's and "
        f"the banks' certificates, the clients CA ({CLIENTS_CA}) only customers' and "
        "admins'. Existing files are kept unless --force is given.",
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to do; COMMAND --help tells more",
    )

    init = commands.add_parser(
        "init",
        help="create both CAs and the certificates of the gateway, banks, admin and clients",
        description=f"Creates {SERVICES_CA}/{SERVICES_CA_KEY} and {CLIENTS_CA}/"
        f"{CLIENTS_CA_KEY}; from the services CA, NAME.pem/NAME-key.pem for {GATEWAY} and "
        f"each bank; from the clients CA, the same for {ADMIN} and each client. Existing "
        "files are kept (and checked); a new CA means new certificates for everything it signs.",
    )
    _add_out_and_force(init, "regenerate everything, including both CAs")
    init.add_argument(
        "--bank",
        action="append",
        dest="banks",
        metavar="NAME",
        help="a bank to issue a service certificate for; repeat for several "
        f"(default: {', '.join(DEFAULT_BANKS)})",
    )
    init.add_argument(
        "--client",
        action="append",
        dest="clients",
        metavar="NAME",
        help=f"a client to issue a client certificate for, besides {ADMIN}; repeat for several "
        f"(default: {', '.join(DEFAULT_CLIENTS)})",
    )

    service = commands.add_parser(
        "issue-service",
        help="issue the certificate of the gateway or of a bank from the services CA",
        description="Issues a service certificate (the service's DNS name and SPIFFE id, server "
        "and client usage) from the services CA, which must exist. Refused for a client's name: "
        f"{ADMIN}, {', '.join(DEFAULT_CLIENTS)}, or a name with a client certificate in the "
        "folder.",
    )
    services = service.add_subparsers(
        dest="service", required=True, metavar="SERVICE", help="which service"
    )
    gateway = services.add_parser(
        "gateway",
        help=f"the gateway: {GATEWAY}.pem with DNS {GATEWAY_SERVER_NAME} and URI {GATEWAY_ID}",
        description=f"Issues {GATEWAY}.pem/{GATEWAY}-key.pem (CN {GATEWAY}, DNS "
        f"{GATEWAY_SERVER_NAME}, URI {GATEWAY_ID}) from the services CA in DIR.",
    )
    _add_out_and_force(gateway, "replace the gateway's certificate and key if they exist")
    bank = services.add_parser(
        "bank",
        help=f"bank NAME: NAME.pem with DNS {bank_server_name('NAME')} and URI {bank_id('NAME')}",
        description=f"Issues NAME.pem/NAME-key.pem (CN NAME, DNS {bank_server_name('NAME')}, "
        f"URI {bank_id('NAME')}) from the services CA in DIR.",
    )
    bank.add_argument(
        "name",
        metavar="NAME",
        help="the bank's name, a DNS label: lower-case letters, digits and '-'",
    )
    _add_out_and_force(bank, "replace NAME's certificate and key if they exist")

    client = commands.add_parser(
        "issue-client",
        help="issue one more customer or admin certificate (e.g. client-3) from the clients CA",
        description=f"Issues NAME.pem/NAME-key.pem (CN NAME, URI {client_id('NAME')}, client "
        "usage only) from the clients CA in DIR, which must exist. Refused for a service's "
        f"name: {GATEWAY}, {', '.join(DEFAULT_BANKS)}, or a name with a service certificate "
        "in DIR.",
    )
    client.add_argument(
        "name",
        metavar="NAME",
        help="the certificate's CN and file name: letters, digits, '.', '_', '-'",
    )
    _add_out_and_force(client, "replace NAME's certificate and key if they exist")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            actions = ensure_dev_pki(
                args.out,
                banks=args.banks or DEFAULT_BANKS,
                clients=args.clients or DEFAULT_CLIENTS,
                force=args.force,
            )
            obsolete = obsolete_files(args.out)
        elif args.command == "issue-service":
            is_bank = args.service == "bank"
            name = args.name if is_bank else GATEWAY
            actions = issue_service(args.out, name, bank=is_bank, force=args.force)
            obsolete = []
        else:
            actions = issue_client(args.out, args.name, force=args.force)
            obsolete = []
    except CertificateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # Backstop: ca.py turns the failures it expects into CertificateError already.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        for action, path in actions:
            print(f"{action} {_display(path)}")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; the files are written, so this is not a failure.
        # Pointing stdout at /dev/null keeps the interpreter's final flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if obsolete:
        files = " and ".join(_display(path) for path in obsolete)
        verb = "is" if len(obsolete) == 1 else "are"
        print(
            f"note: {files} {verb} left from the old single CA and nothing uses "
            f"{'it' if len(obsolete) == 1 else 'them'} any more; you may delete "
            f"{'it' if len(obsolete) == 1 else 'them'}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
