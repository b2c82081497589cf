"""The Node.js example (examples/node/pay.js) against a real cluster: a program in another
language, on the project's own .proto files and @grpc/grpc-js, logs in over mutual TLS,
reads the balance, pays with an idempotency key, gets the first outcome back when it sends
the key again, and reads the ErrorInfo reason when it reuses the key for another amount; the
payee refunds part of the payment, then the rest, and reads why a refund of more is refused;
and it pays several payees in one PayBatch call, each item with its own outcome.
Amounts are written and printed as the CLIs do ("12.34 USD", each currency's exponent from
``minipay/money.py``), and MINIPAY_GATEWAY may list several addresses, as the README's
replicas section has one export it.

Skips when node or npm is missing; installs the example's locked dependencies with
``npm ci`` once (the stamp in node_modules says it is done)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from devtools.cluster import GATEWAY, Cluster
from devtools.scratch import free_port
from minipay.money import EXPONENTS, format_minor_units, to_minor_units
from tests.helpers import (
    SEED_ACCOUNTS,
    SEED_PASSWORDS,
    balances,
    certificate_files,
    customer,
    gateway_payments,
    ledger_entries,
    moved,
    settle,
    wait_until,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"
STAMP = EXAMPLE / "node_modules" / ".installed"
NPM_CI_TIMEOUT = 180.0
RUN_TIMEOUT = 60.0
REQUEST_ID = r"\[x-request-id (?P<request_id>[0-9a-f]{32})\]"
PAYMENT = re.compile(
    r"^pay: (?P<payment_id>pay_[0-9a-f]{32}) (?P<status>[A-Z]+)(?P<rest>.*)  " + REQUEST_ID + "$",
    re.MULTILINE,
)
AMOUNT = r"\d+\.\d\d USD"
REFUND = re.compile(
    r"^refund: (?P<refund_id>pay_[0-9a-f]{32}) (?P<status>[A-Z]+): (?P<amount>\d+\.\d\d) USD to "
    r"(?P<payee>\S+), refund of (?P<payment_id>pay_[0-9a-f]{32}), idempotency key \S+(?P<rest>.*)  "
    + REQUEST_ID
    + "$",
    re.MULTILINE,
)
BALANCE = re.compile(
    rf"^(?P<label>balance(?: after)?): (?P<account>\S+) balance (?P<balance>{AMOUNT}), "
    rf"held (?P<held>{AMOUNT}), available (?P<available>{AMOUNT})  " + REQUEST_ID + "$",
    re.MULTILINE,
)


def cents(shown: str) -> int:
    """ "12.34 USD" as minor units, read back with minipay.money."""
    amount, currency = shown.split()
    return to_minor_units(amount, currency, allow_zero=True)


def node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(part) for part in out.strip().lstrip("v").split("."))


def npm_ci(npm: str) -> None:
    """Installs the example's dependencies from its lock file, unless the stamp is newer than
    both package files. A lock keeps two test workers from installing at once."""
    key = hashlib.sha256(str(EXAMPLE).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"minipay-npm-ci-{key}.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        inputs = [EXAMPLE / "package.json", EXAMPLE / "package-lock.json"]
        if STAMP.exists() and all(STAMP.stat().st_mtime >= f.stat().st_mtime for f in inputs):
            return
        # --ignore-scripts: nothing the example uses needs an install script.
        done = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {EXAMPLE} failed:\n{done.stdout}\n{done.stderr}")
        STAMP.touch()


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the example's dependencies installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the Node.js example needs node and npm on the PATH")
    if node_version(node) < (18, 3):
        pytest.skip("the Node.js example needs Node.js 18.3 or later (util.parseArgs)")
    npm_ci(npm)
    return node


def run_example(
    node: str, cluster: Cluster, certs: Path, username: str, *args: str, gateway: str = ""
) -> subprocess.CompletedProcess[str]:
    """Runs pay.js as USERNAME against CLUSTER's gateway (or the addresses GATEWAY lists) with
    client-1's certificate, the configuration in the environment as a user would set it (none
    of ours leaks in)."""
    files = certificate_files(certs, "client-1")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MINIPAY_")}
    env.update(
        MINIPAY_GATEWAY=gateway or cluster.gateway_address,
        MINIPAY_CA=str(files.ca),
        MINIPAY_CERT=str(files.cert),
        MINIPAY_KEY=str(files.key),
        MINIPAY_PASSWORD=SEED_PASSWORDS[username],
    )
    return subprocess.run(
        [node, "pay.js", "--username", username, *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def test_node_example_pays_replays_and_reads_error_reasons(
    node: str, cluster: Cluster, certs: Path
) -> None:
    customer(cluster, certs, "alice")  # registers alice's account with the gateway
    payer, payee = SEED_ACCOUNTS["alice"], SEED_ACCOUNTS["carol"]
    key = f"node-{uuid.uuid4()}"
    pay = ("--to-bank", payee[0], "--to-account", payee[1], "--idempotency-key", key)
    before = balances(cluster)

    first = run_example(node, cluster, certs, "alice", *pay, "--amount", "12.34")
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert re.search(r"^login: alice \(customer\), token valid until \S+  " + REQUEST_ID, out, re.M)
    shown = {m["label"]: m for m in BALANCE.finditer(out)}
    assert shown.keys() == {"balance", "balance after"}, out
    assert shown["balance"]["account"] == "/".join(payer)
    assert cents(shown["balance"]["balance"]) == before[payer]
    available, held = cents(shown["balance"]["available"]), cents(shown["balance"]["held"])
    assert available == before[payer] - held
    # The gateway delivers the decision to the payer's bank before answering a balance read.
    assert cents(shown["balance after"]["balance"]) == before[payer] - 1234
    paid = PAYMENT.search(out)
    assert paid is not None, out
    assert paid["status"] == "COMMITTED", out
    assert paid["rest"].startswith(": 12.34 USD to beta/B-2001,"), out
    assert "replayed" not in paid["rest"]
    payment_id = paid["payment_id"]
    # Every line carries its own request id, the one the gateway logged the call under.
    request_ids = re.findall(REQUEST_ID, out)
    assert len(request_ids) == 4 and len(set(request_ids)) == 4, out
    log = cluster.log_file(GATEWAY)
    wait_until(lambda: paid["request_id"] in log.read_text(), 10, "the Pay call in the log")

    settle(cluster)
    assert moved(before, balances(cluster)) == {payer: -1234, payee: 1234}
    assert ledger_entries(cluster, payment_id) == {(*payer, -1234), (*payee, 1234)}

    # The same key again: the first outcome, nothing paid twice.
    again = run_example(node, cluster, certs, "alice", *pay, "--amount", "12.34")
    assert again.returncode == 0, again.stdout + again.stderr
    replay = PAYMENT.search(again.stdout)
    assert replay is not None, again.stdout
    assert (replay["payment_id"], replay["status"]) == (payment_id, "COMMITTED")
    assert "replayed: this key was used before" in replay["rest"]
    settle(cluster)
    assert moved(before, balances(cluster)) == {payer: -1234, payee: 1234}
    assert [p for p, (_, k) in gateway_payments(cluster).items() if k == key] == [payment_id]

    # The same key for another amount: refused, and the program reads why from the
    # google.rpc.Status details in the trailers.
    reused = run_example(node, cluster, certs, "alice", *pay, "--amount", "9.99")
    assert reused.returncode == 1, reused.stdout + reused.stderr
    err = reused.stderr
    assert re.search(r"^error: Payments/Pay: INVALID_ARGUMENT: ", err, re.M), err
    assert re.search(r"^  x-request-id: [0-9a-f]{32}$", err, re.M), err
    assert re.search(r"^  reason: IDEMPOTENCY_KEY_REUSED \(domain minipay\.v1\)", err, re.M), err
    assert PAYMENT.search(reused.stdout) is None
    settle(cluster)
    assert moved(before, balances(cluster)) == {payer: -1234, payee: 1234}


BATCH_LINE = re.compile(
    r"^batch\[(?P<index>\d+)\]: (?:(?P<payment_id>pay_[0-9a-f]{32}) (?P<status>[A-Z]+)"
    r"|refused (?P<code>[A-Z_]+) \((?P<reason>[A-Z_]+)\))(?P<rest>.*)$",
    re.MULTILINE,
)


@pytest.mark.in_process
def test_node_example_pays_a_batch(node: str, cluster: Cluster, certs: Path) -> None:
    """One PayBatch call: each item its own payment, or refused alone; the same command
    again replays every item; and nothing is paid twice."""
    customer(cluster, certs, "alice")
    payer, carol, erin = SEED_ACCOUNTS["alice"], SEED_ACCOUNTS["carol"], SEED_ACCOUNTS["erin"]
    key = f"node-batch-{uuid.uuid4()}"
    batch = "beta/B-2001=1.00,omega/O-1=5.00,gamma/G-3001=2.50"
    before = balances(cluster)

    first = run_example(node, cluster, certs, "alice", "--batch", batch, "--idempotency-key", key)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = {int(m["index"]): m for m in BATCH_LINE.finditer(first.stdout)}
    assert sorted(lines) == [1, 2, 3], first.stdout
    assert (lines[1]["status"], lines[3]["status"]) == ("COMMITTED", "COMMITTED")
    assert lines[1]["rest"] == f": 1.00 USD to beta/B-2001, idempotency key {key}-1"
    assert lines[3]["rest"] == f": 2.50 USD to gamma/G-3001, idempotency key {key}-3"
    assert (lines[2]["code"], lines[2]["reason"]) == ("NOT_FOUND", "BANK_NOT_FOUND")
    assert re.search(
        r"^batch: 3 items, 2 committed, 0 aborted, 1 refused  " + REQUEST_ID, first.stdout, re.M
    ), first.stdout
    settle(cluster)
    assert moved(before, balances(cluster)) == {payer: -350, carol: 100, erin: 250}

    again = run_example(node, cluster, certs, "alice", "--batch", batch, "--idempotency-key", key)
    assert again.returncode == 0, again.stdout + again.stderr
    replays = {int(m["index"]): m for m in BATCH_LINE.finditer(again.stdout)}
    for index in (1, 3):
        assert replays[index]["payment_id"] == lines[index]["payment_id"]
        assert replays[index]["rest"].endswith(", replayed: this key was used before")
    settle(cluster)
    assert moved(before, balances(cluster)) == {payer: -350, carol: 100, erin: 250}
    bad = run_example(node, cluster, certs, "alice", "--batch", "beta/B-2001")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.startswith("error: --batch: beta/B-2001 is not BANK/ACCOUNT=AMOUNT")


@pytest.mark.in_process
def test_node_example_pays_a_split(node: str, cluster: Cluster, certs: Path) -> None:
    """One split payment: every payee paid their share in one payment, the same command again
    replays it, and a payee's bank's no moves nothing."""
    customer(cluster, certs, "alice")
    payer, carol, erin = SEED_ACCOUNTS["alice"], SEED_ACCOUNTS["carol"], SEED_ACCOUNTS["erin"]
    key = f"node-split-{uuid.uuid4()}"
    split = "beta/B-2001=1.00,gamma/G-3001=2.50"
    before = balances(cluster)
    first = run_example(node, cluster, certs, "alice", "--split", split, "--idempotency-key", key)
    assert first.returncode == 0, first.stdout + first.stderr
    line = re.search(
        r"^pay: (pay_[0-9a-f]{32}) COMMITTED: 3.50 USD split to 2 payees: "
        r"beta/B-2001 1.00 USD, gamma/G-3001 2.50 USD, idempotency key (\S+)",
        first.stdout,
        re.M,
    )
    assert line is not None and line[2] == key, first.stdout
    again = run_example(node, cluster, certs, "alice", "--split", split, "--idempotency-key", key)
    assert line[1] in again.stdout and "replayed" in again.stdout, again.stdout
    missing = "beta/B-2001=1.00,gamma/G-9999=2.50"
    aborted = run_example(node, cluster, certs, "alice", "--split", missing)
    assert aborted.returncode == 0 and " ABORTED (ACCOUNT_NOT_FOUND" in aborted.stdout
    settle(cluster)
    assert moved(before, balances(cluster)) == {payer: -350, carol: 100, erin: 250}


@pytest.mark.in_process
def test_node_example_takes_a_list_of_replicas(node: str, cluster: Cluster, certs: Path) -> None:
    """MINIPAY_GATEWAY as the README's replicas section exports it: a comma-separated list,
    balanced over, here with a replica that is down (nothing listens at the first address)."""
    customer(cluster, certs, "alice")
    down = f"127.0.0.1:{free_port()}"
    payee = SEED_ACCOUNTS["carol"]
    pay = ("--to-bank", payee[0], "--to-account", payee[1], "--amount", "0.05")
    for gateway in (f"{down},{cluster.gateway_address}", f"{cluster.gateway_address}, {down}"):
        done = run_example(node, cluster, certs, "alice", *pay, gateway=gateway)
        assert done.returncode == 0, done.stdout + done.stderr
        paid = PAYMENT.search(done.stdout)
        assert paid is not None and paid["status"] == "COMMITTED", done.stdout
        assert paid["rest"].startswith(": 0.05 USD to "), done.stdout
    bad = run_example(node, cluster, certs, "alice", gateway="127.0.0.1:1,nowhere")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.startswith("error: --gateway: nowhere is not HOST:PORT"), bad.stderr


def test_node_example_amounts_agree_with_minipay_money(node: str) -> None:
    """Every ISO 4217 currency's exponent, and amounts in and out, as minipay/money.py has
    them: the example prints 1234 minor units of USD as 12.34."""
    samples = [(code, 1234) for code in sorted(EXPONENTS)] + [("USD", 5), ("JPY", 0)]
    script = (
        "const {exponent, formatMinorUnits, toMinorUnits} = require('./pay.js');"
        "const samples = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(samples.map(([code, minor]) => {"
        "  const text = formatMinorUnits(String(minor), code);"
        "  return [code, exponent(code), text, toMinorUnits(text === '0' ? '1' : text, code)];"
        "})));"
    )
    done = subprocess.run(
        [node, "-e", script],
        cwd=EXAMPLE,
        input=json.dumps(samples),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for (code, minor), (_, places, text, back) in zip(samples, answers, strict=True):
        assert places == EXPONENTS[code], code
        assert text == format_minor_units(minor, code), code
        assert back == str(to_minor_units(text if text != "0" else "1", code)), code


@pytest.mark.in_process
def test_node_example_refunds_a_payment_received(node: str, cluster: Cluster, certs: Path) -> None:
    customer(cluster, certs, "alice")
    customer(cluster, certs, "carol")  # registers carol's account with the gateway
    payer, payee = SEED_ACCOUNTS["alice"], SEED_ACCOUNTS["carol"]
    pay = ("--to-bank", payee[0], "--to-account", payee[1], "--amount", "10.00")
    paid = PAYMENT.search(run_example(node, cluster, certs, "alice", *pay).stdout)
    assert paid is not None and paid["status"] == "COMMITTED"
    payment_id = paid["payment_id"]
    settle(cluster)
    before = balances(cluster)

    key = f"node-refund-{uuid.uuid4()}"
    part = ("--refund", payment_id, "--amount", "2.50", "--idempotency-key", key)
    first = run_example(node, cluster, certs, "carol", *part)
    assert first.returncode == 0, first.stdout + first.stderr
    refund = REFUND.search(first.stdout)
    assert refund is not None, first.stdout
    assert (refund["status"], refund["amount"], refund["payment_id"]) == (
        "COMMITTED",
        "2.50",
        payment_id,
    )
    assert refund["payee"] == "/".join(payer)
    shown = {m["label"]: m for m in BALANCE.finditer(first.stdout)}
    assert shown["balance after"]["balance"] == f"{format_minor_units(before[payee] - 250)} USD"
    again = REFUND.search(run_example(node, cluster, certs, "carol", *part).stdout)
    assert again is not None and again["refund_id"] == refund["refund_id"]
    assert "replayed: this key was used before" in again["rest"]

    rest = run_example(node, cluster, certs, "carol", "--refund", payment_id)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    whole = REFUND.search(rest.stdout)
    assert whole is not None and (whole["status"], whole["amount"]) == ("COMMITTED", "7.50")
    settle(cluster)
    assert moved(before, balances(cluster)) == {payer: 1000, payee: -1000}
    assert ledger_entries(cluster, whole["refund_id"]) == {(*payee, -750), (*payer, 750)}

    over = run_example(node, cluster, certs, "carol", "--refund", payment_id, "--amount", "0.01")
    assert over.returncode == 1, over.stdout + over.stderr
    err = over.stderr
    assert re.search(r"^error: Payments/Refund: FAILED_PRECONDITION: ", err, re.M), err
    assert re.search(r"^  reason: REFUND_EXCEEDS_PAYMENT \(domain minipay\.v1\)", err, re.M), err
    assert '"refundable_minor_units":"0"' in err, err
