"""The reconcile's comparison, on rows made by hand: books that agree, and each finding."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.gateway.payment_state import CoordinatorState as S
from server.gateway.reconcile import (
    CLOCK_SKEW,
    AccountMismatch,
    BankBooks,
    BankDeposit,
    BankEntry,
    BankLeg,
    BankPayment,
    BankPaymentPage,
    BankUnreachable,
    Code,
    CurrencyTotals,
    GatewayDeposit,
    GatewayPayment,
    Reconcile,
    Report,
)

NOW = 1_000_000.0
OLD = NOW - 3600.0  # long before the reconcile started
PID = "pay_0001"


def payment(
    state: S = S.COMMITTED, pid: str = PID, at: float = OLD, completed: float | None = None
) -> GatewayPayment:
    finished = state in (S.COMMITTED, S.ABORTED)
    return GatewayPayment(
        pid,
        "alpha",
        "A-1",
        "beta",
        "B-1",
        100,
        "USD",
        state,
        at,
        None if state is S.PREPARING else at + 0.01,
        (completed if completed is not None else at + 0.02) if finished else None,
    )


def debit(state: str = "COMMITTED", entries: tuple[BankEntry, ...] | None = None) -> BankPayment:
    if entries is None:
        entries = (BankEntry(1, "A-1", -100),) if state == "COMMITTED" else ()
    return BankPayment(PID, state, OLD, (BankLeg("debit", "A-1", 100, "USD"),), entries)


def credit(state: str = "COMMITTED", entries: tuple[BankEntry, ...] | None = None) -> BankPayment:
    if entries is None:
        entries = (BankEntry(2, "B-1", 100),) if state == "COMMITTED" else ()
    return BankPayment(PID, state, OLD, (BankLeg("credit", "B-1", 100, "USD"),), entries)


def books(balances: int = 1000, deposits: int = 1000, **fields: object) -> BankBooks:
    totals = CurrencyTotals("USD", balances, 0, 0, deposits, 0, 0)
    return BankBooks((totals,), 1, 1, 1, 0, None, **fields)  # type: ignore[arg-type]


def run(
    gateway: list[GatewayPayment],
    alpha: list[BankPayment],
    beta: list[BankPayment],
    older_than: int = 60,
) -> Report:
    check = Reconcile(NOW, older_than)
    check.bank_books("alpha", books())
    check.bank_books("beta", books())
    check.payments(gateway, {"alpha": alpha, "beta": beta})
    return check.finish(NOW + 1)


def codes(report: Report) -> list[str]:
    return sorted(f.code.value for f in report.findings)


def test_committed_and_aborted_payments_that_agree() -> None:
    report = run([payment()], [debit()], [credit()])
    assert report.agreed and report.payments_checked == 1 and report.entries_checked == 2
    aborted = run([payment(S.ABORTED)], [debit("ABORTED")], [])
    assert aborted.agreed


def test_a_committed_payment_never_applied_is_missing_at_bank() -> None:
    assert codes(run([payment()], [debit()], [])) == ["MISSING_AT_BANK"]
    assert codes(run([payment()], [debit()], [credit("PREPARED")])) == ["MISSING_AT_BANK"]


def test_entries_missing_duplicated_or_of_another_amount() -> None:
    assert codes(run([payment()], [debit()], [credit(entries=())])) == ["ENTRY_MISSING"]
    twice = (BankEntry(2, "B-1", 100), BankEntry(3, "B-1", 100))
    assert codes(run([payment()], [debit()], [credit(entries=twice)])) == ["ENTRY_DUPLICATE"]
    other = (BankEntry(2, "B-1", 90),)
    assert codes(run([payment()], [debit()], [credit(entries=other)])) == ["ENTRY_MISMATCH"]
    elsewhere = (BankEntry(2, "B-1", 100), BankEntry(3, "B-2", 5))
    assert codes(run([payment()], [debit()], [credit(entries=elsewhere)])) == ["ENTRY_UNEXPECTED"]


def test_an_aborted_payment_with_entries_or_a_hold_left() -> None:
    assert codes(run([payment(S.ABORTED)], [debit("PREPARED")], [])) == ["HOLD_LEFT"]
    report = run([payment(S.ABORTED)], [debit("COMMITTED")], [])
    assert codes(report) == ["ENTRY_UNEXPECTED", "STATE_MISMATCH"]
    stray = (BankEntry(9, "A-1", -100),)
    assert codes(run([payment(S.ABORTED)], [debit("ABORTED", stray)], [])) == ["ENTRY_UNEXPECTED"]


def test_a_bank_aborting_what_the_gateway_committed() -> None:
    assert codes(run([payment()], [debit()], [credit("ABORTED")])) == ["STATE_MISMATCH"]


def test_legs_other_than_the_payment_s() -> None:
    wrong = BankPayment(
        PID, "COMMITTED", OLD, (BankLeg("debit", "A-1", 99, "USD"),), (BankEntry(1, "A-1", -100),)
    )
    assert codes(run([payment()], [wrong], [credit()])) == ["LEG_MISMATCH"]


def test_a_bank_record_the_gateway_never_made() -> None:
    assert codes(run([], [debit()], [])) == ["UNKNOWN_AT_BANK"]
    tombstone = BankPayment(PID, "ABORTED", OLD)
    assert run([], [tombstone], []).agreed
    young = BankPayment(PID, "PREPARED", NOW - 1, (BankLeg("debit", "A-1", 100, "USD"),))
    report = run([], [young], [])
    assert report.agreed and report.in_flight == 1


def test_in_flight_then_stuck() -> None:
    young = payment(S.PREPARING, at=NOW - 5)
    report = run([young], [debit("PREPARED")], [credit("PREPARED")])
    assert report.agreed and report.in_flight == 1
    assert codes(run([payment(S.PREPARING)], [debit("PREPARED")], [])) == ["STUCK_PAYMENT"]
    delivering = payment(S.COMMITTING, at=NOW - 5)
    assert run([delivering], [debit()], [credit("PREPARED")]).agreed
    assert codes(run([payment(S.COMMITTING)], [debit()], [credit("PREPARED")])) == ["STUCK_PAYMENT"]


def test_a_payment_finished_during_the_run_may_still_be_on_its_way() -> None:
    late = payment(completed=NOW - CLOCK_SKEW / 2)
    report = run([late], [debit()], [credit("PREPARED")])
    assert report.agreed and report.in_flight == 1
    # What no order of events explains is a finding all the same.
    wrong = (BankEntry(2, "B-1", 1),)
    assert codes(run([late], [debit()], [credit(entries=wrong)])) == ["ENTRY_MISMATCH"]


def test_the_merge_keeps_each_payment_with_its_records() -> None:
    ids = [f"pay_{i:04d}" for i in range(50)]
    gateway = [payment(pid=i) for i in ids]
    alpha = [
        BankPayment(
            i,
            "COMMITTED",
            OLD,
            (BankLeg("debit", "A-1", 100, "USD"),),
            (BankEntry(n, "A-1", -100),),
        )
        for n, i in enumerate(ids)
    ]
    beta = [
        BankPayment(
            i,
            "COMMITTED",
            OLD,
            (BankLeg("credit", "B-1", 100, "USD"),),
            (BankEntry(n, "B-1", 100),),
        )
        for n, i in enumerate(ids)
        if i != "pay_0031"
    ]
    report = run(gateway, alpha, beta)
    assert [(f.code, f.payment_id) for f in report.findings] == [(Code.MISSING_AT_BANK, "pay_0031")]
    assert report.payments_checked == 50


def test_a_bank_s_own_books() -> None:
    check = Reconcile(NOW, 60)
    mismatch = AccountMismatch("A-1", "USD", 1100, 1000, 5, 0, 0, 0)
    check.bank_books(
        "alpha",
        BankBooks(
            (CurrencyTotals("USD", 1100, 5, 0, 1000, 0, 0),),
            1,
            0,
            2,
            0,
            None,
            (mismatch,),
            1,
            (BankEntry(7, "A-1", 100),),
            1,
        ),
    )
    report = check.finish(NOW)
    assert codes(report) == [
        "BALANCE_MISMATCH",
        "BANK_TOTAL",
        "CONSERVATION",
        "HELD_MISMATCH",
        "UNKNOWN_AT_BANK",
    ]


def test_conservation_waits_for_what_moves() -> None:
    check = Reconcile(NOW, 60)
    paid = BankBooks((CurrencyTotals("USD", 900, 0, 0, 1000, 100, 0),), 1, 1, 2, 0, None)
    was_paid = BankBooks((CurrencyTotals("USD", 1000, 0, 0, 900, 0, 100),), 1, 1, 2, 0, None)
    check.bank_books("alpha", paid)
    check.bank_books("beta", was_paid)
    assert check.finish(NOW).agreed  # 1900 = 1900
    moving = Reconcile(NOW, 60)
    moving.bank_books(
        "alpha", BankBooks((CurrencyTotals("USD", 900, 0, 0, 1000, 100, 0),), 1, 1, 2, 0, None)
    )
    moving.bank_books("beta", books())
    moving.payments([payment(S.COMMITTING, at=NOW - 1)], {"alpha": [debit()], "beta": []})
    assert moving.finish(NOW).agreed  # the credit has not reached beta yet


def test_a_bank_down_is_named_and_not_compared() -> None:
    check = Reconcile(NOW, 60)
    check.bank_books("alpha", books())
    check.bank_unreachable("beta", "connection refused")
    check.payments([payment()], {"alpha": [debit()]})
    report = check.finish(NOW)
    assert codes(report) == ["BANK_UNREACHABLE"] and not report.agreed

    def failing() -> Iterator[BankPayment]:
        raise BankUnreachable("beta", "stopped answering")
        yield credit()

    midway = Reconcile(NOW, 60)
    midway.bank_books("alpha", books())
    midway.bank_books("beta", books())
    midway.payments([payment()], {"alpha": [debit()], "beta": failing()})
    assert codes(midway.finish(NOW)) == ["BANK_UNREACHABLE"]


def test_deposits() -> None:
    def deposits(gateway: list[GatewayDeposit], at_alpha: list[BankDeposit]) -> list[str]:
        check = Reconcile(NOW, 60)
        check.deposits(gateway, {"alpha": at_alpha})
        return codes(check.finish(NOW))

    made = GatewayDeposit("admin-1", "alpha", "A-1", 500, "USD", "APPLIED", OLD)
    entry = BankDeposit("admin-1", "A-1", 500, "USD", OLD)
    assert deposits([made], [entry]) == []
    assert deposits([], [BankDeposit("open:A-1", "A-1", 500, "USD", OLD)]) == []
    assert deposits([], [BankDeposit("open:A-2", "A-1", 500, "USD", OLD)]) == ["DEPOSIT_MISMATCH"]
    assert deposits([made], []) == ["DEPOSIT_MISSING"]
    assert deposits([made], [BankDeposit("admin-1", "A-1", 501, "USD", OLD)]) == [
        "DEPOSIT_MISMATCH"
    ]
    assert deposits([], [entry]) == ["UNKNOWN_AT_BANK"]
    assert deposits([], [BankDeposit("admin-1", "A-1", 500, "USD", NOW - 1)]) == []
    recorded = GatewayDeposit("admin-1", "alpha", "A-1", 500, "USD", "RECORDED", OLD)
    assert deposits([recorded], []) == ["STUCK_DEPOSIT"]
    assert deposits([recorded], [entry]) == ["STUCK_DEPOSIT"]
    young = GatewayDeposit("admin-1", "alpha", "A-1", 500, "USD", "RECORDED", NOW - 1)
    assert deposits([young], []) == []
    refused = GatewayDeposit("admin-1", "alpha", "A-1", 500, "USD", "REFUSED", OLD)
    assert deposits([refused], []) == []
    assert deposits([refused], [entry]) == ["DEPOSIT_MISMATCH"]


def test_findings_are_capped_and_all_counted() -> None:
    ids = [f"pay_{i:05d}" for i in range(1500)]
    report = run([payment(pid=i) for i in ids], [], [])
    assert report.findings_total == 3000 and len(report.findings) == 1000


# -- split payments: the debit of the total, a credit per share --------------------------------


def split(state: S = S.COMMITTED) -> GatewayPayment:
    """alice (alpha) pays 30 to A-2 at her own bank and 70 to B-1 and B-2 at beta."""
    made = payment(state)
    made.to_bank, made.to_account = "", ""
    made.shares = (("alpha", "A-2", 30), ("beta", "B-1", 50), ("beta", "B-2", 20))
    return made


def split_at_alpha(
    state: str = "COMMITTED", entries: tuple[BankEntry, ...] | None = None
) -> BankPayment:
    if entries is None:
        entries = (
            (BankEntry(1, "A-1", -100), BankEntry(2, "A-2", 30)) if state == "COMMITTED" else ()
        )
    legs = (BankLeg("debit", "A-1", 100, "USD"), BankLeg("credit", "A-2", 30, "USD"))
    return BankPayment(PID, state, OLD, legs, entries)


def split_at_beta(
    state: str = "COMMITTED", entries: tuple[BankEntry, ...] | None = None
) -> BankPayment:
    if entries is None:
        entries = (BankEntry(3, "B-1", 50), BankEntry(4, "B-2", 20)) if state == "COMMITTED" else ()
    legs = (BankLeg("credit", "B-1", 50, "USD"), BankLeg("credit", "B-2", 20, "USD"))
    return BankPayment(PID, state, OLD, legs, entries)


def test_a_split_payment_committed_at_every_bank_agrees() -> None:
    report = run([split()], [split_at_alpha()], [split_at_beta()])
    assert report.agreed and report.entries_checked == 4, report.findings
    assert run([split(S.ABORTED)], [split_at_alpha("ABORTED")], [split_at_beta("ABORTED")]).agreed


def test_a_split_payment_s_credits_are_each_checked() -> None:
    one_short = (BankEntry(3, "B-1", 50),)
    assert codes(run([split()], [split_at_alpha()], [split_at_beta(entries=one_short)])) == [
        "ENTRY_MISSING"
    ]
    assert codes(run([split()], [split_at_alpha()], [split_at_beta("PREPARED")])) == [
        "MISSING_AT_BANK"
    ]
    # A bank holding the credits of a plain payment's shape: other legs than asked.
    assert codes(run([split()], [split_at_alpha()], [credit()])) == [
        "ENTRY_MISMATCH",  # B-1: 100, not 50
        "ENTRY_MISSING",  # B-2: none
        "LEG_MISMATCH",
    ]
    # Half committed: the gateway aborted, beta committed.
    report = run([split(S.ABORTED)], [split_at_alpha("ABORTED")], [split_at_beta()])
    assert "STATE_MISMATCH" in codes(report)


def test_pages_of_columns_mixing_every_shape() -> None:
    """The banks' records as pages of columns (what the Ledger service sends), each page
    mixing plain records with held, aborted, split and unknown ones: the same findings as
    the records one by one, whichever page a record falls on."""
    ids = [f"pay_{i:04d}" for i in range(12)]
    gateway = [payment(pid=i) for i in ids if i != "pay_0005"]
    gateway[2] = payment(S.ABORTED, pid="pay_0002")
    gateway[7] = payment(S.COMMITTING, pid="pay_0008", at=NOW - 1)

    def at(i: str, side: str, account: str, sign: int) -> BankPayment:
        state = {"pay_0002": "ABORTED", "pay_0008": "PREPARED"}.get(i, "COMMITTED")
        entries = (BankEntry(int(i[-4:]), account, sign * 100),) if state == "COMMITTED" else ()
        if i == "pay_0010":
            entries = (BankEntry(0, account, sign * 99),)  # of another amount
        return BankPayment(i, state, OLD, (BankLeg(side, account, 100, "USD"),), entries)

    alpha = [at(i, "debit", "A-1", -1) for i in ids]  # pay_0005: unknown at the gateway
    beta = [at(i, "credit", "B-1", 1) for i in ids if i not in ("pay_0005", "pay_0011")]
    one_by_one = run(gateway, alpha, beta)
    assert codes(one_by_one) == [
        "ENTRY_MISMATCH",  # pay_0010, at each bank
        "ENTRY_MISMATCH",
        "MISSING_AT_BANK",  # pay_0011, at beta
        "UNKNOWN_AT_BANK",  # pay_0005, at alpha
    ]
    for size in (1, 2, 5, 12):
        check = Reconcile(NOW, 60)
        check.bank_books("alpha", books())
        check.bank_books("beta", books())
        check.payments(
            gateway,
            {
                "alpha": [BankPaymentPage.of(alpha[n : n + size]) for n in range(0, 12, size)],
                "beta": [BankPaymentPage.of(beta[n : n + size]) for n in range(0, 10, size)],
            },
        )
        report = check.finish(NOW + 1)
        assert codes(report) == codes(one_by_one), size
        assert (report.payments_checked, report.entries_checked, report.in_flight) == (
            one_by_one.payments_checked,
            one_by_one.entries_checked,
            one_by_one.in_flight,
        )


def test_a_page_whose_columns_do_not_line_up_is_refused() -> None:
    with pytest.raises(ValueError, match="do not line up"):
        BankPaymentPage(["pay_1"], ["COMMITTED"], [OLD], [1], [], [], [], [], [0], [], [], [])
