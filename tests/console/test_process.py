"""``python -m console`` as a process, from outside: it prints where it serves, refuses an
unsafe setting with one line, logs one JSON line per request without secrets, and stops
promptly on SIGTERM even while a browser holds an event stream open."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.cluster import Cluster
from tests.console.support import Api, Person, new_customer

REPO_ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    return subprocess.Popen(
        [sys.executable, "-m", "console", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def served(
    console_cluster: Cluster, console_certs: Path
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = start(
        "--listen", "127.0.0.1:0",
        "--gateway", console_cluster.gateway_address,
        "--ca", str(console_certs / "services-ca.pem"),
        "--cert", str(console_certs / "console.pem"),
        "--key", str(console_certs / "console-key.pem"),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.fullmatch(
            r"console: serving on http://127\.0\.0\.1:(\d+) \(gateway .+\)\n", line
        )
        assert found, line
        yield process, int(found.group(1))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def request(
    port: int, method: str, path: str, body: str = "", cookie: str = ""
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"cookie": cookie} if cookie else {}
    if body:
        headers["content-type"] = "application/x-www-form-urlencoded"
    connection.request(method, path, body=body or None, headers=headers)
    return connection.getresponse()


def cookie_of(response: http.client.HTTPResponse, name: str) -> str:
    for header in response.headers.get_all("set-cookie") or []:
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie in {response.headers}")


def sign_in(port: int, person: Person) -> str:
    """Signs in as a browser would; the session cookie ("name=value")."""
    form = request(port, "GET", "/login")
    assert form.status == 200
    csrf_cookie = cookie_of(form, "minipay_login_csrf")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.read().decode())
    assert csrf
    body = f"csrf_token={csrf.group(1)}&username={person.username}&password={person.password}"
    answer = request(port, "POST", "/login", body, cookie=csrf_cookie)
    assert answer.status == 303, answer.read()
    set_cookie = next(h for h in answer.headers.get_all("set-cookie") or [] if "session" in h)
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    return cookie_of(answer, "minipay_session")


def test_serves_logs_and_stops_promptly_with_a_stream_open(
    served: tuple[subprocess.Popen[str], int], api: Api
) -> None:
    process, port = served
    answer = request(port, "GET", "/login")
    assert answer.status == 200
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    person = new_customer(api)
    session = sign_in(port, person)
    assert request(port, "GET", "/account", cookie=session).status == 200

    stream = request(port, "GET", "/live/payments", cookie=session)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    stopping = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    took = time.monotonic() - stopping
    # uvicorn re-raises the signal after a clean shutdown: -15 is a clean stop.
    assert code in (0, -signal.SIGTERM), process.stderr.read() if process.stderr else ""
    assert took < 5, f"took {took:.1f} s to stop with a stream open"
    print(f"python -m console stopped in {took:.2f} s with an event stream open")

    assert process.stderr is not None
    log = process.stderr.read()
    assert '"route": "/account", "status": 200' in log
    assert person.password not in log and session.split("=", 1)[1] not in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "0.0.0.0:0"], "is not a loopback address"),
        (["--listen", "0.0.0.0:0", "--allow-remote"], "off loopback the console serves HTTPS"),
        (["--cert", "/nonexistent/console.pem"], "cannot read the console's certificate"),
        (["--session-lifetime", "soon"], "expected a number"),
    ],
)
def test_an_unusable_setting_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    process = start(*args)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err


def test_the_page_bench_measures_and_prints_every_page() -> None:
    """make bench-console, small: every page measured with payments stored, within budget."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.bench.console_pages",
            "--payments",
            "300",
            "--rounds",
            "2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "300 payments stored" in done.stdout
    for page in ("/admin/payments/{id}", "/account", "/payments/{id}", "/admin "):
        assert page in done.stdout
    assert "every page within the 300 ms budget" in done.stdout
