"""Month end: 100,000 grants that expire at the same second, on a stack of its own. Every unused remainder must
expire, each exactly once, and the test reports the lag: how long after that second the last expiry was
written (its event's occurredAt, the writer's clock when it decided the batch).

The grants are made over HTTP by many clients at once. So that they all can share one expiry second and still be
in the future when made, the test first times the accounts' creation and picks the second from that pace."""
import calendar
import json
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import subprocess

import pytest

from conftest import BROKERS, LOGS, REDIS_DBS, Client, private_stack, read_topic

GRANTS = 100_000
ACCOUNTS = 1_000  # 100 grants each, over every partition
WORKERS = 32
SPARE = 1.5  # the expiry second is this many times the estimated creation time away, plus MARGIN_S
MARGIN_S = 20
EXPIRED_WAIT_S = 300
REPORT = LOGS / "grants-month-end.json"


@pytest.fixture(scope="module")
def month_end():
    s = private_stack("month-end", REDIS_DBS["test_grants month end"], partitions=6)
    s.start()
    yield s
    s.stop()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"


def parse_ms(text):
    whole, frac = text.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(frac[:3])


def expiries_written(topic):
    """How many grant expiries the topic holds: counted in kcat's raw output, which is cheap enough to poll (the
    JSON of 200,000 events is parsed once, at the end)."""
    out = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", topic, "-e", "-q", "-X", "isolation.level=read_committed",
                          "-f", "%s\n"], capture_output=True, timeout=120, check=True).stdout
    return out.count(b'"reason":"grant_expired"')


def in_parallel(fn, items):
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(fn, items))


def test_100000_grants_expiring_in_the_same_second(month_end):
    clients = {}

    def client():
        me = threading.get_ident()
        if me not in clients:
            clients[me] = Client(month_end.url)
        return clients[me]

    def create(i):
        r = client().post("/v1/accounts/create", {"name": "M", "externalId": f"month_end_{uuid.uuid4().hex[:8]}_{i}"})
        assert r.status_code == 200, r.text
        return r.json()["account"]["id"]

    started = time.time()
    accounts = in_parallel(create, range(ACCOUNTS))
    per_request_s = (time.time() - started) / ACCOUNTS
    expires = math.ceil(time.time() + GRANTS * per_request_s * SPARE + MARGIN_S)

    def grant(i):
        r = client().post("/v1/accounts/credits/add", {"accountId": accounts[i % ACCOUNTS], "amount": 1 + i % 7,
                                                       "expiresAt": iso(expires), "category": "promotional"})
        assert r.status_code == 200, f"grant {i} at {time.time():.1f}, expiry second {expires}: {r.text}"
        return r.json()["grantId"]

    made = time.time()
    grants = in_parallel(grant, range(GRANTS))
    made_s = time.time() - made
    assert len(set(grants)) == GRANTS
    assert time.time() < expires, "the grants took longer than the estimate: the expiry second had passed"

    time.sleep(max(0.0, expires - time.time()))
    deadline = time.time() + EXPIRED_WAIT_S
    while (count := expiries_written(month_end.topics["ledger"])) < GRANTS:
        assert time.time() < deadline, f"{count} of {GRANTS} grants expired {EXPIRED_WAIT_S}s after the second"
        time.sleep(2)
    expired = [e for e in read_topic(month_end.topics["ledger"], timeout_s=120)
               if e["type"] == "CreditsDeducted" and e["payload"].get("reason") == "grant_expired"]

    assert sorted(e["payload"]["grantId"] for e in expired) == sorted(grants), "each grant expired exactly once"
    assert all(e["payload"]["amount"] == e["payload"]["draws"][0]["amount"] for e in expired)
    times = sorted(parse_ms(e["occurredAt"]) for e in expired)
    assert times[0] >= expires * 1000, "nothing expired before its second"
    lag_ms = times[-1] - expires * 1000
    report = {"grants": GRANTS, "accounts": ACCOUNTS, "partitions": 6, "grantsMadePerSecond": round(GRANTS / made_s),
              "firstExpiryAfterMs": times[0] - expires * 1000, "lastExpiryAfterMs": lag_ms,
              "expiriesPerSecond": round(GRANTS / max(0.001, (times[-1] - times[0]) / 1000))}
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"month end: {json.dumps(report)}")

    # Every account is left with nothing, in the writer's own state.
    probe = Client(month_end.url)
    for a in accounts[:50]:
        r = probe.post("/v1/accounts/credits/deduct", {"accountId": a, "amount": 1})
        assert r.status_code == 402 and r.json()["error"]["details"]["available"] == 0, r.text
