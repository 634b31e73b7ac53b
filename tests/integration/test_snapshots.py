"""Write-side snapshots: start-up from a snapshot plus the tail gives the same state as a full replay, and a
corrupt snapshot is detected and ignored."""
import json
import subprocess
import time
import uuid

import requests

from conftest import BROKERS, SNAPSHOT_INTERVAL_EVENTS, SNAPSHOT_TOPIC, Client


def startup(stack):
    return requests.get(stack.url + "/healthz", timeout=5).json()["startup"]


def make_traffic(client, prefix, accounts=4, rounds=None):
    """Enough commands (with idempotency keys) to cross the snapshot interval more than once."""
    rounds = rounds or SNAPSHOT_INTERVAL_EVENTS // accounts + 5
    ids, keyed = [], []
    for i in range(accounts):
        ids.append(client.post("/v1/accounts/create", {"name": "S", "externalId": f"{prefix}_{i}"}).json()["account"]["id"])
    for r in range(rounds):
        for account_id in ids:
            key = {"Idempotency-Key": uuid.uuid4().hex}
            body = {"accountId": account_id, "amount": 10 + r}
            res = client.post("/v1/accounts/credits/add", body, headers=key)
            assert res.status_code == 200, res.text
            keyed.append((key, body, res.json()))
        rsv = client.post("/v1/reservations/create", {"accountId": ids[r % accounts], "amount": 5}).json()
        client.post("/v1/reservations/confirm", {"reservationId": rsv["reservation"]["id"], "actualAmount": 3})
    return ids, keyed


def balances(client, ids):
    return {a: client.get("/v1/accounts/balance", accountId=a).json() for a in ids}


def test_restart_from_a_snapshot_equals_a_full_replay(stack, client, external_id):
    ids, keyed = make_traffic(client, external_id)
    before = balances(client, ids)

    stack.restart()
    client = Client(stack.url)
    with_snapshot = startup(stack)
    assert with_snapshot["fromSnapshot"] is True, with_snapshot
    assert balances(client, ids) == before
    key, body, first = keyed[0]  # an idempotency key from the snapshot, not the tail
    retry = client.post("/v1/accounts/credits/add", body, headers=key)
    assert retry.status_code == 200 and retry.json() == first and retry.headers["Idempotent-Replayed"] == "true"

    stack.api.env["CREDITS_SNAPSHOT_INTERVAL_EVENTS"] = "0"  # no snapshots: the whole log
    try:
        stack.restart()
        client = Client(stack.url)
        full = startup(stack)
        assert full["fromSnapshot"] is False and full["eventsReplayed"] > with_snapshot["eventsReplayed"]
        assert balances(client, ids) == before
        retry = client.post("/v1/accounts/credits/add", body, headers=key)
        assert retry.status_code == 200 and retry.json() == first
    finally:
        stack.api.env["CREDITS_SNAPSHOT_INTERVAL_EVENTS"] = str(SNAPSHOT_INTERVAL_EVENTS)
        stack.restart()


def test_a_corrupt_snapshot_is_detected_and_ignored(stack, client, external_id):
    ids, _ = make_traffic(client, external_id, accounts=2)
    before = balances(client, ids)
    # A newer "snapshot" whose checksum does not match its bytes, written with a real client.
    newest = max(int(time.time() * 1000), startup(stack)["snapshotId"])
    # Newer than the snapshot in use (and below 2^53).
    header = {"snapshotId": newest + 10**9, "chunk": 0, "chunks": 1, "sha256": "0" * 64}
    value = json.dumps(header) + "\n" + '{"format":"credits-writer-snapshot","version":1}'
    # -D: the chunk holds a newline, which kcat would otherwise take as the end of the message.
    subprocess.run(["kcat", "-P", "-b", BROKERS, "-t", SNAPSHOT_TOPIC, "-k", "chunk-0", "-D", "@@end@@"], input=value, text=True,
                   check=True, timeout=30)
    stack.restart()
    client = Client(stack.url)
    assert balances(client, ids) == before
    log = stack.api.log_path.read_text(errors="replace")
    assert "fails its checksum" in log
    # The writer numbers its next snapshot above the bad one, so a good snapshot wins again.
    make_traffic(client, external_id + "_after", accounts=2)
    stack.restart()
    assert startup(stack)["fromSnapshot"] is True
