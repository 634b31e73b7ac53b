"""Write-side snapshots: start-up from a snapshot plus the tail gives the same state as a full replay, and a
corrupt snapshot is detected and ignored.

Neither restart touches the Redis view, so every check here asks the restored writer itself: a deduction of one
more than `available` (the fold of the log) must be refused with that `available`, and holds made before the
restart must still be confirmable after it.
"""
import json
import subprocess
import time
import uuid

import requests

from conftest import BROKERS, LEDGER_TOPIC, SNAPSHOT_INTERVAL_EVENTS, SNAPSHOT_TOPIC, Client, fold_balance, read_topic


def startup(stack):
    return requests.get(stack.url + "/healthz", timeout=5).json()["startup"]


def open_accounts(client, prefix, count, credits=100):
    ids = []
    for i in range(count):
        r = client.post("/v1/accounts/create", {"name": "S", "externalId": f"{prefix}_{i}"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["account"]["id"])
        r = client.post("/v1/accounts/credits/add", {"accountId": ids[-1], "amount": credits})
        assert r.status_code == 200, r.text
    return ids


def hold(client, account_id, amount):
    r = client.post("/v1/reservations/create", {"accountId": account_id, "amount": amount})
    assert r.status_code == 200, r.text
    return r.json()["reservation"]["id"]


def make_traffic(client, ids, rounds=None):
    """Enough commands (with idempotency keys) to cross the snapshot interval more than once. Returns the number
    of events written and the keyed commands with their answers."""
    rounds = rounds or SNAPSHOT_INTERVAL_EVENTS // len(ids) + 5
    events, keyed = 0, []
    for r in range(rounds):
        for account_id in ids:
            key = {"Idempotency-Key": uuid.uuid4().hex}
            body = {"accountId": account_id, "amount": 10 + r}
            res = client.post("/v1/accounts/credits/add", body, headers=key)
            assert res.status_code == 200, res.text
            keyed.append((key, body, res.json()))
            events += 1
        rsv = hold(client, ids[r % len(ids)], 5)
        res = client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 3})
        assert res.status_code == 200, res.text
        events += 2
    return events, keyed


def available_in_log(ids):
    """Each account's `available`, folded from the log read with kcat (independently of the C++ code)."""
    events = read_topic(LEDGER_TOPIC)
    result = {}
    for a in ids:
        balance, reserved = fold_balance([e for e in events if e["accountId"] == a])
        result[a] = balance - reserved
    return result


def assert_writer_holds_the_log(client, ids):
    """The writer's own state equals the fold of the log, probed without writing: one more than `available`
    is refused with details.available equal to the fold's."""
    for a, available in available_in_log(ids).items():
        probe = client.post("/v1/accounts/credits/deduct", {"accountId": a, "amount": available + 1})
        assert probe.status_code == 402, (a, available, probe.status_code, probe.text)
        assert probe.json()["error"]["details"] == {"needed": available + 1, "available": available}, (a, probe.text)


def confirm(client, reservation_id, amount):
    r = client.post("/v1/reservations/confirm", {"reservationId": reservation_id, "actualAmount": amount})
    assert r.status_code == 200, (reservation_id, r.status_code, r.text)


def test_restart_from_a_snapshot_equals_a_full_replay(stack, client, external_id):
    ids = open_accounts(client, external_id, 4)
    # Made before the traffic, so that the snapshot the restart loads holds them (checked below), not the tail.
    holds = {a: (hold(client, a, 7), hold(client, a, 11)) for a in ids}
    events_after_holds, keyed = make_traffic(client, ids)

    stack.restart()
    client = Client(stack.url)
    with_snapshot = startup(stack)
    assert with_snapshot["fromSnapshot"] is True, with_snapshot
    assert with_snapshot["eventsReplayed"] < events_after_holds, (with_snapshot, events_after_holds)
    assert_writer_holds_the_log(client, ids)
    for a in ids:
        confirm(client, holds[a][0], 5)
    assert_writer_holds_the_log(client, ids)
    key, body, first = keyed[0]  # an idempotency key from the snapshot, not the tail
    retry = client.post("/v1/accounts/credits/add", body, headers=key)
    assert retry.status_code == 200 and retry.json() == first and retry.headers["Idempotent-Replayed"] == "true"

    stack.api.env["CREDITS_SNAPSHOT_INTERVAL_EVENTS"] = "0"  # no snapshots: the whole log
    try:
        stack.restart()
        client = Client(stack.url)
        full = startup(stack)
        assert full["fromSnapshot"] is False and full["eventsReplayed"] > with_snapshot["eventsReplayed"], full
        assert_writer_holds_the_log(client, ids)
        for a in ids:
            confirm(client, holds[a][1], 11)
        assert_writer_holds_the_log(client, ids)
        retry = client.post("/v1/accounts/credits/add", body, headers=key)
        assert retry.status_code == 200 and retry.json() == first
    finally:
        stack.api.env["CREDITS_SNAPSHOT_INTERVAL_EVENTS"] = str(SNAPSHOT_INTERVAL_EVENTS)
        stack.restart()


def test_a_corrupt_snapshot_is_detected_and_ignored(stack, client, external_id):
    ids = open_accounts(client, external_id, 2)
    holds = {a: hold(client, a, 9) for a in ids}
    make_traffic(client, ids)
    # A newer "snapshot" whose checksum does not match its bytes, written with a real client.
    newest = max(int(time.time() * 1000), startup(stack)["snapshotId"])
    # Newer than the snapshot in use (and below 2^53).
    header = {"snapshotId": newest + 10**9, "chunk": 0, "chunks": 1, "sha256": "0" * 64}
    value = json.dumps(header) + "\n" + '{"format":"credits-writer-snapshot","version":1}'
    # -D: the chunk holds a newline, which kcat would otherwise take as the end of the message.
    subprocess.run(["kcat", "-P", "-b", BROKERS, "-t", SNAPSHOT_TOPIC, "-k", "chunk-0", "-D", "@@end@@"], input=value, text=True,
                   check=True, timeout=30)
    log_from = stack.api.log_path.stat().st_size
    stack.restart()
    client = Client(stack.url)
    with stack.api.log_path.open("rb") as f:
        f.seek(log_from)
        assert b"fails its checksum" in f.read()

    # The old accounts are the writer's again, at the log's balances, and take new commands.
    assert_writer_holds_the_log(client, ids)
    for a in ids:
        assert client.post("/v1/accounts/credits/add", {"accountId": a, "amount": 13}).status_code == 200
        confirm(client, holds[a], 9)
    assert_writer_holds_the_log(client, ids)

    # The writer numbers its next snapshot above the bad one, so a good snapshot wins again.
    make_traffic(client, ids)
    stack.restart()
    client = Client(stack.url)
    assert startup(stack)["fromSnapshot"] is True
    assert_writer_holds_the_log(client, ids)
