"""A log written before grants: its events carry no grant ids and no draws, and every fold must find the same
grants in it as a writer of grants would have written (docs/events/README.md: they fold as never-expiring grants of
priority 50, paid). The oracle is the same history written by today's writer: a workload with default grant terms
only (nothing a writer before grants could not write) runs on topics of its own; its export, with every grant field
taken out of the records, is imported into fresh topics. That copy is a log as a writer before grants wrote it.

Its view, built by a rebuild and by a live projector, must hold the same grants, holds and balances by category as
the original's; verify (which folds with the domain's own rules for such events) must find no mismatch; and a writer
of grants then continues the old log (confirms an old hold, refunds an old charge) and the view follows."""
import json
import time
import uuid

from conftest import REDIS_DBS, Client, Stack
from conftest import redis_cli as redis
from test_operations import dump, lib_sh, log_end, ops_env, projector, verify, wait_view

RUN = uuid.uuid4().hex[:8]
PREFIX = f"credits-test-legacy-{RUN}"
SOURCE = (f"{PREFIX}.ledger", f"{PREFIX}.usage", f"{PREFIX}.keys", f"{PREFIX}.snapshots")
COPY = (f"{PREFIX}-copy.ledger", f"{PREFIX}-copy.usage", f"{PREFIX}-copy.keys", f"{PREFIX}-copy.snapshots")
SOURCE_DBS, COPY_DBS, LIVE_DBS = (REDIS_DBS["test_grants_legacy"], REDIS_DBS["test_grants_legacy copy"],
                                  REDIS_DBS["test_grants_legacy live"])
# What grants added to the version 1 events this workload writes: the grant's terms, the draws, an over-capture.
GRANT_FIELDS = {"CreditsAdded": ("grantId", "expiresAt", "priority", "category", "costBasis"),
                "ReservationConfirmed": ("draws", "overcaptured")}


def stack_on(name, topics, dbs):
    """An API and a projector of their own on `topics` (ledger, usage, keys, snapshots) and databases `dbs`."""
    ledger, usage, keys, snapshots = topics
    return Stack("-legacy-" + name, {
        "CREDITS_LEDGER_TOPIC": ledger, "CREDITS_USAGE_TOPIC": usage, "CREDITS_KEYS_TOPIC": keys,
        "CREDITS_SNAPSHOT_TOPIC": snapshots, "CREDITS_REDIS_DB": str(dbs[0]), "CREDITS_REDIS_REBUILD_DB": str(dbs[1]),
        "CREDITS_TRANSACTIONAL_ID": f"{PREFIX}-{name}-api"})


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def workload(client):
    """Every movement a writer before grants could write, on a few accounts; returns what later steps use."""
    out = {"accounts": [], "pending": [], "charges": [], "adds": []}
    for i in range(4):
        account = ok(client.post("/v1/accounts/create", {"name": f"L{i}", "externalId": f"legacy_{RUN}_{i}"}))[
            "account"]["id"]
        out["accounts"].append(account)
        adds = [ok(client.post("/v1/accounts/credits/add", {"accountId": account, "amount": a}))
                for a in (100, 50, 80)]
        out["adds"].append(adds[0]["transactionId"])
        charge = ok(client.post("/v1/accounts/credits/deduct", {"accountId": account, "amount": 120}))
        out["charges"].append(charge["transactionId"])
        hold = ok(client.post("/v1/reservations/create", {"accountId": account, "amount": 40}))["reservation"]
        ok(client.post("/v1/reservations/confirm", {"reservationId": hold["id"], "actualAmount": 15}))
        hold = ok(client.post("/v1/reservations/create", {"accountId": account, "amount": 20}))["reservation"]
        ok(client.post("/v1/reservations/cancel", {"reservationId": hold["id"]}))
        ok(client.post("/v1/reservations/create", {"accountId": account, "amount": 5, "expiresInSeconds": 1}))
        ok(client.post("/v1/transactions/reverse", {"transactionId": charge["transactionId"], "amount": 30}))
        ok(client.post("/v1/transactions/reverse", {"transactionId": adds[1]["transactionId"], "amount": 10}))
        out["pending"].append(ok(client.post("/v1/reservations/create",
                                             {"accountId": account, "amount": 25 + i}))["reservation"]["id"])
    return out


def legacy_copy(tmp_path, source_env, copy_env):
    """The source log exported, every grant field taken out, imported into the copy's topics."""
    backup, stripped = tmp_path / "source.jsonl", tmp_path / "legacy.jsonl"
    r = projector("export", str(backup), env=source_env)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = backup.read_text().splitlines()
    out, stripped_fields = [lines[0]], 0
    for line in lines[1:-1]:
        record = json.loads(line)
        if record["value"] is not None and record["topic"] == SOURCE[0]:
            event = json.loads(record["value"])
            assert event["payload"].get("reason") is None, "the workload wrote nothing a writer before grants could not"
            for field in GRANT_FIELDS.get(event["type"], ("draws",)):
                stripped_fields += event["payload"].pop(field, None) is not None
            record["value"] = json.dumps(event)
        out.append(json.dumps(record))
    out.append(lines[-1])
    stripped.write_text("\n".join(out) + "\n")
    assert stripped_fields > 0
    r = projector("import", str(stripped), env=copy_env)
    assert r.returncode == 0, r.stdout + r.stderr


def grants_of(db):
    """The grant side of a view: the grants hashes, each account's grants, the promotional part, holds' draws."""
    view, out = dump(db), {}
    for key, value in view.items():
        if key.startswith("credits:grant:"):
            out[key] = value
        elif key.startswith("credits:grants:"):
            kind, members = value
            out[key] = [m.split(":", 1)[1] if i % 2 == 0 else m for i, m in enumerate(members)]
        elif key.startswith("credits:account:"):
            out[key] = {f: value.get(f) for f in ("balance", "reserved", "promotional")}
        elif key.startswith("credits:reservation:"):
            out[key] = {f: value.get(f) for f in ("status", "amount", "draws")}
    return out


def test_a_log_written_before_grants_folds_to_the_grants_a_writer_of_grants_wrote(tmp_path):
    lib_sh("create_topics", LEDGER_TOPIC=SOURCE[0], USAGE_TOPIC=SOURCE[1], KEYS_TOPIC=SOURCE[2],
           SNAPSHOT_TOPIC=SOURCE[3])
    for db in (*SOURCE_DBS, *COPY_DBS, *LIVE_DBS):
        redis(db, "FLUSHDB")
    source = stack_on("source", SOURCE, SOURCE_DBS)
    source_env = ops_env(SOURCE[0], SOURCE[1], *SOURCE_DBS, SOURCE[2])
    copy_env = ops_env(COPY[0], COPY[1], *COPY_DBS, COPY[2])
    source.start()
    try:
        made = workload(Client(source.url))
        time.sleep(2)  # the 1 s holds expire: the writer appends their ReservationExpired
        wait_view(log_end(SOURCE[0], SOURCE[1]), SOURCE_DBS[0])
    finally:
        source.api.stop()
        source.projector.stop()
    expected = grants_of(SOURCE_DBS[0])
    # Each grant's terms are a field of its account's grants hash named by the grant id alone (layout.hpp).
    assert sum(1 for k, v in expected.items() if k.startswith("credits:grant:") for f in v if "|" not in f) == 12

    # The copy folded by a rebuild (the pipelined path), then by a live projector (the apply script).
    legacy_copy(tmp_path, source_env, copy_env)
    lib_sh("create_topics", LEDGER_TOPIC=COPY[0], USAGE_TOPIC=COPY[1], KEYS_TOPIC=COPY[2], SNAPSHOT_TOPIC=COPY[3])
    r = projector("rebuild", env=copy_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert grants_of(COPY_DBS[0]) == expected
    code, output, summary = verify(copy_env)
    assert code == 0 and " 0 mismatches" in summary and " 12 grants compared" in summary, output

    live = stack_on("live", COPY, LIVE_DBS)
    live.start()
    try:
        wait_view(log_end(COPY[0], COPY[1]), LIVE_DBS[0])
        assert grants_of(LIVE_DBS[0]) == expected

        # A writer of grants continues the old log: it confirms an old hold and refunds an old charge, which name
        # the old grants in their draws; the view follows, and verify agrees.
        client = Client(live.url)
        for i, account in enumerate(made["accounts"]):
            ok(client.post("/v1/reservations/confirm", {"reservationId": made["pending"][i], "actualAmount": 10}))
            ok(client.post("/v1/transactions/reverse", {"transactionId": made["charges"][i], "amount": 20}))
            ok(client.post("/v1/accounts/credits/deduct", {"accountId": account, "amount": 30}))
        wait_view(log_end(COPY[0], COPY[1]), LIVE_DBS[0])
        live_env = ops_env(COPY[0], COPY[1], *LIVE_DBS, COPY[2])
        code, output, summary = verify(live_env)
        assert code == 0 and " 0 mismatches" in summary and " 12 grants compared" in summary, output
        grants = ok(client.get("/v1/accounts/grants", accountId=made["accounts"][0]))["grants"]
        assert len(grants) == 3 and all(g["category"] == "paid" and g["priority"] == 50 and g["expiresAt"] is None
                                        for g in grants)
        for g in grants:
            assert g["amount"] - g["corrected"] == g["remaining"] + g["held"] + g["charged"] - g["refunded"] + \
                g["expired"] + g["voided"], g
    finally:
        live.api.stop()
        live.projector.stop()
