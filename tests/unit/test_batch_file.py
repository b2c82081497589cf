"""Reading a CSV file of payments for ``pay-batch`` (minipay/client/batch_file.py): the keys
derived for rows without one, the header, what makes a row bad, and the file's encoding."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from minipay.client import batch_file
from minipay.client.batch_file import BadFile, Problem, Row, check, read, rows
from server.common import validation

HEADER = "bank,account,amount"


def write(tmp_path: Path, *lines: str, name: str = "pay.csv") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def keys(path: Path) -> list[str]:
    return [row.idempotency_key for row in rows(path, "USD")]


def test_the_same_file_gives_the_same_keys_and_identical_rows_different_ones(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, HEADER, "beta,B-1,1.00", "beta,B-1,1.00", "beta,B-2,1.00")
    first = keys(path)
    assert first == keys(path)
    assert len(set(first)) == 3, "two identical rows are two payments"
    assert all(re.fullmatch(r"csv1-[0-9a-f]{40}", key) for key in first)


def test_an_edited_row_changes_its_key_alone_and_other_rows_moving_change_none(
    tmp_path: Path,
) -> None:
    before = keys(write(tmp_path, HEADER, "beta,B-1,1.00", "beta,B-2,2.00", "beta,B-3,3.00"))
    edited = keys(write(tmp_path, HEADER, "beta,B-1,1.00", "beta,B-2,2.01", "beta,B-3,3.00"))
    assert [a == b for a, b in zip(before, edited, strict=True)] == [True, False, True]
    moved = keys(write(tmp_path, HEADER, "gamma,G-9,9.00", "beta,B-3,3.00", "beta,B-1,1.00"))
    assert moved[1:] == [before[2], before[0]], "rows added or moved keep their keys"


def test_the_same_amount_written_two_ways_is_the_same_payment(tmp_path: Path) -> None:
    one = keys(write(tmp_path, "bank,account,amount,currency", "beta,B-1,1.5,usd"))
    two = keys(write(tmp_path, "amount,bank,account", "1.50,beta,B-1"))
    assert one == two


def test_a_key_column_gives_rows_their_own_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "idempotency_key,bank,account,amount", "k-1,beta,B-1,1", ",beta,B-1,1")
    found = list(rows(path, "EUR"))
    assert found[0] == Row(2, "beta", "B-1", 100, "EUR", "k-1", own_key=True)
    assert found[1].idempotency_key.startswith("csv1-"), "an empty cell: derived"
    assert not found[1].own_key


def problems(tmp_path: Path, *lines: str) -> list[tuple[int, str]]:
    found = read(write(tmp_path, *lines), "USD")
    return [(p.line, p.message) for p in found if isinstance(p, Problem)]


def test_bad_rows_are_found_by_their_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "",
        "bank,account,amount,currency,idempotency_key",
        "beta,B-1,1,XYZ,a",
        'beta,"B 1',
        '",1,USD,b',  # a quoted newline: the row starts on line 4
        "beta,B-1,1,USD,a",
        "beta,B-1,1,USD,has space",
        "beta,B-1,1,USD,b,extra",
    )
    assert [line for line, _ in found] == [3, 4, 6, 7, 8]
    assert "'XYZ' is not an ISO 4217 currency code" in found[0][1]
    assert "account 'B 1' is not" in found[1][1]
    assert found[2][1] == "idempotency_key repeats line 3's: each row needs its own"
    assert "printable ASCII" in found[3][1]
    assert found[4][1] == "6 values; the header names 5 columns"


def test_a_row_may_leave_out_its_trailing_optional_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "bank,account,amount,currency,idempotency_key", "beta,B-1,2", "b,X")
    found = list(read(path, "JPY"))
    assert found[0] == Row(2, "beta", "B-1", 2, "JPY", found[0].idempotency_key)  # type: ignore[union-attr]
    assert found[1] == Problem(3, "2 values; the header names 5 columns")


def test_a_byte_order_mark_is_fine_and_a_line_that_is_not_utf8_is_a_bad_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfbank,account,amount\r\nbeta,B-1,1\r\nbeta,B-\xff,1\r\n")
    found = list(read(path, "USD"))
    assert isinstance(found[0], Row) and found[0].bank == "beta"
    assert found[1] == Problem(3, "not UTF-8 text")


def test_a_file_without_rows_or_header_is_refused(tmp_path: Path) -> None:
    for lines, words in (
        ((), "is empty"),
        (("", "  "), "is empty"),
        ((HEADER,), "a header and no rows"),
        (("beta,B-1,1",), "line 1 must be the header"),
        (("bank,account,amount,amount",), "repeated column(s) 'amount'"),
    ):
        with pytest.raises(BadFile, match=re.escape(words)):
            check(write(tmp_path, *lines), "USD")


def test_at_most_max_listed_bad_rows_are_listed(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, *["beta,B-1,x"] * (batch_file.MAX_LISTED + 5))
    with pytest.raises(BadFile) as refused:
        check(path, "USD")
    assert str(refused.value).endswith(f"{batch_file.MAX_LISTED + 5} bad rows; nothing was sent")
    assert len(refused.value.field_violations) == batch_file.MAX_LISTED + 1
    assert refused.value.field_violations[-1] == ("...", "5 more not listed")


def test_the_row_rules_are_the_gateway_s() -> None:
    """The file is refused here for what the gateway would refuse in each item."""
    for ours, theirs in (
        (batch_file._BANK, validation._BANK),
        (batch_file._ACCOUNT, validation._ACCOUNT),
        (batch_file._KEY, validation._KEY),
    ):
        assert ours.pattern == theirs.pattern
