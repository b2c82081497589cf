"""Command line of the dev certificate tool: ``python -m certificate init|issue``.

This module owns argument parsing and how results and errors are shown to a person;
certificate.ca does the work.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from certificate.ca import DEFAULT_BANKS, DEV_DIR, CertificateError, ensure_dev_pki, ensure_leaf


def _display(path: Path) -> str:
    """PATH relative to the current folder when it is inside it, as a person would type it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m certificate",
        description="Creates the development CA and the certificates that minipay's processes "
        "use for mutual TLS. Existing files are kept unless --force is given.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init",
        help="create the CA and the certificates of the gateway, banks, admin and clients",
        description="Creates ca.pem/ca-key.pem and NAME.pem/NAME-key.pem for gateway, each "
        "bank, admin, client-1 and client-2. Existing files are kept; a new CA means new "
        "leaves.",
    )
    init.add_argument(
        "--out",
        type=Path,
        default=DEV_DIR,
        metavar="DIR",
        help=f"output folder (default: {_display(DEV_DIR)})",
    )
    init.add_argument(
        "--force", action="store_true", help="regenerate everything, including the CA"
    )
    init.add_argument(
        "--bank",
        action="append",
        dest="banks",
        metavar="NAME",
        help=f"a bank to issue a certificate for; repeat for several "
        f"(default: {', '.join(DEFAULT_BANKS)})",
    )

    issue = commands.add_parser(
        "issue",
        help="issue one more certificate (e.g. client-3) from the existing CA",
        description="Issues NAME.pem/NAME-key.pem signed by the CA in DIR. The CA must exist.",
    )
    issue.add_argument(
        "name",
        metavar="NAME",
        help="the certificate's CN and file name: letters, digits, '.', '_', '-'",
    )
    issue.add_argument(
        "--out",
        type=Path,
        default=DEV_DIR,
        metavar="DIR",
        help=f"folder holding the CA (default: {_display(DEV_DIR)})",
    )
    issue.add_argument(
        "--force", action="store_true", help="replace NAME's certificate and key if they exist"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            actions = ensure_dev_pki(args.out, banks=args.banks or DEFAULT_BANKS, force=args.force)
        else:
            actions = ensure_leaf(args.out, args.name, force=args.force)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
