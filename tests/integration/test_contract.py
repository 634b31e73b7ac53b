"""The event contract, read the way downstream teams read it: third-party Kafka clients (confluent-kafka, kcat)
on the topics after the guide's flow, every event checked against docs/events/ and docs/asyncapi.yaml, the
example consumers run as scripts, and the schema documents checked by real validators.

The stack here is a second one with topics, Redis database and transactional id of its own, and a BalanceLow
threshold, so every event type appears and the consumers see exactly this module's events.
"""
import json
import re
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import jsonschema
import pytest
import referencing
import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import NewTopic

from conftest import BROKERS, REDIS_DBS, REPO, Client, Stack, create_topics, flush_dbs

EVENTS_DIR = REPO / "docs" / "events"
ASYNCAPI = REPO / "docs" / "asyncapi.yaml"
EXAMPLES = REPO / "examples" / "consumers" / "python"
ASYNCAPI_SPECS = "@asyncapi/specs@6.11.1"  # the official AsyncAPI JSON Schemas, from the npm registry
SPECS_CACHE = REPO / ".data" / "cache"
RUN = uuid.uuid4().hex[:8]
LEDGER = f"credits-test-contract-{RUN}.ledger"
USAGE = f"credits-test-contract-{RUN}.usage"
PARTITIONS = 3
THRESHOLD = 100
REDIS_DB, REDIS_REBUILD_DB = REDIS_DBS["test_contract"]
CONSUMER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def contract_stack():
    create_topics([NewTopic(t, PARTITIONS, 1, config={"retention.ms": "-1"}) for t in (LEDGER, USAGE, LEDGER + ".dlq")])
    flush_dbs((REDIS_DB, REDIS_REBUILD_DB))
    stack = Stack("-contract", {
        "CREDITS_LEDGER_TOPIC": LEDGER,
        "CREDITS_USAGE_TOPIC": USAGE,
        "CREDITS_SNAPSHOT_INTERVAL_EVENTS": "0",
        "CREDITS_REDIS_DB": str(REDIS_DB),
        "CREDITS_REDIS_REBUILD_DB": str(REDIS_REBUILD_DB),
        "CREDITS_BALANCE_LOW_THRESHOLD": str(THRESHOLD),
        "CREDITS_MODEL_PRICES": "gpt-4o=2.5/10/1.25",  # credits per 1K input/output/cached tokens
    })
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def flow(contract_stack):
    """The guide's six steps, then the rest of the surface: a deduction, a refund, a cancel, an expiry and two
    crossings of the low-balance threshold (a hold and a deduction). Returns the accounts and a time mark
    between the first and the second half, for 'start from a time'."""
    c = Client(contract_stack.url)
    alice = "user_" + uuid.uuid4().hex[:12]
    account = ok(c.post("/v1/accounts/create", {"name": "Alice", "externalId": alice, "email": "alice@example.com"}))
    account_id = account["account"]["id"]
    ok(c.post("/v1/accounts/credits/add", {"externalId": alice, "amount": 1000, "description": "Starter credits",
                                           "metadata": {"source": "onboarding"}}))
    reservation = ok(c.post("/v1/reservations/create", {"externalId": alice, "amount": 500}))["reservation"]
    confirmed = ok(c.post("/v1/reservations/confirm", {"reservationId": reservation["id"], "actualAmount": 320}))
    usage = ok(c.post("/v1/usage/record", {"context": "customer", "transactionId": confirmed["transactionId"],
                                           "accountId": confirmed["accountId"], "modelId": "gpt-4o",
                                           "usageType": "text", "inputTokens": 1000, "outputTokens": 320}))
    assert usage["usage"]["costCredits"] == 6  # 1000 x 2.5/1K + 320 x 10/1K = 5.7, rounded up
    time.sleep(1.2)  # record timestamps have millisecond resolution; leave a clear gap for --since / s@
    mark_ms = int(time.time() * 1000)
    time.sleep(0.2)
    bob = "user_" + uuid.uuid4().hex[:12]
    bob_id = ok(c.post("/v1/accounts/create", {"name": "Bob", "externalId": bob}))["account"]["id"]
    ok(c.post("/v1/accounts/credits/add", {"externalId": bob, "amount": 300}))
    fee = ok(c.post("/v1/accounts/credits/deduct", {"externalId": bob, "amount": 50, "description": "fee"}))
    ok(c.post("/v1/transactions/reverse", {"transactionId": fee["transactionId"], "amount": 20}))  # a partial refund
    held = ok(c.post("/v1/reservations/create", {"externalId": bob, "amount": 200}))["reservation"]  # 270 -> 70: low
    ok(c.post("/v1/reservations/cancel", {"reservationId": held["id"]}))
    ok(c.post("/v1/reservations/create", {"externalId": bob, "amount": 10, "expiresInSeconds": 1}))
    ok(c.post("/v1/accounts/credits/deduct", {"externalId": alice, "amount": 600}))  # 680 -> 80: low
    unpriced = ok(c.post("/v1/usage/record", {"context": "system", "accountId": bob_id, "modelId": "claude",
                                              "inputTokens": 7, "outputTokens": 3, "cachedTokens": 2}))
    assert unpriced["usage"]["costCredits"] is None
    deadline = time.monotonic() + 30
    while ok(c.get("/v1/accounts/balance", externalId=bob))["reserved"] != 0:
        assert time.monotonic() < deadline, "the 1-second reservation did not expire"
        time.sleep(0.2)
    return {"client": c, "accounts": {account_id: alice, bob_id: bob}, "mark_ms": mark_ms}


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def read_records(topics):
    """Every committed record of `topics` with confluent-kafka: (topic, key, headers, event)."""
    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": "contract-test-" + uuid.uuid4().hex,
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(PARTITIONS)])
    remaining, records = {(t, p) for t in topics for p in range(PARTITIONS)}, []
    deadline = time.monotonic() + CONSUMER_TIMEOUT_S
    while remaining:
        assert time.monotonic() < deadline, f"partitions never reached their end: {remaining}"
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            remaining.discard((msg.topic(), msg.partition()))
            continue
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        records.append((msg.topic(), msg.key().decode(), headers, json.loads(msg.value())))
    consumer.close()
    return records


def schema_registry():
    schemas = [json.loads(p.read_text()) for p in sorted(EVENTS_DIR.glob("*.schema.json"))]
    return referencing.Registry().with_resources(
        (s["$id"], referencing.Resource.from_contents(s, default_specification=referencing.jsonschema.DRAFT7))
        for s in schemas), {s["$id"]: s for s in schemas}


def declared(schema, registry, path):
    """The property names a schema declares at `path` (a list of property names), following allOf and $ref."""
    names = set()
    resolver = registry.resolver(base_uri=schema.get("$id", ""))
    stack = [(schema, resolver)]
    while stack:
        s, r = stack.pop()
        if "$ref" in s:
            resolved = r.lookup(s["$ref"])
            stack.append((resolved.contents, resolved.resolver))
            continue
        stack += [(sub, r) for sub in s.get("allOf", [])]
        node = s
        for step in path:
            node = node.get("properties", {}).get(step, {})
        names |= set(node.get("properties", {}))
    return names


def test_every_event_validates_against_its_schema_and_declares_every_field(flow):
    registry, schemas = schema_registry()
    records = read_records([LEDGER, USAGE])
    seen = set()
    for topic, key, headers, event in records:
        uri = headers["ce_dataschema"]
        assert uri in schemas, f"{event['type']}: ce_dataschema {uri} names no schema in docs/events"
        schema = schemas[uri]
        jsonschema.Draft7Validator(schema, registry=registry).validate(event)
        # The schemas are open (consumers ignore unknown fields), so validation alone would not notice a field
        # the code emits but the contract does not declare: check that too.
        assert set(event) <= declared(schema, registry, []), f"undeclared envelope field in {event}"
        assert set(event["payload"]) <= declared(schema, registry, ["payload"]), f"undeclared field in {event}"
        assert schema["x-topic"] == ("ledger" if topic == LEDGER else "usage")
        assert key == event["accountId"]
        seen.add(event["type"])
    # EventVoided needs a record no fold can apply: test_quarantine.py makes one and checks its void here (check_voided).
    assert seen == {s["properties"]["type"]["const"] for s in schemas.values()
                    if "const" in s["properties"]["type"] and s["x-topic"] not in ("keys",)} - {"EventVoided"}, \
        "the flow should produce every event type, so every schema is exercised"


def check_voided(event):
    """An EventVoided event, as read from the log, validates against its schema and declares every field."""
    registry, schemas = schema_registry()
    schema = schemas["https://credits.dev/schemas/events/EventVoided.v1.schema.json"]
    jsonschema.Draft7Validator(schema, registry=registry).validate(event)
    assert set(event) <= declared(schema, registry, []), f"undeclared envelope field in {event}"
    assert set(event["payload"]) <= declared(schema, registry, ["payload"]), f"undeclared field in {event}"


def test_every_record_carries_the_cloudevents_headers(flow):
    asyncapi = yaml.safe_load(ASYNCAPI.read_text())
    doc = referencing.Resource.from_contents(asyncapi, default_specification=referencing.jsonschema.DRAFT7)
    registry = referencing.Registry().with_resource("urn:asyncapi", doc)
    for _, key, headers, event in read_records([LEDGER, USAGE]):
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_id"] == event["eventId"]
        assert headers["ce_type"] == f"dev.credits.{event['type']}.v{event['schemaVersion']}"
        assert headers["ce_source"] == "/credits/command-api"
        assert headers["ce_time"] == event["occurredAt"]
        assert headers["ce_subject"] == headers["ce_partitionkey"] == key == event["accountId"]
        assert headers["content-type"] == "application/json"
        # ... and as the AsyncAPI document describes this message's headers.
        schema = {"$ref": f"urn:asyncapi#/components/messages/{event['type']}/headers"}
        jsonschema.Draft7Validator(schema, registry=registry).validate(headers)


def test_balance_low_follows_its_cause_in_the_same_partition(flow):
    by_partition = {}
    for topic, key, headers, event in read_records([LEDGER]):
        by_partition.setdefault(key, []).append(event)
    lows = [(events[i - 1], e) for events in by_partition.values() for i, e in enumerate(events)
            if e["type"] == "BalanceLow"]
    # One each for the flow's two accounts; test_alerts_... may have added one of its own by now, or not yet.
    assert sorted(low["accountId"] for _, low in lows if low["accountId"] in flow["accounts"]) == sorted(flow["accounts"])
    for cause, low in lows:
        p = low["payload"]
        assert p["causeType"] == cause["type"]
        assert p["causeId"] == cause["payload"].get("transactionId", cause["payload"].get("reservationId"))
        assert p["threshold"] == THRESHOLD and p["available"] < THRESHOLD
        assert p["available"] == p["balance"] - p["reserved"]
        assert low["requestId"] == cause["requestId"] and low["idempotencyKey"] == ""


def test_python_consumer_totals_equal_the_api_balances(flow):
    out = subprocess.run([sys.executable, EXAMPLES / "totals.py", "--brokers", BROKERS, "--ledger-topic", LEDGER,
                          "--usage-topic", USAGE, "--until-end"],
                         capture_output=True, text=True, timeout=CONSUMER_TIMEOUT_S, check=True)
    totals = json.loads(out.stdout)
    assert totals["skipped"] == {}
    assert {a: totals["accounts"][a]["externalId"] for a in flow["accounts"]} == flow["accounts"]
    # Every account the consumer found (the flow's, and test_alerts_...'s if it ran first), as the API sees it.
    for account_id, mine in totals["accounts"].items():
        api = ok(flow["client"].get("/v1/accounts/balance", accountId=account_id))
        assert (mine["balance"], mine["reserved"], mine["available"]) == \
            (api["balance"], api["reserved"], api["available"])
        assert mine["balanceLowSignals"] == 1
    alice = next(a for a in totals["accounts"].values() if a["tokens"].get("gpt-4o"))
    assert alice["tokens"]["gpt-4o"] == {"inputTokens": 1000, "outputTokens": 320, "cachedTokens": 0, "records": 1}
    assert (alice["added"], alice["spent"], alice["balance"]) == (1000, 920, 80)


def test_python_consumer_starts_from_a_time(flow):
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(flow["mark_ms"] / 1000)) + \
        f".{flow['mark_ms'] % 1000:03d}Z"
    out = subprocess.run([sys.executable, EXAMPLES / "totals.py", "--brokers", BROKERS, "--ledger-topic", LEDGER,
                          "--usage-topic", "", "--since", since, "--until-end"],
                         capture_output=True, text=True, timeout=CONSUMER_TIMEOUT_S, check=True)
    accounts = json.loads(out.stdout)["accounts"]
    bob = next(a for a, e in flow["accounts"].items() if accounts.get(a, {}).get("externalId") == e)
    assert accounts[bob]["balance"] == 270  # Bob was created after the mark: all of him is there
    alice = next(a for a in flow["accounts"] if a != bob)
    assert accounts[alice]["externalId"] == ""  # Alice's creation was before it: only her deduction is
    assert accounts[alice]["spent"] == 600


def test_kcat_recipes_from_the_readme(flow):
    def kcat(*args):
        out = subprocess.run(["kcat", "-C", "-b", BROKERS, "-X", "isolation.level=read_committed", "-e", "-q",
                              "-J", *args], capture_output=True, text=True, timeout=CONSUMER_TIMEOUT_S, check=True)
        return [json.loads(line) for line in out.stdout.splitlines()]

    everything = kcat("-t", LEDGER, "-o", "beginning")
    assert len(everything) == len([r for r in read_records([LEDGER])])
    assert all(dict(zip(m["headers"][::2], m["headers"][1::2]))["ce_id"] == json.loads(m["payload"])["eventId"]
               for m in everything)
    since = kcat("-t", LEDGER, "-o", f"s@{flow['mark_ms']}")
    assert 0 < len(since) < len(everything)
    assert all(m["ts"] >= flow["mark_ms"] for m in since)
    assert {json.loads(m["payload"])["type"] for m in since} >= {"AccountCreated", "CreditsDeducted", "BalanceLow"}


def test_alerts_consumer_group_resumes_after_its_committed_offset(flow, contract_stack):
    group = "alerts-" + uuid.uuid4().hex[:8]
    alerts = [sys.executable, EXAMPLES / "alerts.py", "--brokers", BROKERS, "--topic", LEDGER, "--group", group]
    first = subprocess.run(alerts + ["--from-beginning", "--max-events", "2"], capture_output=True, text=True,
                           timeout=CONSUMER_TIMEOUT_S, check=True)
    seen = [json.loads(line) for line in first.stdout.splitlines()]
    assert sorted(a["accountId"] for a in seen) == sorted(flow["accounts"])
    # One more crossing: the group, restarted, gets only the new one. (Carol stays out of `flow`, which the other
    # tests read: none of them depends on whether this one ran before it.)
    c, carol = flow["client"], "user_" + uuid.uuid4().hex[:12]
    ok(c.post("/v1/accounts/create", {"name": "Carol", "externalId": carol}))
    ok(c.post("/v1/accounts/credits/add", {"externalId": carol, "amount": 150}))
    carol_id = ok(c.post("/v1/accounts/credits/deduct", {"externalId": carol, "amount": 100}))["accountId"]
    # --from-beginning matters only for partitions the group has no offset for yet; they hold no old alert.
    again = subprocess.run(alerts + ["--from-beginning", "--max-events", "1"], capture_output=True, text=True,
                           timeout=CONSUMER_TIMEOUT_S, check=True)
    assert [json.loads(line)["accountId"] for line in again.stdout.splitlines()] == [carol_id]


def test_event_schemas_are_valid_draft7(flow):
    for path in sorted(EVENTS_DIR.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#", path
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft7Validator.check_schema({"type": "integr"})


def test_the_registry_of_enumerations_lists_every_closed_enum_of_the_payloads():
    """docs/events/README.md, "Registry of enumerations": a value added to a schema's enum must be listed there."""
    in_schemas = {}
    for path in sorted(EVENTS_DIR.glob("*.v*.schema.json")):
        schema = json.loads(path.read_text())
        for field, spec in schema["properties"]["payload"].get("properties", {}).items():
            if "enum" in spec:
                in_schemas[(schema["properties"]["type"]["const"], field)] = set(spec["enum"])
    text = (EVENTS_DIR / "README.md").read_text()
    table = text[text.index("## Registry of enumerations"):]
    in_registry, type_name, field = {}, None, None
    for row in re.findall(r"^\|(.*)\|$", table, re.M)[2:]:  # after the header and its rule
        cells = [c.strip() for c in row.split("|")]
        type_name, field = cells[0] or type_name, cells[1].strip("`") or field
        in_registry.setdefault((type_name, field), set()).update(re.findall(r"`([^`]+)`", cells[2]))
    assert in_registry == in_schemas


def asyncapi_meta_schema():
    """The official AsyncAPI 3.0.0 JSON Schema from the @asyncapi/specs package (npm), cached in .data/."""
    target = SPECS_CACHE / "asyncapi-specs" / "3.0.0.json"
    if not target.exists():
        SPECS_CACHE.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run(["npm", "pack", ASYNCAPI_SPECS, "--pack-destination", str(SPECS_CACHE), "--json"],
                                capture_output=True, text=True, check=True, timeout=300)
        tarball = SPECS_CACHE / json.loads(packed.stdout)[0]["filename"].replace("@", "").replace("/", "-")
        with tarfile.open(tarball) as tar:
            member = tar.getmember("package/schemas/3.0.0.json")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return json.loads(target.read_text())


def test_asyncapi_document_is_valid_and_matches_the_registry(flow):
    meta = asyncapi_meta_schema()
    doc = yaml.safe_load(ASYNCAPI.read_text())
    jsonschema.Draft7Validator(meta).validate(doc)
    broken = json.loads(json.dumps(doc))
    broken["operations"]["publishLedgerEvents"]["action"] = "publish"  # AsyncAPI 2 wording, invalid in 3.0
    assert list(jsonschema.Draft7Validator(meta).iter_errors(broken)), "the validator must catch a broken document"
    _, schemas = schema_registry()
    types = {s["properties"]["type"]["const"]: s for s in schemas.values() if "const" in s["properties"]["type"]}
    assert set(doc["components"]["messages"]) == set(types)
    for name, message in doc["components"]["messages"].items():
        assert (EVENTS_DIR.parent / message["payload"]["$ref"]).resolve() == \
            (EVENTS_DIR / f"{name}.v1.schema.json").resolve()
        channel = types[name]["x-topic"]
        assert name in doc["channels"][channel]["messages"]
