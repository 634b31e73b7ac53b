"""Limits and dependency faults, against the real processes: the connection limit, the request timeout, pipelining,
/healthz and /readyz, and Kafka or Redis stopped and started again underneath a running API and projector.

Kafka and Redis are stopped and started with scripts/lib.sh (kafka_down/kafka_up, redis_down/redis_up), so these
tests act on whichever stack the CREDITS_* environment names (the one scripts/test.sh brought up, or a private one
with CREDITS_DATA_DIR and the port variables set); every test leaves both running again. Every wait is bounded.
The measured times are printed (run pytest with -s to see them).
"""
import os
import re
import socket
import subprocess
import time
import uuid

import pytest
import requests

from conftest import REPO, Client
from test_openapi import check

# Small limits, so the tests reach them quickly; the defaults are much larger.
CONNECTIONS_MAX = 6
REQUEST_TIMEOUT_MS = 1000
LIMITS_ENV = {"CREDITS_CONNECTIONS_MAX": str(CONNECTIONS_MAX), "CREDITS_REQUEST_TIMEOUT_MS": str(REQUEST_TIMEOUT_MS)}

APPEND_TIMEOUT_S = 5       # CREDITS_APPEND_TIMEOUT_MS's default: the longest a mutation may wait for Kafka
REDIS_TIMEOUT_S = 1        # CREDITS_REDIS_TIMEOUT_MS's default
# The bounds below are what the tests claim (an answer within a configured timeout, or at once rather than after
# one), set several times the configured value so that a loaded machine running the ASan build still meets them.
TIMEOUT_SLACK = 3          # a timeout of t is met if the answer comes within t * TIMEOUT_SLACK
FAST_S = 1.5               # "at once": well under the append timeout a mutation would wait for a stopped Kafka
KAFKA_NOTICED_S = 30       # Kafka stopped -> every mutation answered 503 at once
RECOVERY_S = 60            # dependency back -> served again
LIB_TIMEOUT_S = 150        # kafka_up waits up to 90 s for the broker, kafka_down up to 30 s


def lib(function):
    """Runs a scripts/lib.sh function with this environment (so on the same stack as the tests)."""
    subprocess.run(["bash", "-c", f'source "{REPO}/scripts/lib.sh" && {function}'], env=os.environ, check=True,
                   timeout=LIB_TIMEOUT_S, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(what, seconds):
    print(f"\nMEASURED {what}: {seconds * 1000:.0f} ms")


def timed(call):
    t0 = time.monotonic()
    r = call()
    return r, time.monotonic() - t0


@pytest.fixture(scope="module")
def limited(stack):
    """The session's stack, restarted with small connection and request limits for this module, and restarted
    with its own settings afterwards (one writer at a time on the test topics)."""
    saved = dict(stack.api.env)
    stack.stop()
    stack.api.env.update(LIMITS_ENV)
    stack.start()
    yield stack
    stack.stop()
    stack.api.env.clear()
    stack.api.env.update(saved)
    stack.start()


@pytest.fixture()
def funded(limited):
    c = Client(limited.url)
    account = c.post("/v1/accounts/create", {"name": "F", "externalId": "user_" + uuid.uuid4().hex[:12]}).json()
    r = c.post("/v1/accounts/credits/add", {"accountId": account["account"]["id"], "amount": 100})
    assert r.status_code == 200, r.text
    return account["account"]["id"], r.headers["Credits-Position"]


def wait_current(client, account_id, position, timeout_s=RECOVERY_S):
    """The balance once the projection has the position and the answer is not stale (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = client.get("/v1/accounts/balance", headers={"Credits-Min-Position": position}, accountId=account_id)
            if r.status_code == 200 and "Credits-Stale" not in r.headers:
                return r.json()
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"balance of {account_id} not current within {timeout_s}s"
        time.sleep(0.2)


def wait_ready(url, timeout_s=RECOVERY_S):
    deadline = time.monotonic() + timeout_s
    while requests.get(url + "/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, f"/readyz not 200 within {timeout_s}s"
        time.sleep(0.2)
    return time.monotonic()


def raw_connection(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_closed(s, timeout_s):
    """Everything the server sends until it closes the connection; fails if it does not close in time."""
    s.settimeout(timeout_s)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# ---- health ---------------------------------------------------------------------------------------------------

def test_healthz_and_readyz_when_everything_is_up(limited):
    assert requests.get(limited.url + "/healthz", timeout=10).status_code == 200
    wait_ready(limited.url)
    r = check(requests.get(limited.url + "/readyz", timeout=10), "/readyz", "get")
    body = r.json()
    idempotency = body.pop("idempotency")
    assert body == {"status": "ready", "down": [],
                    "checks": {"kafka": {"ok": True}, "writer": {"ok": True}, "redis": {"ok": True},
                               "view": {"ok": True}}}
    # No key was forgotten for lack of room (16 million by default): the whole window is held.
    assert idempotency["windowSeconds"] == idempotency["configuredWindowSeconds"] == 86400, idempotency
    assert idempotency["keysMax"] == 16_000_000 and 0 <= idempotency["keys"] <= idempotency["keysMax"], idempotency
    assert requests.get(limited.url + "/readyz?x=1", timeout=10).status_code == 200  # any query, no key
    for path in ("/healthz", "/readyz", "/metrics"):  # GET alone
        r = requests.post(limited.url + path, timeout=10)
        assert r.status_code == 405 and r.headers["Allow"] == "GET", (path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "method_not_allowed", r.text


# ---- connection limits ----------------------------------------------------------------------------------------

def test_connections_beyond_the_limit_are_answered_503_and_closed(limited):
    held = []
    try:
        # Idle connections count; the server answers one beyond the limit at once, before reading anything.
        refused = None
        for _ in range(CONNECTIONS_MAX + 4):
            s = raw_connection(limited.port)
            s.settimeout(0.5)
            try:
                early = s.recv(65536)
            except socket.timeout:
                held.append(s)
                continue
            refused = early + read_until_closed(s, 5)
            s.close()
            break
        assert refused is not None, f"{len(held)} connections open, none refused"
        assert len(held) <= CONNECTIONS_MAX
        assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
        assert b"too many connections" in refused and b"Retry-After: 1" in refused

        # A client that sends a whole request is answered with the documented 503, not a reset.
        r = check(requests.get(limited.url + "/healthz", timeout=10), "/healthz", "get")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while requests.get(limited.url + "/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "closed connections were not given back"
        time.sleep(0.1)


def test_a_slow_drip_request_is_cut_off_after_the_request_timeout(limited):
    cut_off_max_s = REQUEST_TIMEOUT_MS / 1000 * TIMEOUT_SLACK
    t0 = time.monotonic()  # before the connection: the server's timer cannot start earlier
    s = raw_connection(limited.port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed_after = None
        while time.monotonic() - t0 < cut_off_max_s + 1:  # one header byte every 100 ms: never a whole request
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            s.settimeout(0.1)
            try:
                if s.recv(65536) == b"":
                    closed_after = time.monotonic() - t0
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed_after = time.monotonic() - t0
                break
        assert closed_after is not None, f"a request trickling in for {cut_off_max_s + 1:.0f} s was not cut off"
        measure("slow-drip request closed after", closed_after)
        assert REQUEST_TIMEOUT_MS / 1000 * 0.8 <= closed_after <= cut_off_max_s, closed_after
    finally:
        s.close()


def test_an_idle_connection_outlives_the_request_timeout(limited):
    s = raw_connection(limited.port)
    try:
        time.sleep(2 * REQUEST_TIMEOUT_MS / 1000)  # idle, not a request: the idle timeout (30 s) applies
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(s, 10).startswith(b"HTTP/1.1 200")
    finally:
        s.close()


def test_pipelined_requests_are_answered_one_after_another_in_order(limited):
    s = raw_connection(limited.port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: first\r\n\r\n"
                  b"GET /nowhere HTTP/1.1\r\nHost: x\r\nX-Request-Id: second\r\n\r\n"
                  b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Request-Id: third\r\nConnection: close\r\n\r\n")
        data = read_until_closed(s, 10)
    finally:
        s.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    ids = re.findall(rb"\r\nX-Request-Id: ([^\r]*)\r\n", data, flags=re.IGNORECASE)
    assert statuses == [b"200", b"404", b"200"] and ids == [b"first", b"second", b"third"], data


# ---- Kafka stopped --------------------------------------------------------------------------------------------

def test_kafka_stopped_mutations_503_fast_queries_stale_then_recovers(limited, funded):
    account_id, position = funded
    client = Client(limited.url)
    before = wait_current(client, account_id, position)["balance"]
    added = 0
    try:
        lib("kafka_down")
        stopped = time.monotonic()

        # Mutations: 503, never a false success, and soon at once.
        slowest = 0.0
        while True:
            r, took = timed(lambda: client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 1}))
            check(r, "/v1/accounts/credits/add", "post")
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            assert took <= APPEND_TIMEOUT_S * TIMEOUT_SLACK, f"a mutation waited {took:.1f}s for a stopped Kafka"
            slowest = max(slowest, took)
            if took < FAST_S:
                break
            assert time.monotonic() - stopped < KAFKA_NOTICED_S, "mutations still slow long after Kafka stopped"
        measure("Kafka stopped -> mutations answered 503 at once", time.monotonic() - stopped)
        measure("slowest 503 while Kafka was stopping", slowest)
        fast = []
        for _ in range(5):
            r, took = timed(lambda: client.post("/v1/reservations/create", {"accountId": account_id, "amount": 1}))
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            fast.append(took)
        measure("mutation 503 with Kafka down (max of 5)", max(fast))
        assert max(fast) < FAST_S

        # Queries: still answered from Redis, flagged stale.
        r, took = timed(lambda: client.get("/v1/accounts/balance", accountId=account_id))
        check(r, "/v1/accounts/balance", "get")
        assert r.status_code == 200 and r.headers.get("Credits-Stale") == "true", r.text
        assert r.json()["balance"] == before
        measure("query with Kafka down", took)

        ready = check(requests.get(limited.url + "/readyz", timeout=10), "/readyz", "get")
        assert ready.status_code == 503 and "kafka" in ready.json()["down"], ready.text
        assert ready.json()["checks"]["kafka"]["error"]
        assert requests.get(limited.url + "/healthz", timeout=10).status_code == 200
    finally:
        lib("kafka_up")
    started = time.monotonic()

    # Back without a restart of ours: the first success, then /readyz.
    deadline = started + RECOVERY_S
    while True:
        r = client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 1})
        if r.status_code == 200:
            break
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, f"mutations not served within {RECOVERY_S}s of Kafka's return"
        time.sleep(0.1)
    added += 1
    measure("Kafka back -> first mutation served", time.monotonic() - started)
    measure("Kafka back -> /readyz 200", wait_ready(limited.url) - started)
    assert limited.api.alive() and limited.projector.alive()
    # Nothing answered 503 was written; the success was, and the projection shows it.
    assert wait_current(client, account_id, r.headers["Credits-Position"])["balance"] == before + added


# ---- Redis stopped --------------------------------------------------------------------------------------------

def test_redis_stopped_queries_503_fast_mutations_work_then_catches_up(limited, funded):
    account_id, position = funded
    client = Client(limited.url)
    before = wait_current(client, account_id, position)["balance"]
    try:
        lib("redis_down")

        latencies = []
        for _ in range(5):
            r, took = timed(lambda: client.get("/v1/accounts/balance", accountId=account_id))
            check(r, "/v1/accounts/balance", "get")
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            latencies.append(took)
        measure("query 503 with Redis down (max of 5)", max(latencies))
        assert max(latencies) <= REDIS_TIMEOUT_S * TIMEOUT_SLACK, latencies

        # Mutations never read Redis.
        r, took = timed(lambda: client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 7}))
        check(r, "/v1/accounts/credits/add", "post")
        assert r.status_code == 200 and r.json()["balance"] == before + 7, r.text
        measure("mutation with Redis down", took)
        written = r.headers["Credits-Position"]

        ready = check(requests.get(limited.url + "/readyz", timeout=10), "/readyz", "get")
        assert ready.status_code == 503 and ready.json()["down"] == ["redis"], ready.text
    finally:
        lib("redis_up")
    started = time.monotonic()

    # The projector waited, and catches up with what was written meanwhile.
    assert wait_current(client, account_id, written)["balance"] == before + 7
    measure("Redis back -> query current again", time.monotonic() - started)
    wait_ready(limited.url)
    assert limited.api.alive() and limited.projector.alive()
    # Away is not lost: Redis came back with its append-only file, and the view with it (no rebuild).
    metrics = requests.get(limited.projector_metrics_url, timeout=10).text
    assert re.search(r"^credits_projector_view_losses_total 0(\.0+)?$", metrics, re.M), metrics
