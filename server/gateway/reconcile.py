"""The reconcile: proof that the gateway's decisions and every bank's books agree, in plain
Python over iterators of rows (the servicer feeds it pages from the gateway's database and
from each bank's Ledger service; the unit tests feed it lists).

What it compares, and the finding each disagreement is (``Code``):

- each bank's own books, read in one snapshot at the bank (``BankBooks``): every balance is
  its ledger's sum, every ``held`` (``incoming``) the sum of its open holds (credits), the
  bank's total its deposits plus credits less debits; every ledger entry a deposit or a
  payment's;
- the gateway's payments (and refunds), ordered by id, merged with each bank's payment
  records, ordered by the same id: a committed payment has exactly one debit entry at the
  payer's bank and one credit at the payee's, of its amount (a split payment: the debit of
  its total, and one credit of each share at that payee's bank); an aborted one none, and no
  hold left; a bank's record of a payment the gateway does not know is a finding;
- the gateway's deposits merged with every bank's deposit entries by deposit id; an
  account's opening balance (deposit id ``open:<account>``, written by the bank when the
  account was opened, at CreateUser or from the seed) is a deposit of its own kind, checked
  only against its account;
- per currency, all balances against all deposits (conservation).

Racing payments. The reconcile runs while payments go on, and its reads are not one
snapshot: the gateway's pages, each bank's pages and each bank's books are read at different
moments, all after ``started_at``. So nothing that may have moved since ``started_at`` is
taken for a mismatch; the states only move forward, which makes that safe to decide:

- a payment the gateway had finished (COMMITTED or ABORTED: every bank acknowledged) before
  ``started_at`` was applied at its banks before any bank page was read, so its banks must
  show it exactly: anything else is a finding;
- a payment finished after ``started_at`` (less CLOCK_SKEW between the replicas' clocks), or
  not finished, may be seen at a bank before or after its decision arrived: only what no
  order of events explains is a finding (an entry of the wrong amount, a bank committing
  what the gateway aborted); a bank still holding or not yet applying it is in flight, or,
  once undecided or undelivered for longer than ``older_than`` seconds, STUCK_PAYMENT;
- a bank's record of a payment the gateway did not show: the gateway records every payment
  before any bank hears of it, so if the bank's page came first the gateway's shows it; if
  the gateway's page came first the bank's record is younger than ``started_at``: in flight
  while younger than ``older_than``, a finding after; deposits alike;
- conservation: the banks' books are read at moments close together, and a payment
  committed at one bank and not yet at the other makes the sum of balances differ from the
  sum of deposits for a moment. Such a payment was not finished before ``started_at``, so the
  walk counts it as moving in its currency; a currency whose sums differ with nothing moving
  is CONSERVATION.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from server.gateway.payment_state import CoordinatorState

MAX_FINDINGS = 1000
DEFAULT_OLDER_THAN = 60
CLOCK_SKEW = 2.0  # seconds the replicas' and banks' clocks may disagree by
OPENING_PREFIX = "open:"  # a bank's opening-balance deposit: "open:<account>"

_FIRST = itemgetter(0)

FINISHED = (CoordinatorState.COMMITTED, CoordinatorState.ABORTED)
DECIDED_COMMIT = (CoordinatorState.COMMITTING, CoordinatorState.COMMITTED)
DECIDED_ABORT = (CoordinatorState.ABORTING, CoordinatorState.ABORTED)


class Code(enum.StrEnum):
    """What a finding is (the README lists them with what to do)."""

    MISSING_AT_BANK = "MISSING_AT_BANK"  # committed, never applied at this bank
    ENTRY_MISSING = "ENTRY_MISSING"  # applied, but a leg has no ledger entry
    ENTRY_DUPLICATE = "ENTRY_DUPLICATE"  # a leg with more than one entry
    ENTRY_MISMATCH = "ENTRY_MISMATCH"  # an entry of another amount than the payment's
    ENTRY_UNEXPECTED = "ENTRY_UNEXPECTED"  # an entry where none belongs (aborted, other account)
    LEG_MISMATCH = "LEG_MISMATCH"  # the bank held another account or amount than asked
    STATE_MISMATCH = "STATE_MISMATCH"  # the bank decided the other way
    HOLD_LEFT = "HOLD_LEFT"  # aborted, and the bank still holds the funds
    UNKNOWN_AT_BANK = "UNKNOWN_AT_BANK"  # a record, entry or deposit the gateway never made
    BALANCE_MISMATCH = "BALANCE_MISMATCH"  # an account's balance is not its ledger's sum
    HELD_MISMATCH = "HELD_MISMATCH"  # held (or incoming) is not the sum of its open legs
    BANK_TOTAL = "BANK_TOTAL"  # a bank's balances are not its deposits + credits - debits
    STUCK_PAYMENT = "STUCK_PAYMENT"  # undecided or undelivered for longer than older_than
    DEPOSIT_MISSING = "DEPOSIT_MISSING"  # applied at the gateway, not at the bank
    DEPOSIT_MISMATCH = "DEPOSIT_MISMATCH"  # at the bank with another account or amount
    STUCK_DEPOSIT = "STUCK_DEPOSIT"  # recorded, not confirmed for longer than older_than
    CONSERVATION = "CONSERVATION"  # a currency's balances are not its deposits
    BANK_UNREACHABLE = "BANK_UNREACHABLE"  # a bank did not answer: its books are unproven


# -- the rows compared ----------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: made millions of times, frozen costs
class GatewayPayment:
    id: str
    from_bank: str
    from_account: str
    to_bank: str
    to_account: str
    amount: int
    currency: str
    state: CoordinatorState
    created_at: float
    decided_at: float | None
    completed_at: float | None
    # A split payment (``to_bank`` empty): (bank, account, amount) of each payee.
    shares: tuple[tuple[str, str, int], ...] = ()


@dataclass(slots=True)  # not frozen: made millions of times, frozen costs
class BankLeg:
    side: str  # "debit" or "credit"
    account: str
    amount: int
    currency: str


@dataclass(slots=True)  # not frozen: made millions of times, frozen costs
class BankEntry:
    id: int
    account: str
    amount: int  # signed


@dataclass(slots=True)  # not frozen: made millions of times, frozen costs
class BankPayment:
    payment_id: str
    state: str  # PREPARED, COMMITTED or ABORTED
    created_at: float
    legs: tuple[BankLeg, ...] = ()
    entries: tuple[BankEntry, ...] = ()


class BankPaymentPage:
    """A page of a bank's payment records as parallel columns, as its Ledger service sends
    them (ListBankPaymentsResponse): record i is payment_ids[i], states[i], created_at[i],
    its legs the next leg_counts[i] rows of the leg_ columns, its entries the next
    entry_counts[i] rows of the entry_ columns. A page is compared without an object per
    record: ``plain`` gives each record's shape as one tuple, made for the whole page by C
    loops (map, zip), and a record (``record``) is made only for a payment that is not plainly
    committed."""

    __slots__ = (
        "_entry_starts",
        "_leg_starts",
        "_plain",
        "created_at",
        "entry_accounts",
        "entry_amounts",
        "entry_counts",
        "entry_ids",
        "leg_accounts",
        "leg_amounts",
        "leg_counts",
        "leg_currencies",
        "leg_sides",
        "payment_ids",
        "states",
    )

    def __init__(
        self,
        payment_ids: list[str],
        states: list[str],
        created_at: list[float],
        leg_counts: list[int],
        leg_sides: list[str],
        leg_accounts: list[str],
        leg_amounts: list[int],
        leg_currencies: list[str],
        entry_counts: list[int],
        entry_ids: list[int],
        entry_accounts: list[str],
        entry_amounts: list[int],
    ) -> None:
        records = len(payment_ids)
        legs, entries = sum(leg_counts), sum(entry_counts)
        if not (
            len(states) == len(created_at) == len(leg_counts) == len(entry_counts) == records
            and len(leg_sides) == len(leg_accounts) == legs
            and len(leg_amounts) == len(leg_currencies) == legs
            and len(entry_ids) == len(entry_accounts) == len(entry_amounts) == entries
        ):
            raise ValueError("the page's columns do not line up")
        self.payment_ids, self.states, self.created_at = payment_ids, states, created_at
        self.leg_counts, self.leg_sides, self.leg_accounts = leg_counts, leg_sides, leg_accounts
        self.leg_amounts, self.leg_currencies = leg_amounts, leg_currencies
        self.entry_counts, self.entry_ids = entry_counts, entry_ids
        self.entry_accounts, self.entry_amounts = entry_accounts, entry_amounts
        self._leg_starts = list(itertools.accumulate(leg_counts, initial=0))
        self._entry_starts = list(itertools.accumulate(entry_counts, initial=0))
        self._plain: list[tuple[object, ...]] | None = None

    @classmethod
    def of(cls, records: Iterable[BankPayment]) -> BankPaymentPage:
        """The page of RECORDS (made one by one: for tests and the odd record)."""
        rows = list(records)
        legs = [leg for row in rows for leg in row.legs]
        entries = [entry for row in rows for entry in row.entries]
        return cls(
            [row.payment_id for row in rows],
            [row.state for row in rows],
            [row.created_at for row in rows],
            [len(row.legs) for row in rows],
            [leg.side for leg in legs],
            [leg.account for leg in legs],
            [leg.amount for leg in legs],
            [leg.currency for leg in legs],
            [len(row.entries) for row in rows],
            [entry.id for entry in entries],
            [entry.account for entry in entries],
            [entry.amount for entry in entries],
        )

    def __len__(self) -> int:
        return len(self.payment_ids)

    def record(self, i: int) -> BankPayment:
        """Record I as an object, for the long way."""
        legs = range(self._leg_starts[i], self._leg_starts[i + 1])
        entries = range(self._entry_starts[i], self._entry_starts[i + 1])
        return BankPayment(
            self.payment_ids[i],
            self.states[i],
            self.created_at[i],
            tuple(
                BankLeg(
                    self.leg_sides[j],
                    self.leg_accounts[j],
                    self.leg_amounts[j],
                    self.leg_currencies[j],
                )
                for j in legs
            ),
            tuple(
                BankEntry(self.entry_ids[j], self.entry_accounts[j], self.entry_amounts[j])
                for j in entries
            ),
        )

    @property
    def plain(self) -> list[tuple[object, ...]]:
        """Each record's shape: (state, legs, entries, its first leg's side, account, amount
        and currency, its first entry's account and amount). A record without legs (entries)
        shows the next record's first one, or None: its count says it has none."""
        if self._plain is None:
            records = len(self)
            if self.leg_counts.count(1) == records and self.entry_counts.count(1) == records:
                # The common page: one leg and one entry each, so the columns line up.
                legs: list[Iterable[Any]] = [
                    self.leg_sides,
                    self.leg_accounts,
                    self.leg_amounts,
                    self.leg_currencies,
                ]
                entries: list[Iterable[Any]] = [self.entry_accounts, self.entry_amounts]
            else:
                legs = [
                    _firsts(column, self._leg_starts, records)
                    for column in (
                        self.leg_sides,
                        self.leg_accounts,
                        self.leg_amounts,
                        self.leg_currencies,
                    )
                ]
                entries = [
                    _firsts(column, self._entry_starts, records)
                    for column in (self.entry_accounts, self.entry_amounts)
                ]
            self._plain = list(
                zip(self.states, self.leg_counts, self.entry_counts, *legs, *entries, strict=True)
            )
        return self._plain


@dataclass(slots=True)  # not frozen: made millions of times, frozen costs
class GatewayDeposit:
    deposit_id: str
    bank: str
    account: str
    amount: int
    currency: str
    state: str  # RECORDED, APPLIED or REFUSED
    created_at: float


@dataclass(slots=True)  # not frozen: made millions of times, frozen costs
class BankDeposit:
    deposit_id: str
    account: str
    amount: int
    currency: str
    created_at: float


@dataclass(frozen=True)
class CurrencyTotals:
    currency: str
    balances: int
    held: int
    incoming: int
    deposits: int
    debits: int
    credits: int


@dataclass(frozen=True)
class AccountMismatch:
    account: str
    currency: str
    balance: int
    ledger_sum: int
    held: int
    open_holds: int
    incoming: int
    open_credits: int


@dataclass(frozen=True)
class BankBooks:
    """A bank's books in one snapshot (its Ledger/GetBooks)."""

    currencies: tuple[CurrencyTotals, ...]
    accounts: int
    payments: int
    ledger_entries: int
    in_doubt: int
    oldest_in_doubt: float | None
    mismatches: tuple[AccountMismatch, ...] = ()
    mismatches_total: int = 0
    stray_entries: tuple[BankEntry, ...] = ()
    stray_entries_total: int = 0


class BankUnreachable(Exception):
    """Raised by a bank's rows when the bank stopped answering mid-way."""

    def __init__(self, bank: str, why: str) -> None:
        super().__init__(f"bank {bank}: {why}")
        self.bank = bank
        self.why = why


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    code: Code
    bank: str = ""
    payment_id: str = ""
    account: str = ""
    expected: str = ""
    found: str = ""
    detail: str = ""


@dataclass
class BankSummary:
    bank: str
    reachable: bool
    books: BankBooks | None = None


@dataclass
class Report:
    started_at: float
    older_than: int
    finished_at: float = 0.0
    payments_checked: int = 0
    entries_checked: int = 0
    deposits_checked: int = 0
    in_flight: int = 0
    findings: list[Finding] = field(default_factory=list)
    findings_total: int = 0
    banks: list[BankSummary] = field(default_factory=list)
    # Per currency, every bank's balances and deposits (opening ones included).
    balances: dict[str, int] = field(default_factory=dict)
    deposits: dict[str, int] = field(default_factory=dict)
    # Seconds each stage took, for the log.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def agreed(self) -> bool:
        return self.findings_total == 0 and all(bank.reachable for bank in self.banks)

    def add(self, finding: Finding) -> None:
        self.findings_total += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(finding)

    def counts(self) -> Counter[str]:
        """Findings by code, of those listed (the first MAX_FINDINGS)."""
        return Counter(finding.code.value for finding in self.findings)


# -- the comparison -------------------------------------------------------------------------


class Reconcile:
    """One reconcile: feed it each bank's books, then the payments, then the deposits."""

    def __init__(self, started_at: float, older_than: int, now: float | None = None) -> None:
        self.report = Report(started_at=started_at, older_than=older_than)
        self._now = started_at if now is None else now
        self._unreachable: set[str] = set()
        self._moving: Counter[str] = Counter()  # per currency: payments not finished before
        self._books: dict[str, BankBooks] = {}

    @property
    def _young_after(self) -> float:
        """What was recorded (or last changed) after this is in flight, not a finding."""
        return self._now - self.report.older_than

    def _finished_before_start(self, payment: GatewayPayment) -> bool:
        return (
            payment.state in FINISHED
            and payment.completed_at is not None
            and payment.completed_at < self.report.started_at - CLOCK_SKEW
        )

    # -- banks ---------------------------------------------------------------------------

    def bank_unreachable(self, bank: str, why: str) -> None:
        """BANK is not answering: nothing of it is proven, and nothing of it is compared."""
        if bank in self._unreachable:
            return
        self._unreachable.add(bank)
        for summary in self.report.banks:
            if summary.bank == bank:
                summary.reachable = False
                break
        else:
            self.report.banks.append(BankSummary(bank, False))
        self.report.add(
            Finding(Code.BANK_UNREACHABLE, bank=bank, detail=f"bank {bank} did not answer: {why}")
        )

    def bank_books(self, bank: str, books: BankBooks) -> None:
        """BANK's own books: each account, each currency, its stray entries."""
        self._books[bank] = books
        self.report.banks.append(BankSummary(bank, True, books))
        for m in books.mismatches:
            if m.balance != m.ledger_sum:
                self.report.add(
                    Finding(
                        Code.BALANCE_MISMATCH,
                        bank=bank,
                        account=m.account,
                        expected=f"{m.ledger_sum} {m.currency} (the sum of its ledger)",
                        found=f"{m.balance} {m.currency}",
                        detail=f"account {m.account}'s balance is not the sum of its ledger",
                    )
                )
            if m.held != m.open_holds or m.incoming != m.open_credits:
                self.report.add(
                    Finding(
                        Code.HELD_MISMATCH,
                        bank=bank,
                        account=m.account,
                        expected=f"held {m.open_holds}, incoming {m.open_credits}",
                        found=f"held {m.held}, incoming {m.incoming}",
                        detail=f"account {m.account}'s held or incoming funds are not the sum "
                        "of the legs of its payments in doubt",
                    )
                )
        for _ in range(books.mismatches_total - len(books.mismatches)):
            self.report.add(
                Finding(Code.BALANCE_MISMATCH, bank=bank, detail="one more account (not listed)")
            )
        for entry in books.stray_entries:
            self.report.add(
                Finding(
                    Code.UNKNOWN_AT_BANK,
                    bank=bank,
                    account=entry.account,
                    found=f"entry {entry.id}: {entry.amount}",
                    detail=f"ledger entry {entry.id} belongs to no payment and is no deposit",
                )
            )
        for _ in range(books.stray_entries_total - len(books.stray_entries)):
            self.report.add(Finding(Code.UNKNOWN_AT_BANK, bank=bank, detail="one more stray entry"))
        for row in books.currencies:
            expected = row.deposits + row.credits - row.debits
            if row.balances != expected:
                self.report.add(
                    Finding(
                        Code.BANK_TOTAL,
                        bank=bank,
                        expected=f"{expected} {row.currency} (deposits {row.deposits} + credits "
                        f"{row.credits} - debits {row.debits})",
                        found=f"{row.balances} {row.currency}",
                        detail=f"bank {bank}'s {row.currency} balances are not its deposits "
                        "plus credits less debits",
                    )
                )
            self.report.balances[row.currency] = (
                self.report.balances.get(row.currency, 0) + row.balances
            )
            self.report.deposits[row.currency] = (
                self.report.deposits.get(row.currency, 0) + row.deposits
            )

    # -- payments --------------------------------------------------------------------------

    def payments(
        self,
        gateway: Iterable[GatewayPayment],
        banks: Mapping[str, Iterable[BankPaymentPage | BankPayment]],
    ) -> None:
        """Walks the gateway's payments and every bank's records (pages of them, or records
        one by one), all ordered by payment id, as one sorted merge: one page per bank in
        memory. Each bank's next record waits at a cursor; a gateway payment takes the records
        of its id, and a record whose id comes before is one the gateway does not know. A
        payment plainly committed at its two banks is checked in a few comparisons on the
        records' shapes (``BankPaymentPage.plain``); any other is compared the long way."""
        report = self.report
        cursors = [_Cursor(bank, self._guarded(bank, rows)) for bank, rows in banks.items()]
        unknown: list[_Record] = []
        for payment in gateway:
            payment_id = payment.id
            at_banks: dict[str, _Record] = {}
            for cursor in cursors:
                record = cursor.record
                while record is not None and record[0] < payment_id:
                    unknown.append(record)
                    record = next(cursor.records, None)
                if record is not None and record[0] == payment_id:
                    at_banks[cursor.bank] = record
                    report.entries_checked += record[2].entry_counts[record[3]]
                    record = next(cursor.records, None)
                cursor.record = record
            if unknown:
                self._unknown_records(unknown)
            report.payments_checked += 1
            if _plainly_committed(payment, at_banks) and self._finished_before_start(payment):
                continue  # the common case, checked in a few comparisons
            self._payment(payment, _records(at_banks))
        for cursor in cursors:
            record = cursor.record
            while record is not None:
                unknown.append(record)
                record = next(cursor.records, None)
        self._unknown_records(unknown)

    def _guarded(
        self, bank: str, rows: Iterable[BankPaymentPage | BankPayment]
    ) -> Iterator[_Record]:
        """BANK's records; if it stops answering, it is marked unreachable (before any
        payment after its last record is compared) and its records end there."""
        try:
            for row in rows:
                page = row if isinstance(row, BankPaymentPage) else BankPaymentPage.of([row])
                yield from zip(
                    page.payment_ids,
                    itertools.repeat(bank),
                    itertools.repeat(page),
                    range(len(page)),
                    page.plain,
                )
        except BankUnreachable as error:
            self.bank_unreachable(bank, error.why)

    def _unknown_records(self, records: list[_Record]) -> None:
        """Records of payments the gateway did not show, by payment id (then emptied)."""
        records.sort(key=_ID_AND_BANK)
        for payment_id, group in itertools.groupby(records, key=_FIRST):
            at_banks = {record[1]: record for record in group}
            for record in at_banks.values():
                self.report.entries_checked += record[2].entry_counts[record[3]]
            self._unknown_payment(payment_id, _records(at_banks))
        records.clear()

    def _payment(self, payment: GatewayPayment, at_banks: dict[str, BankPayment]) -> None:
        expected = _expected_entries(payment)
        finished = self._finished_before_start(payment)
        if not finished:
            self._moving[payment.currency] += 1
            if payment.state not in FINISHED:
                since = payment.decided_at or payment.created_at
                if since < self._young_after:
                    what = (
                        "undecided"
                        if payment.state is CoordinatorState.PREPARING
                        else ("decided and not acknowledged by every bank")
                    )
                    self.report.add(
                        Finding(
                            Code.STUCK_PAYMENT,
                            payment_id=payment.id,
                            found=payment.state.value,
                            detail=f"payment {payment.id} is {what} after "
                            f"{int(self._now - since)} s",
                        )
                    )
                else:
                    self.report.in_flight += 1
            else:
                self.report.in_flight += 1
        for bank in sorted(expected.keys() | at_banks.keys()):
            if bank in self._unreachable:
                continue
            self._at_bank(payment, bank, at_banks.get(bank), expected.get(bank, []), finished)

    def _at_bank(
        self,
        payment: GatewayPayment,
        bank: str,
        record: BankPayment | None,
        expected: list[BankLeg],
        finished: bool,
    ) -> None:
        def add(code: Code, detail: str, expected_text: str = "", found: str = "") -> None:
            self.report.add(Finding(code, bank, payment.id, "", expected_text, found, detail))

        state = payment.state
        if record is not None and record.legs:
            wanted = sorted((leg.side, leg.account, leg.amount, leg.currency) for leg in expected)
            held = sorted((leg.side, leg.account, leg.amount, leg.currency) for leg in record.legs)
            if wanted != held:
                add(
                    Code.LEG_MISMATCH,
                    f"bank {bank} voted on other legs than payment {payment.id}'s",
                    _legs_text(wanted),
                    _legs_text(held),
                )
        bank_state = record.state if record is not None else None
        if record is not None and record.state == "COMMITTED":
            if state in DECIDED_ABORT:
                add(
                    Code.STATE_MISMATCH,
                    f"bank {bank} committed payment {payment.id}, which the gateway aborted",
                    state.value,
                    "COMMITTED",
                )
                self._entries(payment, bank, record, [])
            else:
                # Decided commit (PREPARING: decided since the gateway's page was read).
                self._entries(payment, bank, record, expected)
            return
        if record is not None and record.entries:
            add(
                Code.ENTRY_UNEXPECTED,
                f"bank {bank} has ledger entries for payment {payment.id}, which it has not "
                "committed",
                "none",
                _entries_text(record.entries),
            )
        if bank_state == "ABORTED" and state in DECIDED_COMMIT and expected:
            add(
                Code.STATE_MISMATCH,
                f"bank {bank} aborted payment {payment.id}, which the gateway committed",
                state.value,
                "ABORTED",
            )
            return
        if not finished:
            return  # in flight (or reported stuck): the decision may not have arrived yet
        if state is CoordinatorState.COMMITTED and expected:
            add(
                Code.MISSING_AT_BANK,
                f"payment {payment.id} is committed, and bank {bank} "
                + ("never heard of it" if record is None else "still holds it, not applied"),
                "COMMITTED",
                bank_state or "no record",
            )
        elif state is CoordinatorState.ABORTED and bank_state == "PREPARED":
            add(
                Code.HOLD_LEFT,
                f"payment {payment.id} is aborted, and bank {bank} still holds its funds",
                "ABORTED",
                "PREPARED",
            )

    def _entries(
        self,
        payment: GatewayPayment,
        bank: str,
        record: BankPayment,
        expected: list[BankLeg],
    ) -> None:
        """Exactly one entry per expected leg, of its amount; no other."""
        left = list(record.entries)
        for leg in expected:
            sign = -1 if leg.side == "debit" else 1
            matching = [e for e in left if e.account == leg.account and e.amount * sign > 0]
            for entry in matching:
                left.remove(entry)
            wanted = f"{leg.account} {sign * leg.amount}"
            if not matching:
                code, detail = Code.ENTRY_MISSING, f"no {leg.side} entry"
            elif len(matching) > 1:
                code, detail = Code.ENTRY_DUPLICATE, f"{len(matching)} {leg.side} entries"
            elif matching[0].amount != sign * leg.amount:
                code, detail = Code.ENTRY_MISMATCH, f"a {leg.side} entry of another amount"
            else:
                continue
            self.report.add(
                Finding(
                    code,
                    bank,
                    payment.id,
                    leg.account,
                    wanted,
                    _entries_text(matching) or "none",
                    f"payment {payment.id} at bank {bank}: {detail}",
                )
            )
        if left:
            self.report.add(
                Finding(
                    Code.ENTRY_UNEXPECTED,
                    bank,
                    payment.id,
                    left[0].account,
                    "none",
                    _entries_text(left),
                    f"payment {payment.id} at bank {bank}: entries on accounts it does not "
                    "move money between",
                )
            )

    def _unknown_payment(self, payment_id: str, at_banks: dict[str, BankPayment]) -> None:
        """Records of a payment the gateway did not show (see the module's docstring)."""
        young = False
        for bank, record in sorted(at_banks.items()):
            if bank in self._unreachable:
                continue
            harmless = record.state == "ABORTED" and not record.entries
            if harmless:
                continue  # a tombstone or a no vote: no money, no hold
            if record.created_at >= self._young_after:
                young = True
                continue
            self.report.add(
                Finding(
                    Code.UNKNOWN_AT_BANK,
                    bank=bank,
                    payment_id=payment_id,
                    found=f"{record.state}, {_entries_text(record.entries) or 'no entries'}",
                    detail=f"bank {bank} has a record of payment {payment_id}, which the "
                    "gateway never made",
                )
            )
        if young:
            self.report.in_flight += 1

    # -- deposits --------------------------------------------------------------------------

    def deposits(
        self, gateway: Iterable[GatewayDeposit], banks: dict[str, Iterable[BankDeposit]]
    ) -> None:
        """Walks the gateway's deposits and every bank's deposit entries by deposit id."""
        streams: list[Iterator[tuple[str, str, GatewayDeposit | BankDeposit]]] = [
            ((deposit.deposit_id, "", deposit) for deposit in gateway)
        ]
        for bank, rows in banks.items():
            streams.append(self._guarded_deposits(bank, rows))
        merged = heapq.merge(*streams, key=lambda item: item[0])
        for deposit_id, group in itertools.groupby(merged, key=lambda item: item[0]):
            at_gateway: GatewayDeposit | None = None
            at_banks: dict[str, BankDeposit] = {}
            for _, bank, row in group:
                if isinstance(row, GatewayDeposit):
                    at_gateway = row
                else:
                    assert isinstance(row, BankDeposit)
                    at_banks[bank] = row
                    self.report.entries_checked += 1
            self.report.deposits_checked += 1
            self._deposit(deposit_id, at_gateway, at_banks)

    def _guarded_deposits(
        self, bank: str, rows: Iterable[BankDeposit]
    ) -> Iterator[tuple[str, str, BankDeposit]]:
        try:
            for row in rows:
                yield row.deposit_id, bank, row
        except BankUnreachable as error:
            self.bank_unreachable(bank, error.why)

    def _deposit(
        self, deposit_id: str, deposit: GatewayDeposit | None, at_banks: dict[str, BankDeposit]
    ) -> None:
        def add(code: Code, bank: str, account: str, detail: str, wanted: str, found: str) -> None:
            self.report.add(Finding(code, bank, "", account, wanted, found, detail))

        if deposit is None:
            for bank, entry in sorted(at_banks.items()):
                if bank in self._unreachable:
                    continue
                if deposit_id.startswith(OPENING_PREFIX):
                    if deposit_id != OPENING_PREFIX + entry.account:
                        add(
                            Code.DEPOSIT_MISMATCH,
                            bank,
                            entry.account,
                            f"opening balance {deposit_id} is on another account",
                            deposit_id.removeprefix(OPENING_PREFIX),
                            entry.account,
                        )
                elif entry.created_at >= self._young_after:
                    self.report.in_flight += 1  # recorded after the gateway's page was read
                else:
                    add(
                        Code.UNKNOWN_AT_BANK,
                        bank,
                        entry.account,
                        f"bank {bank} has deposit {deposit_id}, which the gateway never made",
                        "none",
                        f"{entry.amount} {entry.currency}",
                    )
            return
        wanted = f"{deposit.bank}/{deposit.account} {deposit.amount} {deposit.currency}"
        for bank, entry in sorted(at_banks.items()):
            found = f"{bank}/{entry.account} {entry.amount} {entry.currency}"
            if (bank, entry.account, entry.amount, entry.currency) != (
                deposit.bank,
                deposit.account,
                deposit.amount,
                deposit.currency,
            ) or deposit.state == "REFUSED":
                add(
                    Code.DEPOSIT_MISMATCH,
                    bank,
                    entry.account,
                    f"deposit {deposit_id} at bank {bank} is not the one the gateway "
                    f"recorded ({deposit.state.lower()})",
                    wanted,
                    found,
                )
        at_its_bank = deposit.bank in at_banks
        if deposit.bank in self._unreachable:
            return
        if deposit.state == "APPLIED" and not at_its_bank:
            add(
                Code.DEPOSIT_MISSING,
                deposit.bank,
                deposit.account,
                f"deposit {deposit_id} was applied, and bank {deposit.bank} does not have it",
                wanted,
                "none",
            )
        elif deposit.state == "RECORDED":
            if deposit.created_at >= self._young_after:
                self.report.in_flight += 1
            else:
                add(
                    Code.STUCK_DEPOSIT,
                    deposit.bank,
                    deposit.account,
                    f"deposit {deposit_id} was never confirmed by bank {deposit.bank} "
                    f"({'it has it' if at_its_bank else 'it does not have it'}): retry it "
                    "with the same idempotency key",
                    wanted,
                    "applied" if at_its_bank else "none",
                )

    # -- the end ---------------------------------------------------------------------------

    def finish(self, finished_at: float) -> Report:
        """Conservation per currency, once every bank's books and the walk are in."""
        if not self._unreachable:
            for currency in sorted(self.report.balances):
                balances = self.report.balances[currency]
                deposits = self.report.deposits.get(currency, 0)
                if balances != deposits and not self._moving[currency]:
                    self.report.add(
                        Finding(
                            Code.CONSERVATION,
                            expected=f"{deposits} {currency} (every deposit)",
                            found=f"{balances} {currency} (every balance)",
                            detail=f"the {currency} balances of every bank add up to "
                            f"{balances - deposits:+d} more than every deposit",
                        )
                    )
        self.report.finished_at = finished_at
        return self.report


def _firsts(column: list[Any], starts: list[int], records: int) -> Iterator[Any]:
    """The first value of COLUMN of each of RECORDS, which start at STARTS; a record without
    any shows the next record's, or None (the padding)."""
    padded = [*column, None]
    return map(padded.__getitem__, itertools.islice(starts, records))


# A bank's record on its page: (payment id, bank, page, index, shape: ``plain``).
_Record = tuple[str, str, BankPaymentPage, int, tuple[object, ...]]
_ID_AND_BANK = itemgetter(0, 1)


class _Cursor:
    """A bank's next record in the walk (None: no more), and the ones after it."""

    __slots__ = ("bank", "record", "records")

    def __init__(self, bank: str, records: Iterator[_Record]) -> None:
        self.bank = bank
        self.records = records
        self.record: _Record | None = next(records, None)


def _records(at_banks: dict[str, _Record]) -> dict[str, BankPayment]:
    return {bank: record[2].record(record[3]) for bank, record in at_banks.items()}


def _plainly_committed(payment: GatewayPayment, at_banks: dict[str, _Record]) -> bool:
    """Whether PAYMENT is committed across two banks exactly as it should be: one leg and one
    entry of its amount at each (the records' shapes, ``BankPaymentPage.plain``). Anything
    else goes the long way (``_at_bank``)."""
    if (
        payment.state is not CoordinatorState.COMMITTED
        or len(at_banks) != 2
        or payment.shares
        or payment.from_bank == payment.to_bank
    ):
        return False
    payer, payee = at_banks.get(payment.from_bank), at_banks.get(payment.to_bank)
    if payer is None or payee is None:
        return False
    amount, currency = payment.amount, payment.currency
    return payer[4] == (
        "COMMITTED",
        1,
        1,
        "debit",
        payment.from_account,
        amount,
        currency,
        payment.from_account,
        -amount,
    ) and payee[4] == (
        "COMMITTED",
        1,
        1,
        "credit",
        payment.to_account,
        amount,
        currency,
        payment.to_account,
        amount,
    )


def _expected_entries(payment: GatewayPayment) -> dict[str, list[BankLeg]]:
    """The legs each bank holds and, once committed, enters: the debit at the payer's bank,
    the credit at the payee's; of a split payment, a credit of each share at its payee's
    bank (one bank may hold several)."""
    legs: dict[str, list[BankLeg]] = defaultdict(list)
    legs[payment.from_bank].append(
        BankLeg("debit", payment.from_account, payment.amount, payment.currency)
    )
    credits = payment.shares or ((payment.to_bank, payment.to_account, payment.amount),)
    for bank, account, amount in credits:
        legs[bank].append(BankLeg("credit", account, amount, payment.currency))
    return dict(legs)


def _entries_text(entries: Iterable[BankEntry]) -> str:
    return ", ".join(f"{e.account} {e.amount:+d} (entry {e.id})" for e in entries)


def _legs_text(legs: Iterable[tuple[str, str, int, str]]) -> str:
    return ", ".join(
        f"{side} {account} {amount} {currency}" for side, account, amount, currency in legs
    )
