"""What the client and admin command lines share: connection flags, the session file, the
login, logout and whoami commands, reading passwords, printing text or JSON, and turning
errors into one line and an exit code.

A command runs in this order, so that nobody types a password for a command that cannot
work: parse the flags, check them (amounts, currencies: each tool's ``check_flags``), check
the saved session and the certificate files, ask for the password (before any event loop or
channel exists, so Ctrl-C and Ctrl-D work at the prompt), then call the gateway.

The tools name themselves as the user runs them: ``minipay`` and ``minipay-admin`` where
installed, ``python -m client`` and ``python -m admin`` in a checkout.

Exit status (both tools; also at the end of ``--help``):

- 0: done. ``whoami`` and ``logout`` exit 0 when not logged in too, and say so.
- 1: the gateway (or a bank) refused the call, or the gateway could not be reached;
  ``pay``: the payment was not committed.
- 2: a problem on this side, found before anything is sent: a bad flag or amount, no saved
  session, no password (Ctrl-D at the prompt, empty standard input), passwords that differ,
  a certificate that cannot be read.
- Ctrl-C, at the password prompt or during a call: one line, then the command ends by SIGINT
  (the shell reports 130), so that a shell loop around it stops as well.

Output: text, or with ``--json`` one JSON object whose ``request_id`` is the id of the call
that answered (null when nothing was sent); ``--verbose`` prints that id on standard error.
Times in JSON are ISO 8601, in UTC.

Errors are one line on standard error, ``error: CODE (REASON): message`` (``error: CODE:
message`` when the gateway gave no reason, just ``error: message`` for a problem found on
this side), with ``[request id ...]`` under ``--verbose``; a file's bad rows (``pay-batch``)
follow it, one per line (``  line N: what is wrong``), and are its ``field_violations``;
with ``--json`` a JSON object is printed on standard output as well: ``{"error": {"code",
"reason", "message", "metadata", "request_id", "field_violations", "retry_after_s"}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import grpc

from minipay import money
from minipay.client.api import (
    DEFAULT_ATTEMPTS,
    DEFAULT_DEADLINE,
    DEFAULT_GATEWAY,
    DEFAULT_TIMEOUT,
    MAX_PAGE_SIZE,
    RETRYABLE,
    ClientConfig,
    GatewayClient,
    SavedSession,
)
from minipay.client.errors import ApiError, ClientError, GatewayUnreachable
from minipay.client.logs import configure_client_logging
from minipay.client.trace import PaymentTrace, trace_json
from minipay.client.trace_text import for_terminal
from minipay.launch import INTERRUPTED, die_interrupted
from minipay.money import AmountError, format_minor_units

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

EXIT_STATUS_HELP = """\
exit status:
  0    done; whoami and logout also when not logged in
  1    the gateway or a bank refused, or the gateway could not be reached
       (pay: the payment was not committed)
  2    a problem on this side, found before anything was sent: a bad flag or
       amount, not logged in, no password given (Ctrl-D at the prompt)
  Ctrl-C ends the command by SIGINT (the shell shows 130), so a loop stops too
errors are one line on standard error, "error: CODE (REASON): message" (the
request id too with --verbose); with --json also a JSON object on standard
output: {"error": {"code", "reason", "message", "metadata", "request_id",
"field_violations", "retry_after_s"}}"""

SHARED_COMMANDS = frozenset({"login", "logout", "whoami"})
# The tools' installed commands, by the package a checkout runs with ``python -m``.
INSTALLED_COMMANDS = {"client": "minipay", "admin": "minipay-admin"}


def command_name(tool: str) -> str:
    """How the user runs TOOL ("client" or "admin"), judged by how this process started:
    ``python -m client`` when it was started so (``python -m minipay.client`` likewise, and
    then the admin's is ``python -m minipay.admin``), else the installed command."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name: str = getattr(spec, "name", "") or ""
    prefix, _, package = name.removesuffix(".__main__").rpartition(".")
    if name.endswith(".__main__") and package in INSTALLED_COMMANDS:
        return f"python -m {prefix + '.' if prefix else ''}{tool}"
    return INSTALLED_COMMANDS[tool]


@dataclass(frozen=True)
class Tool:
    """What differs between the customer's and the admin's command line."""

    name: str  # "client" or "admin"
    default_cert: str  # certificate/dev/<this>.pem in a checkout, when no flag or variable says
    session_file: str  # in MINIPAY_HOME
    sessionless: frozenset[str] = frozenset({"login"})  # commands run without a session

    @property
    def prog(self) -> str:
        """The command as the user types it: "minipay", or "python -m client"."""
        return command_name(self.name)


@dataclass(frozen=True)
class PasswordRequest:
    """A password a command needs: the prompt, and a second prompt to repeat it at a
    terminal (a new user's password, where a typo would lock them out)."""

    prompt: str
    confirm: str = ""


@dataclass
class Invocation:
    """One command as it runs: its flags, where to connect, the session and the password."""

    args: argparse.Namespace
    config: ClientConfig
    session: SavedSession
    password: str = ""
    # For the error line: how to repeat a payment or deposit whose outcome is unknown, and
    # how to log in again when the gateway refuses the saved token.
    repeat_with_key: str = ""
    repeatable: str = ""  # "payment", "deposit"
    relogin: str = ""


CheckFlags = Callable[[argparse.Namespace], PasswordRequest | None]
Work = Callable[[Invocation, GatewayClient], Awaitable[int]]


# -- flags and help -----------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and epilogs as written, and adds "(default: X)" to every flag that
    has a default worth showing (not to switches, required flags, or help that says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.nargs == 0
            or action.default in (None, "", argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class UsageError(Exception):
    """A flag the parser refuses: one line, like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def positive_seconds(text: str) -> float:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text.strip()) or float(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return float(text)


def currency_code(text: str) -> str:
    """An ISO 4217 code that ``minipay.money`` knows: an unknown one is refused here, before
    anything is sent."""
    try:
        return money.currency_code(text)
    except AmountError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def page_size(text: str) -> int:
    """1 to the gateway's largest page, as the gateway takes it."""
    size = positive_int(text)
    if size > MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_PAGE_SIZE}")
    return size


def _connection_flags(tool: Tool) -> _Parser:
    # SUPPRESS: a flag given before or after the command name is kept, not reset by the other.
    flags = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    group = flags.add_argument_group("connection and output (before or after the command)")
    group.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        help=f"the gateway's address (default: $MINIPAY_GATEWAY, else {DEFAULT_GATEWAY})",
    )
    group.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="the services CA, which signed the gateway's certificate "
        "(default: $MINIPAY_CA, else in a checkout certificate/dev/services-ca.pem)",
    )
    group.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="this machine's client certificate (default: $MINIPAY_CERT, else in a checkout "
        f"certificate/dev/{tool.default_cert}.pem)",
    )
    group.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="the private key of --cert (default: $MINIPAY_KEY, else in a checkout "
        f"certificate/dev/{tool.default_cert}-key.pem)",
    )
    group.add_argument(
        "--attempts",
        type=positive_int,
        metavar="N",
        help="tries per call while the gateway is unavailable, with backoff: the default "
        "outlasts a restart of the gateway "
        f"(default: $MINIPAY_ATTEMPTS, else {DEFAULT_ATTEMPTS})",
    )
    group.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help=f"how long to wait for each attempt (default: $MINIPAY_TIMEOUT, else "
        f"{DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--deadline",
        type=positive_seconds,
        metavar="SECONDS",
        help="how long the whole call may take, its retries included "
        f"(default: $MINIPAY_DEADLINE, else {DEFAULT_DEADLINE:g})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="print JSON on standard output, errors included (default: text)",
    )
    group.add_argument(
        "--verbose",
        action="store_true",
        help="print the request id of the call, and log every call and retry to standard "
        "error as well (default: only to $MINIPAY_HOME/logs/client.log)",
    )
    return flags


class Commands:
    """A tool's parser: connection flags before or after the command, one-line descriptions,
    defaults in every flag's help, and the exit status at the end of every help."""

    def __init__(self, tool: Tool, description: str | None) -> None:
        self.tool = tool
        self._flags = _connection_flags(tool)
        self.parser: argparse.ArgumentParser = _Parser(
            prog=tool.prog,
            description=description,
            epilog=EXIT_STATUS_HELP,
            formatter_class=HelpFormatter,
            parents=[self._flags],
        )
        self._commands = self.parser.add_subparsers(
            dest="command", metavar="COMMAND", title="commands"
        )

    def add(self, name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        """A command: SUMMARY is its line in the tool's help and the first line of its own."""
        description = summary[0].upper() + summary[1:] + "."
        if details:
            description += "\n\n" + details
        parser: argparse.ArgumentParser = self._commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=f"exit status and errors: see '{self.tool.prog} --help'",
            formatter_class=HelpFormatter,
            parents=[self._flags],
        )
        return parser

    def add_under(
        self, parent: argparse.ArgumentParser, name: str, summary: str, details: str = ""
    ) -> argparse.ArgumentParser:
        """A command under PARENT ("audit verify"): its name is in ``args.subcommand``."""
        group = parent.__dict__.get("_minipay_subcommands")
        if group is None:
            group = parent.add_subparsers(
                dest="subcommand", metavar="COMMAND", required=True, help="one of these:"
            )
            parent.__dict__["_minipay_subcommands"] = group
        description = summary[0].upper() + summary[1:] + "."
        if details:
            description += "\n\n" + details
        parser: argparse.ArgumentParser = group.add_parser(
            name,
            help=summary,
            description=description,
            epilog=f"exit status and errors: see '{self.tool.prog} --help'",
            formatter_class=HelpFormatter,
            parents=[self._flags],
        )
        return parser

    def add_login(self, summary: str, details: str = "") -> None:
        login = self.add("login", summary, details)
        login.add_argument("--username", required=True, help="who logs in")
        password_stdin(login, "the password")

    def add_logout_and_whoami(self) -> None:
        session = f"$MINIPAY_HOME/{self.tool.session_file} (MINIPAY_HOME: default ~/.minipay)"
        self.add(
            "logout",
            "revoke the saved session's token at the gateway and forget it",
            "When not logged in, says so and exits 0.",
        )
        self.add(
            "whoami",
            "who the saved session is for, with its role and when it expires",
            f"Reads {session}; sends nothing. Exits 0 whether or not you are logged in\n"
            'and says "not logged in" or that the session expired; with --json, the\n'
            'object has "logged_in" (true or false) and "expired".',
        )


def add_refund_flags(refund: argparse.ArgumentParser) -> None:
    """What a refund names, the same for a payee and an admin: the payment, how much, its
    currency, and the idempotency key."""
    refund.add_argument(
        "payment_id", metavar="PAYMENT_ID", help="the payment to give back, e.g. pay_3f2a..."
    )
    refund.add_argument(
        "--amount",
        help="how much, as a plain decimal in the payment's currency, e.g. 5.00 "
        "(default: all that is left to refund)",
    )
    refund.add_argument(
        "--currency",
        type=currency_code,
        default="USD",
        help="the payment's currency, with --amount",
    )
    refund.add_argument(
        "--idempotency-key",
        default="",
        metavar="KEY",
        help="any unique text; running the command again with the same key returns the first "
        "outcome and never refunds twice (default: a new random key, shown with --json)",
    )


def password_stdin(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read {whose} from the first line of standard input, for scripts "
        "(default: ask at the terminal, without echo)",
    )


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags, or SystemExit(2) after one line (and a JSON object with --json)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        raise SystemExit(
            _fail(argparse.Namespace(json="--json" in argv), EXIT_USAGE, "USAGE", str(error))
        ) from None
    # Not set_defaults: the flag actions are shared with every command's parser.
    for name, default in (
        ("gateway", None),
        ("ca", None),
        ("cert", None),
        ("key", None),
        ("attempts", None),
        ("timeout", None),
        ("deadline", None),
        ("json", False),
        ("verbose", False),
    ):
        if not hasattr(args, name):
            setattr(args, name, default)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return args


def config_from(args: argparse.Namespace, tool: Tool) -> ClientConfig:
    return ClientConfig.from_env(
        tool.default_cert,
        gateway=args.gateway,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        timeout=args.timeout,
        max_attempts=args.attempts,
        deadline=args.deadline,
    )


# -- passwords ----------------------------------------------------------------------------------


def read_password(request: PasswordRequest, from_stdin: bool) -> str:
    """The password from the first line of standard input, or asked at the terminal (twice
    when REQUEST says so). Ctrl-C raises KeyboardInterrupt, Ctrl-D a ClientError, at once."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise ClientError("--password-stdin: standard input is empty; expected the password")
        password = line.rstrip("\r\n")
    else:
        password = _ask(request.prompt)
        if password and request.confirm and _ask(request.confirm) != password:
            raise ClientError("the two passwords differ; nothing was sent")
    if not password:
        raise ClientError("the password is empty; nothing was sent")
    return password


def _ask(prompt: str) -> str:
    try:
        return getpass.getpass(prompt)
    except EOFError:
        _end_prompt_line()
        raise ClientError("no password given (input ended at the prompt)") from None
    except KeyboardInterrupt:
        _end_prompt_line()
        raise


def _end_prompt_line() -> None:
    """Ends the prompt's line where the prompt was written, so the error starts a new one."""
    try:
        with open("/dev/tty", "w") as tty:
            tty.write("\n")
    except OSError:
        sys.stderr.write("\n")


# -- output -------------------------------------------------------------------------------------


def money_fields(name: str, minor_units: int, currency: str) -> dict[str, Any]:
    """NAME as display text ("12.34"), NAME_minor_units as the integer, and the currency."""
    return {
        name: format_minor_units(minor_units, currency),
        f"{name}_minor_units": minor_units,
        "currency": currency,
    }


def show(args: argparse.Namespace, data: dict[str, Any], text: str, request_id: str | None) -> None:
    """DATA as JSON (with the request id), or TEXT; the request id on stderr with --verbose.
    REQUEST_ID is None for a command that sent nothing."""
    print(json.dumps({**data, "request_id": request_id}) if args.json else text)
    if args.verbose and request_id:
        print(f"request id: {request_id}", file=sys.stderr)


TRACE_DETAILS = (
    "A column per party (the client, each gateway replica that took a step, the\n"
    "payer's bank, the payee's bank), a line per message, the milliseconds since the\n"
    "payment was recorded on the left. --json prints the steps."
)


def show_trace(args: argparse.Namespace, trace: PaymentTrace) -> None:
    """A payment's story: the timeline (as wide as the terminal), or with --json its steps."""
    show(args, trace_json(trace), for_terminal(trace, sys.stdout).rstrip("\n"), trace.request_id)


def iso(moment: datetime | None) -> str | None:
    """MOMENT in UTC as ISO 8601 ("2024-05-01T12:00:00.25Z"), for JSON."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_text(moment: datetime) -> str:
    """MOMENT in UTC to the second, as --since and --until take it back."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(moment: datetime) -> str:
    """Local time: the clock time when it is today, else the date too."""
    local = moment.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


# -- login, logout, whoami ----------------------------------------------------------------------


def _expires_at(saved: dict[str, Any]) -> datetime | None:
    """When the saved session's token expires (kept as seconds since the epoch)."""
    seconds = saved.get("expires_at")
    if not isinstance(seconds, int | float) or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at.timestamp() <= time.time()


def _login_command(tool: Tool, username: str) -> str:
    return f"{tool.prog} login --username {username or 'NAME'}"


def saved_token(tool: Tool, saved: dict[str, Any]) -> str:
    token = saved.get("token")
    if not isinstance(token, str) or not token:
        raise ClientError(f"not logged in: run '{_login_command(tool, '')}' first")
    username = str(saved.get("username", ""))
    expires_at = _expires_at(saved)
    if expires_at is not None and _expired(expires_at):
        raise ClientError(
            f"the session of {username} expired at {when(expires_at)}: "
            f"log in again with '{_login_command(tool, username)}'"
        )
    return token


def whoami(tool: Tool, args: argparse.Namespace, session: SavedSession) -> int:
    saved = session.load()
    if not saved.get("token"):
        show(args, {"logged_in": False, "expired": False}, "not logged in", None)
        return EXIT_OK
    username, role = str(saved.get("username", "")), str(saved.get("role", ""))
    expires_at = _expires_at(saved)
    expired = _expired(expires_at)
    data = {
        "logged_in": not expired,
        "expired": expired,
        "username": username,
        "role": role,
        "expires_at": iso(expires_at),
    }
    if expires_at is None:
        text = f"{username} ({role}), logged in"
    elif expired:
        text = (
            f"not logged in: the session of {username} ({role}) expired at {when(expires_at)}; "
            f"log in again with '{_login_command(tool, username)}'"
        )
    else:
        text = f"{username} ({role}), logged in until {when(expires_at)}"
    show(args, data, text, None)
    return EXIT_OK


async def log_in(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    login = await client.login(args.username, invocation.password)
    invocation.session.save(
        {
            "token": login.token,
            "username": args.username,
            "role": login.role,
            "expires_at": login.expires_at.timestamp(),
        }
    )
    show(
        args,
        {"username": args.username, "role": login.role, "expires_at": iso(login.expires_at)},
        f"logged in as {args.username} ({login.role}) until {when(login.expires_at)}",
        login.request_id,
    )
    return EXIT_OK


async def log_out(invocation: Invocation, client: GatewayClient) -> int:
    text = "logged out"
    try:
        request_id = (await client.logout()).request_id
    except ApiError as error:
        if error.code != grpc.StatusCode.UNAUTHENTICATED:
            raise
        text = "logged out (the gateway had already ended this session)"
        request_id = error.request_id
    invocation.session.clear()
    show(invocation.args, {"logged_out": True}, text, request_id)
    return EXIT_OK


def _log_out_locally(args: argparse.Namespace, session: SavedSession) -> int | None:
    """Logout without a call when there is nothing to revoke; None when there is."""
    saved = session.load()
    if not saved.get("token"):
        show(args, {"logged_out": False, "logged_in": False}, "not logged in", None)
        return EXIT_OK
    if _expired(_expires_at(saved)):
        session.clear()
        show(args, {"logged_out": True}, "logged out (the session had expired)", None)
        return EXIT_OK
    return None


# -- running a command --------------------------------------------------------------------------


def run(tool: Tool, args: argparse.Namespace, check_flags: CheckFlags, work: Work) -> int:
    """Runs a command; expected errors become one line on stderr and a non-zero exit, and
    Ctrl-C one line before the command ends by SIGINT.

    CHECK_FLAGS checks the tool's own commands' flags (amounts) and says which password they
    need; WORK makes their calls. Login, logout and whoami are handled here."""
    invocation: Invocation | None = None

    def hint(error: ApiError | None) -> str:
        if invocation is None:
            return ""
        code = error.code if error is not None else None
        if code == grpc.StatusCode.UNAUTHENTICATED and invocation.relogin:
            # The gateway's own message may already end in "log in again".
            if error is not None and error.message.rstrip(" .").endswith("log in again"):
                return f" with '{invocation.relogin}'"
            return f"; log in again with '{invocation.relogin}'"
        key, what = invocation.repeat_with_key, invocation.repeatable
        if not key or code not in (None, *RETRYABLE):
            return ""
        if isinstance(error, GatewayUnreachable):
            return f"; to try again safely, use --idempotency-key {key} (never done twice)"
        return (
            f"; the {what} may or may not have been made: repeat the command with "
            f"--idempotency-key {key} to find out (never done twice)"
        )

    try:
        config = config_from(args, tool)
        configure_client_logging(config.home, args.verbose)
        invocation = Invocation(args, config, SavedSession(config.home / tool.session_file))
        return _run(tool, invocation, check_flags, work)
    except KeyboardInterrupt:
        _fail(args, EXIT_ERROR, "INTERRUPTED", INTERRUPTED + hint(None))  # then SIGINT's exit
        die_interrupted()
    except ApiError as error:  # GatewayUnreachable too: its message says it all
        return _fail_call(args, error, hint(error))
    except (ClientError, AmountError) as error:
        violations = getattr(error, "field_violations", [])
        return _fail(args, EXIT_USAGE, "CLIENT_ERROR", str(error), violations)
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _run(tool: Tool, invocation: Invocation, check_flags: CheckFlags, work: Work) -> int:
    args, session = invocation.args, invocation.session
    command: str = args.command
    if command == "whoami":
        return whoami(tool, args, session)
    if command == "logout" and (done := _log_out_locally(args, session)) is not None:
        return done
    request: PasswordRequest | None
    if command == "login":
        request = PasswordRequest(f"Password for {args.username}: ")
    else:
        request = check_flags(args)  # amounts are checked here, before any prompt
    token = ""
    if command not in tool.sessionless:
        saved = session.load()
        token = saved_token(tool, saved)
        invocation.relogin = _login_command(tool, str(saved.get("username", "")))
    invocation.config.check_files()
    if request is not None:
        invocation.password = read_password(request, args.password_stdin)
    if command == "login":
        job: Work = log_in
    elif command == "logout":
        job = log_out
    else:
        job = work

    async def call() -> int:
        async with GatewayClient(invocation.config, token) as client:
            return await job(invocation, client)

    return asyncio.run(call())


def _fail(
    args: argparse.Namespace,
    exit_code: int,
    code: str,
    message: str,
    violations: Sequence[tuple[str, str]] = (),
) -> int:
    """A problem on this side: CODE is CLIENT_ERROR, USAGE or INTERRUPTED. VIOLATIONS, what
    is wrong where (a file's bad rows), follow the error's line, one per line, and are the
    JSON error's field_violations."""
    fields = error_fields(code, message, None)
    fields["field_violations"] = [{"field": f, "description": d} for f, d in violations]
    details = [f"  {where}: {' '.join(what.split())}" for where, what in violations]
    return _report(args, exit_code, message, fields, details)


def _fail_call(args: argparse.Namespace, error: ApiError, hint: str) -> int:
    """A call that did not succeed: code, reason and message (the request id too with
    --verbose), and HINT, what to do about it."""
    line = error.headline() + hint
    if getattr(args, "verbose", False) and error.request_id:
        line += f" [request id {error.request_id}]"
    return _report(
        args, EXIT_ERROR, line, error_fields(error.code.name, error.message + hint, error)
    )


def _report(
    args: argparse.Namespace,
    exit_code: int,
    line: str,
    fields: dict[str, Any],
    details: Sequence[str] = (),
) -> int:
    """LINE on stderr as "error: ..." and DETAILS after it (and FIELDS as the JSON error with
    --json)."""
    if getattr(args, "json", False):
        print(json.dumps({"error": fields}))
    print("error: " + " ".join(line.split()), file=sys.stderr)  # one line, whatever was sent
    for detail in details:
        print(detail, file=sys.stderr)
    return exit_code


def error_fields(code: str, message: str, error: ApiError | None) -> dict[str, Any]:
    """The JSON error: the same keys for every error, empty when it happened on this side."""
    return {
        "code": code,
        "reason": error.reason if error else "",
        "message": " ".join(message.split()),
        "metadata": error.metadata if error else {},
        "request_id": error.request_id if error else None,
        "field_violations": [
            {"field": name, "description": text}
            for name, text in (error.field_violations if error else [])
        ],
        "retry_after_s": error.retry_after if error else None,
    }
