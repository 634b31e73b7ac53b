"""API keys made with credits-admin: they work without a restart, a revoked key is refused at once and after a
restart (also a CREDITS_API_KEYS key), a read-only key cannot mutate, every event names the key that caused it,
and the key log holds hashes only, valid against docs/events/."""
import hashlib
import json
import subprocess
import time
import uuid

import jsonschema
import pytest
import referencing
import referencing.jsonschema

from conftest import BROKERS, BUILD, KEYS_TOPIC, LEDGER_TOPIC, REPO, Client, read_topic

ADMIN = BUILD / "admin" / "credits-admin"
# How long a committed key change may take to reach the API (the follower polls every 100 ms; Kafka's fetch
# wait is 100 ms): generous for a busy 2-core machine, where it measures well under a second.
APPLY_WAIT_S = 5
COMMANDS = ["/v1/accounts/create", "/v1/accounts/credits/add", "/v1/accounts/credits/deduct",
            "/v1/reservations/create", "/v1/reservations/confirm", "/v1/reservations/cancel", "/v1/usage/record",
            "/v1/transactions/reverse", "/v1/grants/void"]


def admin_for(keys_topic):
    """credits-admin on `keys_topic`: run("create", "--tenant", ...) -> the finished process."""
    def run(*args, check=True):
        env = {"CREDITS_KAFKA_BROKERS": BROKERS, "CREDITS_KEYS_TOPIC": keys_topic,
               "CREDITS_ADMIN_TRANSACTIONAL_ID": "credits-test-admin", "ASAN_OPTIONS": "detect_leaks=0"}
        done = subprocess.run([str(ADMIN), "keys", *args], env=env, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        return done
    return run


admin = admin_for(KEYS_TOPIC)


def create_key(tenant, scope="read-write"):
    return json.loads(admin("create", "--tenant", tenant, "--scope", scope).stdout)


def wait_status(client, status, path="/v1/accounts"):
    """Polls a tenant listing until it answers `status`; returns how long that took."""
    started = time.monotonic()
    while True:
        got = client.get(path).status_code
        if got == status:
            return time.monotonic() - started
        assert time.monotonic() - started < APPLY_WAIT_S, f"still {got}, not {status}, after {APPLY_WAIT_S}s"
        time.sleep(0.02)


def test_a_new_key_works_without_restart_and_its_events_name_it(stack):
    tenant = "sec_" + uuid.uuid4().hex[:8]
    key = create_key(tenant)
    assert key["apiKey"].startswith("ck_live_") and key["keyId"] == "key_" + key["apiKey"][8:24]
    client = Client(stack.url, key["apiKey"])
    took = wait_status(client, 200)
    print(f"\nkey create -> first 200: {took * 1000:.0f} ms")
    account = client.post("/v1/accounts/create", {"name": "K", "externalId": "u1"}).json()["account"]
    assert client.post("/v1/accounts/credits/add", {"accountId": account["id"], "amount": 5}).status_code == 200
    events = read_topic(LEDGER_TOPIC, key=account["id"])
    assert [e["apiKeyId"] for e in events] == [key["keyId"]] * 2
    assert all(e["tenant"] == tenant for e in events)


def test_a_wrong_secret_for_a_real_key_id_is_refused(stack):
    key = create_key("sec_" + uuid.uuid4().hex[:8])
    forged = key["apiKey"][:-1] + ("0" if key["apiKey"][-1] != "0" else "1")
    wait_status(Client(stack.url, key["apiKey"]), 200)
    r = Client(stack.url, forged).get("/v1/accounts")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_read_only_key_reads_but_every_command_is_403_and_writes_nothing(stack):
    tenant = "sec_" + uuid.uuid4().hex[:8]
    writer = Client(stack.url, create_key(tenant)["apiKey"])
    reader = Client(stack.url, create_key(tenant, "read-only")["apiKey"])
    wait_status(writer, 200)
    wait_status(reader, 200)
    account = writer.post("/v1/accounts/create", {"name": "R", "externalId": "u1"}).json()["account"]
    assert writer.post("/v1/accounts/credits/add", {"accountId": account["id"], "amount": 10}).status_code == 200
    before = len(read_topic(LEDGER_TOPIC, key=account["id"]))
    body = {"accountId": account["id"], "name": "X", "externalId": "u2", "amount": 1, "reservationId": "rsv_x",
            "transactionId": "txn_x", "actualAmount": 1, "context": "customer", "modelId": "m", "usageType": "text"}
    for path in COMMANDS:
        r = reader.post(path, body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    assert reader.get("/v1/accounts/balance", accountId=account["id"]).json()["balance"] == 10
    assert len(read_topic(LEDGER_TOPIC, key=account["id"])) == before
    assert reader.get("/v1/accounts/balance", externalId="u2").status_code == 404


def test_revoked_keys_are_refused_at_once_and_after_a_restart(stack):
    tenant = "sec_" + uuid.uuid4().hex[:8]
    keep, gone = create_key(tenant), create_key(tenant, "read-only")
    # A CREDITS_API_KEYS key, revoked by its id: the log keeps it refused although the variable still names it.
    bootstrap_key = "ck_bootstrap_" + uuid.uuid4().hex
    bootstrap_id = "key_" + hashlib.sha256(bootstrap_key.encode()).hexdigest()[:16]
    stack.env["CREDITS_API_KEYS"] += f",{tenant}:{bootstrap_key}"
    stack.restart()
    keep_c, gone_c, boot_c = (Client(stack.url, k) for k in (keep["apiKey"], gone["apiKey"], bootstrap_key))
    for c in (keep_c, gone_c, boot_c):
        assert c.get("/v1/accounts").status_code == 200

    # Another tenant cannot revoke them, and a bootstrap id needs --bootstrap.
    other = admin("revoke", "--tenant", "sec_other", "--key", gone["keyId"], check=False)
    assert other.returncode == 1 and "not a key of tenant" in other.stderr
    assert admin("revoke", "--tenant", tenant, "--key", bootstrap_id, check=False).returncode == 1

    admin("revoke", "--tenant", tenant, "--key", gone["keyId"])
    took = wait_status(gone_c, 401)
    admin("revoke", "--tenant", tenant, "--key", bootstrap_id, "--bootstrap")
    took_bootstrap = wait_status(boot_c, 401)
    print(f"\nrevoke -> first 401: {took * 1000:.0f} ms (bootstrap key {took_bootstrap * 1000:.0f} ms)")
    assert keep_c.get("/v1/accounts").status_code == 200
    again = admin("revoke", "--tenant", tenant, "--key", gone["keyId"], check=False)
    assert again.returncode == 1 and "revoked already" in again.stderr

    stack.restart()
    for c, status in ((keep_c, 200), (gone_c, 401), (boot_c, 401)):
        r = c.get("/v1/accounts")
        assert r.status_code == status, r.text
    listed = {k["keyId"]: k for k in json.loads(admin("list", "--tenant", tenant).stdout)["keys"]}
    assert listed[keep["keyId"]]["revokedAt"] is None and listed[gone["keyId"]]["revokedAt"] is not None
    assert listed[gone["keyId"]]["scope"] == "read-only" and listed[bootstrap_id]["source"] == "bootstrap"
    assert keep["apiKey"] not in json.dumps(listed) and keep["apiKey"][24:] not in json.dumps(listed)


def test_the_key_log_holds_hashes_only_and_matches_its_schemas(stack):
    key = create_key("sec_" + uuid.uuid4().hex[:8])
    out = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", KEYS_TOPIC, "-e", "-q", "-X",
                          "isolation.level=read_committed", "-f", "%k\t%h\t%s\n"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert key["apiKey"] not in out and key["apiKey"][25:] not in out
    events_dir = REPO / "docs" / "events"
    schemas = {}
    for p in events_dir.glob("*.schema.json"):
        s = json.loads(p.read_text())
        schemas[s["$id"]] = s
    registry = referencing.Registry().with_resources(
        (uri, referencing.Resource.from_contents(s, default_specification=referencing.jsonschema.DRAFT7))
        for uri, s in schemas.items())
    ours = None
    for line in out.splitlines():
        record_key, headers, value = line.split("\t", 2)
        event = json.loads(value)
        assert record_key == event["keyId"]
        uri = f"https://credits.dev/schemas/events/{event['type']}.v{event['schemaVersion']}.schema.json"
        assert f"ce_dataschema={uri}" in headers
        jsonschema.Draft7Validator(schemas[uri], registry=registry).validate(event)
        if event["keyId"] == key["keyId"]:
            ours = event
    assert ours and ours["payload"]["secretHash"] == hashlib.sha256(key["apiKey"].encode()).hexdigest()


@pytest.mark.parametrize("args", [["create"], ["create", "--tenant", "t", "--scope", "owner"],
                                  ["revoke", "--tenant", "t", "--key", "ck_live_x"], ["delete"]])
def test_admin_refuses_bad_arguments_with_usage(args):
    done = admin(*args, check=False)
    assert done.returncode == 2 and "usage: credits-admin" in done.stderr
