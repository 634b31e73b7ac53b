"""Idempotency, concurrency on one account, expiry, and restarts of both processes."""
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import requests

from conftest import LEDGER_TOPIC, Client, eventually, fold_balance, kafka_paused, log_records, read_topic, redis_hash

EXPIRY_WAIT_S = 10
IN_FLIGHT_PAUSE_S = 3  # the longest the broker is stopped; below the API's 5 s append timeout


def open_account(client, external_id, credits):
    account = client.post("/v1/accounts/create", {"name": "R", "externalId": external_id}).json()["account"]
    if credits:
        assert client.post("/v1/accounts/credits/add", {"accountId": account["id"], "amount": credits}).status_code == 200
    return account["id"]


def test_idempotency_key_retry_returns_the_first_result_once(client, external_id):
    account_id = open_account(client, external_id, 0)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 50}, headers=key)
    again = client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 50}, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Credits-Position"] == first.headers["Credits-Position"]
    other = client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 51}, headers=key)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    added = [e for e in read_topic(LEDGER_TOPIC, key=account_id) if e["type"] == "CreditsAdded"]
    assert len(added) == 1 and added[0]["idempotencyKey"] == key["Idempotency-Key"]
    assert client.get("/v1/accounts/balance", accountId=account_id).json()["balance"] == 50


def test_parallel_reservations_never_overdraw(stack, client, external_id):
    account_id = open_account(client, external_id, 1000)
    attempts, amount = 40, 100  # the balance covers exactly 10 of them

    def reserve(_):
        c = Client(stack.url)
        return c.post("/v1/reservations/create", {"accountId": account_id, "amount": amount}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(reserve, range(attempts)))
    assert codes.count(200) == 10 and codes.count(402) == attempts - 10, codes
    balance = client.get("/v1/accounts/balance", accountId=account_id).json()
    assert (balance["balance"], balance["reserved"], balance["available"]) == (1000, 1000, 0)
    assert fold_balance(read_topic(LEDGER_TOPIC, key=account_id)) == (1000, 1000)


def test_unconfirmed_reservation_expires_and_releases(client, external_id):
    account_id = open_account(client, external_id, 100)
    rsv = client.post("/v1/reservations/create", {"accountId": account_id, "amount": 60, "expiresInSeconds": 1}).json()
    assert rsv["reservation"]["status"] == "pending"
    time.sleep(1.1)
    r = client.post("/v1/reservations/confirm", {"reservationId": rsv["reservation"]["id"], "actualAmount": 10})
    assert r.status_code == 409 and r.json()["error"]["code"] == "reservation_expired"
    deadline = time.monotonic() + EXPIRY_WAIT_S
    while time.monotonic() < deadline:
        if client.get("/v1/accounts/balance", accountId=account_id).json()["reserved"] == 0:
            break
        time.sleep(0.1)
    assert client.get("/v1/accounts/balance", accountId=account_id).json()["available"] == 100
    types = [e["type"] for e in read_topic(LEDGER_TOPIC, key=account_id)]
    assert types[-1] == "ReservationExpired"


def test_restart_keeps_state_and_idempotency(stack, client, external_id):
    account_id = open_account(client, external_id, 500)
    rsv = client.post("/v1/reservations/create", {"accountId": account_id, "amount": 200}).json()["reservation"]["id"]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 30}, headers=key)
    assert first.status_code == 200
    before = client.get("/v1/accounts/balance", accountId=account_id).json()

    stack.restart()
    client = Client(stack.url)

    assert client.get("/v1/accounts/balance", accountId=account_id).json() == before
    retry = client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 30}, headers=key)
    assert retry.status_code == 200 and retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    # New commands continue from the same state: the hold survived, and it can still be confirmed.
    r = client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 150})
    assert r.status_code == 200, r.text
    after = client.get("/v1/accounts/balance", accountId=account_id).json()
    assert (after["balance"], after["reserved"]) == (500 - 30 - 150, 0)
    events = read_topic(LEDGER_TOPIC, key=account_id)
    assert sum(e["type"] == "CreditsDeducted" for e in events) == 1
    assert fold_balance(events) == (320, 0)


def test_a_full_key_store_forgets_the_oldest_keys_and_says_how_far_back_it_holds(stack, external_id):
    """With room for 3 keys, the fourth forgets the first: a retry of the first is written again (the cost of a
    full store, which the window held announces in /readyz, the metric and the log), while the newest still
    replays. With no answer kept whole, each retry reads its first event back from the log and is checked
    against it: the same body replays, another body is refused."""
    added = {"CREDITS_IDEMPOTENCY_KEYS_MAX": "3", "CREDITS_IDEMPOTENCY_RESPONSES_CACHED_MAX": "0"}
    saved = {k: stack.api.env.get(k) for k in added}
    log_from = stack.api.log_path.stat().st_size
    stack.api.env.update(added)
    try:
        stack.restart()
        client = Client(stack.url)
        account_id = open_account(client, external_id, 0)
        keys = [{"Idempotency-Key": uuid.uuid4().hex} for _ in range(4)]
        firsts = []
        for i, key in enumerate(keys):
            firsts.append(client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": i + 1}, headers=key))
            assert firsts[-1].status_code == 200, firsts[-1].text

        retry = client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 4}, headers=keys[3])
        assert retry.status_code == 200 and retry.json() == firsts[3].json(), retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        other = client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 5}, headers=keys[3])
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused", other.text

        again = client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 1}, headers=keys[0])
        assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers, again.text
        assert again.json()["transactionId"] != firsts[0].json()["transactionId"]
        added_events = [e for e in read_topic(LEDGER_TOPIC, key=account_id) if e["type"] == "CreditsAdded"]
        assert [e["payload"]["amount"] for e in added_events] == [1, 2, 3, 4, 1]

        ready = requests.get(stack.url + "/readyz", timeout=10).json()["idempotency"]
        assert ready["keys"] == ready["keysMax"] == 3, ready
        assert 0 <= ready["windowSeconds"] < ready["configuredWindowSeconds"] == 86400, ready
        metrics = requests.get(stack.url + "/metrics", timeout=10).text
        window = float(re.search(r"^credits_idempotency_window_seconds (\S+)$", metrics, re.M).group(1))
        assert 0 <= window < 86400, window
        lines = log_records(stack.api.log_path, log_from)
        short = [line for line in lines if "idempotency window held is" in line["msg"] and line["level"] == "warn"]
        assert short and short[-1]["keysMax"] == 3 and short[-1]["windowHeldS"] < 86400, short
    finally:
        for k, v in saved.items():
            if v is None:
                stack.api.env.pop(k, None)
            else:
                stack.api.env[k] = v
        stack.restart()


def test_concurrent_requests_with_one_key_write_once(stack, client, external_id):
    account_id = open_account(client, external_id, 0)
    key = {"Idempotency-Key": uuid.uuid4().hex}

    def add(_):
        return Client(stack.url).post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 9}, headers=key)

    def in_flight(r):
        return r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_in_flight"

    with ThreadPoolExecutor(max_workers=12) as pool:
        # The first attempt to reach the writer stalls in its append while the broker is stopped, so the others
        # must meet it in flight; the broker continues once they are all answered (or after IN_FLIGHT_PAUSE_S).
        with kafka_paused():
            futures = [pool.submit(add, i) for i in range(24)]
            deadline = time.monotonic() + IN_FLIGHT_PAUSE_S
            while sum(f.done() for f in futures) < len(futures) - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        answers = [f.result() for f in futures]
    codes = [r.status_code for r in answers]
    assert any(in_flight(r) for r in answers), f"no attempt met the stalled first one in flight: {codes}"
    assert set(codes) <= {200, 409}, codes
    assert all(in_flight(r) for r in answers if r.status_code == 409), [r.text for r in answers]
    ok = [r.json() for r in answers if r.status_code == 200]
    assert ok and all(body == ok[0] for body in ok), "every success is the same first answer"
    added = [e for e in read_topic(LEDGER_TOPIC, key=account_id) if e["type"] == "CreditsAdded"]
    assert len(added) == 1
    assert client.get("/v1/accounts/balance", accountId=account_id).json()["balance"] == 9


LAG_REPORT_WAIT_S = 30  # the projector reports every 10 s


def fresh_lag_report(since):
    """For eventually(): the projector's lag record, once it was written at or after `since` (a time.time())."""
    report = redis_hash("credits:projector")
    assert "reportedAt" in report and "lagOffsets" in report, report
    assert report["reportedAt"].endswith("Z"), report
    reported_at = datetime.fromisoformat(report["reportedAt"][:-1] + "+00:00").timestamp()
    assert reported_at >= since, f"the last report is {since - reported_at:.1f} s older than the test: {report}"
    return report


def test_projector_reports_its_lag(client, external_id):
    # The projector reports at its start and then every 10 s: a report written after the test began is a new one,
    # so a projector that stopped reporting (its start's report left behind) fails here.
    started = time.time() - 0.001  # reportedAt has millisecond resolution
    open_account(client, external_id, 5)
    report = eventually(lambda: fresh_lag_report(started), timeout_s=LAG_REPORT_WAIT_S, poll_s=0.5)
    assert int(report["lagOffsets"]) >= 0, report
