"""A record in the log that no fold can apply costs its own account, never the service (README invariant 5;
docs/operations.md, "Quarantined accounts"). Records are produced with kcat, as an operator or a buggy producer
would, into this module's own topics; then the API must keep starting and serving every other account, answer
423 account_blocked for the poisoned one, and take it back once an `admin` key voids the record, with the
writer, the projector, verify and a rebuild all agreeing on the balances without the record.

Redis databases 3 (the view) and 4 (the rebuild) are this module's own.
"""
import json
import subprocess
import sys
import uuid

from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import BROKERS, BUILD, REDIS_DBS, Client, eventually, private_stack, read_topic
from test_contract import check_voided

VIEW_DB, REBUILD_DB = REDIS_DBS["test_quarantine"]
ADMIN = BUILD / "admin" / "credits-admin"
PROJECTOR = BUILD / "projector" / "credits-projector"
TOTALS = Path(__file__).resolve().parents[2] / "examples" / "consumers" / "python" / "totals.py"


def metric(url, name):
    import requests
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def produce(topic, partition, key, value):
    """One record written by a third-party client, outside any of our transactions."""
    p = Producer({"bootstrap.servers": BROKERS})
    p.produce(topic, value=value, key=key, partition=partition)
    assert p.flush(30) == 0


@pytest.fixture()
def stack():
    """A stack on topics of its own for each test: the records a test quarantines stay in its log for good, and one
    it leaves unvoided (the unkeyed record) would fail the next test's verify (no test depends on the order)."""
    s = private_stack("quarantine", (VIEW_DB, REBUILD_DB))
    s.start()
    env = {"CREDITS_KAFKA_BROKERS": BROKERS, "CREDITS_KEYS_TOPIC": s.topics["keys"],
           "CREDITS_ADMIN_TRANSACTIONAL_ID": "credits-test-admin-quarantine", "ASAN_OPTIONS": "detect_leaks=0"}
    done = subprocess.run([str(ADMIN), "keys", "create", "--tenant", "tenant_a", "--scope", "admin"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    s.admin_key = json.loads(done.stdout)["apiKey"]
    yield s
    s.api.stop()
    s.projector.stop()


def open_account(client, amount):
    r = client.post("/v1/accounts/create", {"name": "Q", "externalId": f"q_{uuid.uuid4().hex[:10]}"})
    assert r.status_code == 200, r.text
    account = r.json()["account"]["id"]
    assert client.post("/v1/accounts/credits/add", {"accountId": account, "amount": amount}).status_code == 200
    return account


def last_event(stack, account):
    return read_topic(stack.topics["ledger"], key=account)[-1]


def restart_api(stack):
    stack.api.stop()
    stack.api.start()
    stack.wait_healthy(also_alive=[stack.projector])


def projector(stack, *args):
    env = dict(stack.env)
    return subprocess.run([str(PROJECTOR), *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_record_that_breaks_the_fold_blocks_only_its_account_until_voided(stack):
    client = Client(stack.url)
    victim, bystander = open_account(client, 1000), open_account(client, 1000)
    assert client.post("/v1/accounts/credits/deduct", {"accountId": victim, "amount": 100}).status_code == 200
    good = last_event(stack, victim)
    bad = dict(good, eventId=str(uuid.uuid4()), idempotencyKey="", requestId="kcat")
    bad["payload"] = dict(good["payload"], transactionId="txn_bad", amount=50, balanceAfter=12345)
    bad["payload"].pop("draws")  # as written before grants: only its balanceAfter breaks the fold
    bad.pop("_partition"), bad.pop("_offset")
    produce(stack.topics["ledger"], good["_partition"], victim, json.dumps(bad))

    restart_api(stack)  # before: "invariant violated ... balanceAfter disagrees with the fold", on every start
    refused = client.post("/v1/accounts/credits/deduct", {"accountId": victim, "amount": 1})
    assert refused.status_code == 423, refused.text
    error = refused.json()["error"]
    assert error["code"] == "account_blocked"
    assert error["details"]["eventId"] == bad["eventId"]
    assert "balanceAfter" in error["details"]["reason"]
    assert client.post("/v1/accounts/credits/deduct", {"accountId": bystander, "amount": 1}).status_code == 200
    assert metric(stack.url, "credits_api_quarantined_accounts") == 1

    def blocked_in_view():
        b = client.get("/v1/accounts/balance", accountId=victim).json()
        assert b.get("blocked") is True and b["balance"] == 900, b
        assert "CreditsDeducted" in b["blockedReason"]  # in the projector's words
    eventually(blocked_in_view)

    body = {"eventId": bad["eventId"], "reason": "test: a hand-made record"}
    assert client.post("/v1/admin/events/void", body).status_code == 403  # a read-write key
    admin = Client(stack.url, key=stack.admin_key)
    voided = admin.post("/v1/admin/events/void", body)
    assert voided.status_code == 200, voided.text
    assert voided.json()["accountBlocked"] is False
    assert voided.json()["voided"]["accountId"] == victim
    assert admin.post("/v1/admin/events/void", body).status_code == 404  # voided already
    void = last_event(stack, victim)
    assert void["type"] == "EventVoided" and void["payload"]["voidedEventId"] == bad["eventId"]
    assert void["payload"]["reason"] == body["reason"] and void["apiKeyId"].startswith("key_")  # the audit
    check_voided({k: v for k, v in void.items() if not k.startswith("_")})

    deducted = client.post("/v1/accounts/credits/deduct", {"accountId": victim, "amount": 10})
    assert deducted.status_code == 200, deducted.text
    assert deducted.json()["balance"] == 890  # the fold without the bad record
    assert metric(stack.url, "credits_api_quarantined_accounts") == 0

    restart_api(stack)  # the replay reads the bad record and its void: the account stays served
    assert client.post("/v1/accounts/credits/deduct", {"accountId": victim, "amount": 10}).json()["balance"] == 880

    def unblocked_in_view():
        b = client.get("/v1/accounts/balance", accountId=victim).json()
        assert "blocked" not in b and b["balance"] == 880, b
    eventually(unblocked_in_view)
    done = projector(stack, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    # The example consumer sets the record aside too, and drops it at the void.
    out = subprocess.run([sys.executable, TOTALS, "--brokers", BROKERS, "--ledger-topic", stack.topics["ledger"],
                          "--usage-topic", "", "--until-end"], capture_output=True, text=True, timeout=120, check=True)
    totals = json.loads(out.stdout)
    assert totals["accounts"][victim]["balance"] == 880 and victim not in totals["quarantined"], totals
    stack.projector.stop()
    done = projector(stack, "rebuild")
    assert done.returncode == 0, done.stdout + done.stderr
    stack.projector.start()
    done = projector(stack, "verify")
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_undecodable_record_blocks_its_account_and_is_voided_by_its_position(stack):
    client = Client(stack.url)
    victim = open_account(client, 500)
    good = last_event(stack, victim)
    produce(stack.topics["ledger"], good["_partition"], victim, b"{not json")
    produce(stack.topics["ledger"], good["_partition"], None, b"no key, no account")

    restart_api(stack)  # before: skipped with a warning, which silently changes balances
    refused = client.post("/v1/accounts/credits/add", {"accountId": victim, "amount": 1})
    assert refused.status_code == 423, refused.text
    event_id = refused.json()["error"]["details"]["eventId"]
    assert event_id.startswith(stack.topics["ledger"] + ":")  # no eventId to read: its position names it
    assert metric(stack.url, "credits_api_unkeyed_records_skipped_total") >= 1

    env = {"CREDITS_ADMIN_API_URL": stack.url, "CREDITS_ADMIN_API_KEY": stack.admin_key,
           "ASAN_OPTIONS": "detect_leaks=0"}
    done = subprocess.run([str(ADMIN), "events", "void", "--event-id", event_id, "--reason", "garbage"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["voided"]["accountId"] == victim
    again = subprocess.run([str(ADMIN), "events", "void", "--event-id", event_id, "--reason", "garbage"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "event_not_found" in again.stderr
    assert client.post("/v1/accounts/credits/add", {"accountId": victim, "amount": 1}).json()["balance"] == 501
