"""Payments from a CSV file, for the command line's ``pay-batch``: reading and checking every
row before anything is sent, each row's idempotency key, the results file, and the summary.
Plain Python: nothing here calls the gateway.

The file: UTF-8 (a byte-order mark is fine), comma separated, quoted as spreadsheets write
it. Its first line is a header naming the columns, in any order: ``bank``, ``account`` and
``amount`` always, ``currency`` and ``idempotency_key`` if wanted, and no others (a column
whose name is misspelled would be ignored silently otherwise: an ``idempotency_key`` column
spelled wrong would change which rows pay again). A row may leave out trailing ``currency``
or ``idempotency_key`` cells, as empty ones. Blank lines are skipped. An amount is a
plain decimal in the currency's units ("12.34"); a row without a currency pays in the
command's ``--currency``.

A row's idempotency key is its own when the file has one, else derived from the row: its
bank, account, amount (in minor units) and currency, and how many rows before it in the file
have those same four; ``csv1-`` and 40 hex digits of their SHA-256. So the same file run
again replays every row instead of paying it twice; a row edited (or added) pays itself
alone; and a row added or removed elsewhere changes no other row's key, where a key from
the row's line number would pay every row below it again. The gateway keeps keys for 24
hours: the same file a day later pays again.

With ``--atomic`` the file is one split payment instead (``check_split``): every row one
payee, 2 to MAX_SHARES rows, one currency, no payee twice, and no key of a row's own: the
payment's key is derived from every row in order (``split_key``), so the same file run
again replays it, and a file edited anywhere is a new payment.

Memory stays bounded whatever the file: it is refused unread past MAX_FILE_BYTES, and read
as a stream (twice: once to check every row, once to send them), up to MAX_ROWS rows.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from minipay import money
from minipay.client.errors import ClientError
from minipay.client.results import BatchItem, BatchResult, PaymentStatus

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ROWS = 100_000
MAX_LISTED = 100  # bad rows listed; the count says how many in all
MIN_SHARES, MAX_SHARES = 2, 100  # payees of one split payment (--atomic)
REQUIRED = ("bank", "account", "amount")
OPTIONAL = ("currency", "idempotency_key")
HEADER = "bank,account,amount[,currency][,idempotency_key]"
# The gateway's rules (server/common/validation.py), checked here so that a bad row stops
# the file before anything is sent.
_BANK = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,33}")
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
RESULT_COLUMNS = (
    "line",
    "bank",
    "account",
    "amount",
    "currency",
    "idempotency_key",
    "status",
    "payment_id",
    "reason_code",
    "reason",
    "replayed",
)
# A row's status in the results file besides a payment's: refused by the gateway before
# anything was recorded (an ItemError); sent in a call that never answered; or not sent
# because a call failed before.
REFUSED, UNKNOWN, NOT_SENT = "REFUSED", "UNKNOWN", "NOT_SENT"
Outcome = BatchResult | str  # a result, or UNKNOWN or NOT_SENT


@dataclass(frozen=True)
class Row:
    """A checked row: what to pay, and the key it is paid with."""

    line: int  # where the row starts in the file, from 1
    bank: str
    account: str
    minor_units: int
    currency: str
    idempotency_key: str
    own_key: bool = False  # the file gave it (else derived from the row)

    @property
    def item(self) -> BatchItem:
        return BatchItem(
            self.bank, self.account, self.minor_units, self.currency, self.idempotency_key
        )


@dataclass(frozen=True)
class Problem:
    line: int
    message: str


class BadFile(ClientError):
    """The file cannot be paid as it is; ``field_violations`` lists its bad rows as
    ("line N", what is wrong), in the order of the file, the first MAX_LISTED of them."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.field_violations = [(f"line {p.line}", p.message) for p in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            self.field_violations.append(("...", f"{len(problems) - MAX_LISTED} more not listed"))


def results_path(path: Path) -> Path:
    """Where the results of PATH go by default: beside it, ``<name>.results.csv``."""
    return path.with_name(path.stem + ".results.csv")


def derived_key(row: tuple[str, str, int, str], occurrence: int) -> str:
    """The key of a row without one: its payee, amount and currency, and OCCURRENCE, how many
    rows with exactly those came before it in the file, plus one."""
    bank, account, minor_units, currency = row
    text = f"{bank}|{account}|{minor_units}|{currency}|{occurrence}"
    return "csv1-" + hashlib.sha256(text.encode()).hexdigest()[:40]


# -- reading -------------------------------------------------------------------------------------


def check(path: Path, default_currency: str) -> int:
    """The number of rows of PATH, once every one is found good; BadFile (with every bad row,
    by line) otherwise. Nothing is kept but the keys seen, to find a key used twice."""
    problems = []
    count = 0
    for found in read(path, default_currency):
        if isinstance(found, Problem):
            problems.append(found)
        else:
            count += 1
    if problems:
        rows = "row" if len(problems) == 1 else "rows"
        raise BadFile(f"{path}: {len(problems)} bad {rows}; nothing was sent", problems)
    if not count:
        raise BadFile(f"{path}: a header and no rows: nothing to pay")
    return count


def check_split(path: Path, default_currency: str) -> list[Row]:
    """--atomic: the rows of PATH as the payees of one split payment, once every one is found
    good and they make one (2 to MAX_SHARES payees, each once, in one currency, no key of a
    row's own); BadFile (with every bad row, by line) otherwise."""
    problems: list[Problem] = []
    found: list[Row] = []
    count = 0
    payees: dict[tuple[str, str], int] = {}
    currency: tuple[str, int] | None = None  # the first row's, and its line
    for item in read(path, default_currency):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        count += 1
        if item.own_key:
            problems.append(
                Problem(
                    item.line,
                    "with --atomic the file is one payment, with one key made from its rows: "
                    "leave idempotency_key empty",
                )
            )
        earlier = payees.setdefault((item.bank, item.account), item.line)
        if earlier != item.line:
            problems.append(
                Problem(item.line, f"payee repeats line {earlier}'s: each payee once in a split")
            )
        if currency is None:
            currency = (item.currency, item.line)
        elif item.currency != currency[0]:
            problems.append(
                Problem(
                    item.line,
                    f"currency {item.currency} is not line {currency[1]}'s {currency[0]}: "
                    "a split payment is in one currency",
                )
            )
        if len(found) <= MAX_SHARES:
            found.append(item)
    if problems:
        rows = "row" if len(problems) == 1 else "rows"
        raise BadFile(f"{path}: {len(problems)} bad {rows}; nothing was sent", problems)
    if not MIN_SHARES <= count <= MAX_SHARES:
        raise BadFile(
            f"{path}: {count} rows; with --atomic the file is one split payment of "
            f"{MIN_SHARES} to {MAX_SHARES} payees, one a row"
        )
    return found


def split_key(rows: Sequence[Row]) -> str:
    """The key of the split payment ROWS make: every row's payee, amount and currency, in
    order."""
    text = "\n".join(f"{r.bank}|{r.account}|{r.minor_units}|{r.currency}" for r in rows)
    return "csv1-split-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def rows(path: Path, default_currency: str) -> Iterator[Row]:
    """PATH's rows, as ``check`` found them; BadFile if the file changed since into one with
    a bad row."""
    for found in read(path, default_currency):
        if isinstance(found, Problem):
            raise BadFile(f"{path} changed while being paid: line {found.line}: {found.message}")
        yield found


def read(path: Path, default_currency: str) -> Iterator[Row | Problem]:
    """Every row of PATH, checked, or what is wrong with it; BadFile for a file that cannot
    be read as one (missing, too large, no header)."""
    with _opened(path) as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, strict=True)
        columns = _header(path, reader, lines)
        seen = _Seen()
        count = 0
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield Problem(start, f"not CSV: {error}")
                continue
            if not any(value.strip() for value in values):
                continue  # a blank line
            count += 1
            if count > MAX_ROWS:
                raise BadFile(f"{path} has more than {MAX_ROWS} rows; split it into several files")
            if lines.undecodable(start, reader.line_num):
                yield Problem(start, "not UTF-8 text")
                continue
            yield _row(start, values, columns, default_currency, seen)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[IO[bytes]]:
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise BadFile(
                    f"{path} is {size / 1e6:.1f} MB; pay-batch reads files of at most "
                    f"{MAX_FILE_BYTES // (1024 * 1024)} MiB and {MAX_ROWS} rows: split it"
                )
            yield handle
    except OSError as error:
        raise ClientError(f"cannot read {path}: {error.strerror or error}") from None


class _Lines:
    """The file's lines as text for the csv reader, one at a time; a line that is not UTF-8
    is passed on with its bad bytes replaced, and remembered."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._number = 0
        self._bad: set[int] = set()
        self._decode = codecs.getincrementaldecoder("utf-8-sig")()

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self._number += 1
            try:
                yield self._decode.decode(raw)
            except UnicodeDecodeError:
                self._decode.reset()
                self._bad.add(self._number)
                yield raw.decode("utf-8", "replace").removeprefix("\ufeff")

    def undecodable(self, first: int, last: int) -> bool:
        return any(first <= number <= last for number in self._bad)


@dataclass
class _Seen:
    """What the rows so far hold: the line of each key, and how often each payment."""

    keys: dict[str, int] = field(default_factory=dict)
    payments: Counter[tuple[str, str, int, str]] = field(default_factory=Counter)


def _header(path: Path, reader: Any, lines: _Lines) -> dict[str, int]:
    """The column of each name in the header line."""
    try:
        values = next((v for v in reader if any(value.strip() for value in v)), None)
    except csv.Error as error:
        raise BadFile(f"{path}: line {reader.line_num}, the header, is not CSV: {error}") from None
    if values is None:
        raise BadFile(f"{path} is empty: its first line must be the header {HEADER}")
    names = [value.strip().lower() for value in values]
    known = [name for name in names if name in (*REQUIRED, *OPTIONAL)]
    line = reader.line_num
    if lines.undecodable(line, line) or not known:
        raise BadFile(
            f"{path}: line {line} must be the header {HEADER}, naming the columns "
            f"(found {_shown(','.join(values))})"
        )
    unknown = [name for name in names if name not in (*REQUIRED, *OPTIONAL)]
    missing = [name for name in REQUIRED if name not in names]
    twice = sorted({name for name in known if names.count(name) > 1})
    for what, found in (("unknown", unknown), ("missing", missing), ("repeated", twice)):
        if found:
            columns = ", ".join(_shown(name) for name in found)
            raise BadFile(
                f"{path}: line {line}, the header: {what} column(s) {columns}; the header is "
                f"{HEADER}"
            )
    return {name: index for index, name in enumerate(names)}


def _row(
    line: int, values: list[str], columns: dict[str, int], default_currency: str, seen: _Seen
) -> Row | Problem:
    left_out = [name for name, index in columns.items() if index >= len(values)]
    if len(values) > len(columns) or any(name in REQUIRED for name in left_out):
        return Problem(line, f"{len(values)} values; the header names {len(columns)} columns")
    # Trailing optional cells may be left out, as empty ones.
    cell = {
        name: values[index].strip() if index < len(values) else ""
        for name, index in columns.items()
    }
    # A key of its own counts from the start: a later row repeating it is told even when
    # this row is bad for another reason.
    key = cell.get("idempotency_key", "")
    if key and (problem := _key_problem(line, key, seen)):
        return problem
    bank, account = cell["bank"], cell["account"]
    if not _BANK.fullmatch(bank):
        return Problem(line, f"bank {_shown(bank)} is not a bank's name (like beta)")
    if not _ACCOUNT.fullmatch(account):
        return Problem(line, f"account {_shown(account)} is not 1-34 letters, digits or '-'")
    try:
        currency = money.currency_code(cell.get("currency") or default_currency)
        minor_units = money.to_minor_units(cell["amount"], currency)
    except money.AmountError as error:
        return Problem(line, str(error))
    payment = (bank, account, minor_units, currency)
    seen.payments[payment] += 1
    own_key = bool(key)
    if not key:
        key = derived_key(payment, seen.payments[payment])
        if problem := _key_problem(line, key, seen):
            return problem
    return Row(line, bank, account, minor_units, currency, key, own_key)


def _key_problem(line: int, key: str, seen: _Seen) -> Problem | None:
    if not _KEY.fullmatch(key):
        return Problem(
            line, "idempotency_key must be 1-255 printable ASCII characters without spaces"
        )
    earlier = seen.keys.setdefault(key, line)
    if earlier != line:
        return Problem(line, f"idempotency_key repeats line {earlier}'s: each row needs its own")
    return None


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


# -- results -------------------------------------------------------------------------------------


def result_row(row: Row, result: Outcome) -> dict[str, str]:
    """ROW's line in the results file: its outcome."""
    fields = {
        "line": str(row.line),
        "bank": row.bank,
        "account": row.account,
        "amount": money.format_minor_units(row.minor_units, row.currency),
        "currency": row.currency,
        "idempotency_key": row.idempotency_key,
        "status": result if isinstance(result, str) else "",
        "payment_id": "",
        "reason_code": "",
        "reason": "",
        "replayed": "",
    }
    if isinstance(result, BatchResult) and result.payment is not None:
        payment = result.payment
        fields.update(
            status=payment.status.value,
            payment_id=payment.payment_id,
            reason_code=payment.reason_code,
            reason=payment.reason,
            replayed="yes" if payment.replayed else "no",
        )
    elif isinstance(result, BatchResult) and result.error is not None:
        error = result.error
        fields.update(status=REFUSED, reason_code=error.reason, reason=error.message)
    return fields


class ResultsFile:
    """The results, a row at a time, into a file beside the final one that replaces it when
    closed (whatever was written by then: a run cut short keeps what it learnt)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = path.with_name(f".{path.name}.partial")
        try:
            self._handle = self._partial.open("w", newline="", encoding="utf-8")
        except OSError as error:
            raise ClientError(
                f"cannot write the results to {path}: {error.strerror or error}"
            ) from None
        self._writer = csv.DictWriter(self._handle, RESULT_COLUMNS)
        self._writer.writeheader()

    def write(self, row: Row, result: Outcome) -> None:
        self._writer.writerow(result_row(row, result))

    def close(self) -> None:
        self._handle.close()
        os.replace(self._partial, self.path)


@dataclass
class Summary:
    """What a run did, row by row."""

    rows: int = 0
    committed: int = 0
    replayed: int = 0  # of all the rows with a payment: paid by an earlier run
    pending: int = 0
    unknown: int = 0  # sent in a call that never answered
    not_sent: int = 0
    aborted: Counter[str] = field(default_factory=Counter)  # by reason code
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    moved: Counter[str] = field(default_factory=Counter)  # committed minor units by currency

    def add(self, row: Row, result: Outcome) -> None:
        self.rows += 1
        if result == UNKNOWN:
            self.unknown += 1
        elif not isinstance(result, BatchResult):
            self.not_sent += 1
        elif result.error is not None:
            self.refused[result.error.reason or result.error.code] += 1
        elif result.payment is not None:
            payment = result.payment
            self.replayed += payment.replayed
            if payment.status is PaymentStatus.COMMITTED:
                self.committed += 1
                self.moved[payment.currency] += payment.amount_minor_units
            elif payment.status is PaymentStatus.ABORTED:
                self.aborted[payment.reason_code or "ABORTED"] += 1
            else:
                self.pending += 1

    @property
    def all_committed(self) -> bool:
        return self.committed == self.rows
