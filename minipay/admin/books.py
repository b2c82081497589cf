"""The admin's view of the books: ``admin reconcile`` (a summary a person reads, every
finding with --json, exit 1 when the books disagree) and ``admin overview``."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime
from typing import Any

from minipay.client.commandline import iso, show, utc_text
from minipay.client.results import Amount, Overview, ReconcileReport
from minipay.money import format_minor_units

SHOWN_FINDINGS = 50  # in the text summary; --json has every one the report lists


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_json(item) for item in value]
    return value


def _money(amounts: tuple[Amount, ...]) -> str:
    return (
        ", ".join(f"{format_minor_units(a.minor_units, a.currency)} {a.currency}" for a in amounts)
        or "-"
    )


def report_lines(report: ReconcileReport) -> list[str]:
    seconds = (report.finished_at - report.started_at).total_seconds()
    head = "the books agree" if report.agreed else "THE BOOKS DISAGREE"
    lines = [
        f"{head}: {report.payments_checked} payments and refunds, {report.entries_checked} "
        f"ledger entries, {report.deposits_checked} deposits checked; {report.in_flight} in "
        f"flight (younger than {report.older_than_seconds} s); {report.findings_total} "
        f"finding{'' if report.findings_total == 1 else 's'}",
        f"run {report.run_id} by {report.replica or '?'} at {utc_text(report.started_at)}, "
        f"{seconds:.1f} s",
    ]
    for bank in report.banks:
        if not bank.reachable:
            lines.append(f"  bank {bank.bank:<8} NOT ANSWERING: its books are unproven")
            continue
        lines.append(
            f"  bank {bank.bank:<8} {bank.accounts} accounts, {bank.payments} payments, "
            f"{bank.ledger_entries} entries; balances {_money(bank.balances)}; held "
            f"{_money(bank.held)}; {bank.in_doubt} in doubt"
        )
    for books in report.currencies:
        balances = format_minor_units(books.balances_minor_units, books.currency)
        deposits = format_minor_units(books.deposits_minor_units, books.currency)
        sign = "=" if books.balances_minor_units == books.deposits_minor_units else "!="
        lines.append(
            f"  {books.currency}: every balance {balances} {sign} every deposit {deposits}"
        )
    for finding in report.findings[:SHOWN_FINDINGS]:
        where = "/".join(part for part in (finding.bank, finding.account) if part)
        line = f"{finding.code:<17} {where + ' ' if where else ''}{finding.detail}"
        if finding.expected or finding.found:
            line += f" (expected {finding.expected or '-'}, found {finding.found or '-'})"
        lines.append(line)
    if report.findings_total > SHOWN_FINDINGS:
        lines.append(
            f"... and {report.findings_total - SHOWN_FINDINGS} more findings: --json lists "
            f"the first {len(report.findings)}"
        )
    return lines


def show_report(args: argparse.Namespace, report: ReconcileReport) -> int:
    """Prints the report; 0 when the books agree, 1 when they do not."""
    data = _json(report)
    data.pop("request_id", None)
    show(args, data, "\n".join(report_lines(report)), report.request_id)
    return 0 if report.agreed else 1


def overview_lines(overview: Overview) -> list[str]:
    lines = []
    for bank in overview.banks:
        state = "serving" if bank.serving else "NOT ANSWERING"
        line = f"bank {bank.name:<8} {bank.address:<22} {state}"
        if bank.serving:
            line += (
                f"; balances {_money(bank.balances)}; held {_money(bank.held)}; "
                f"{bank.in_doubt} in doubt"
            )
            if bank.oldest_in_doubt is not None:
                line += f" (oldest {utc_text(bank.oldest_in_doubt)})"
        lines.append(line)
    for replica in overview.replicas:
        state = "live" if replica.live else "lease expired"
        lines.append(f"replica {replica.name:<10} {state}, started {utc_text(replica.started_at)}")
    decided = sum(b.committed + b.aborted for b in overview.throughput)
    seconds = sum(b.seconds for b in overview.throughput) or 1
    last = overview.throughput[-2:-1] or overview.throughput[-1:]
    recent = f"{(last[0].committed + last[0].aborted) / last[0].seconds:.1f}/s" if last else "-"
    lines.append(
        f"payments decided: {decided} in the last {seconds // 60} min "
        f"({decided / seconds:.1f}/s; last full 10 s: {recent})"
    )
    open_line = f"open payments: {overview.open_payments}, undecided {overview.undecided_payments}"
    if overview.oldest_open_payment is not None:
        age = (datetime.now(UTC) - overview.oldest_open_payment).total_seconds()
        open_line += f", oldest {age:.0f} s old"
    lines.append(open_line)
    if overview.audit_head_sequence:
        lines.append(f"audit head: {overview.audit_head_sequence}:{overview.audit_head_hash}")
    if overview.last_event_sequence:
        lines.append(f"last event: {overview.last_event_sequence}")
    last_run = overview.last_reconcile
    if last_run is None:
        lines.append("last reconcile: none yet")
    else:
        verdict = "agreed" if last_run.agreed else f"{last_run.findings_total} findings"
        lines.append(
            f"last reconcile: {verdict}, {utc_text(last_run.finished_at)} ({last_run.run_id})"
        )
    return lines


def show_overview(args: argparse.Namespace, overview: Overview) -> None:
    data = _json(overview)
    data.pop("request_id", None)
    show(args, data, "\n".join(overview_lines(overview)), overview.request_id)
