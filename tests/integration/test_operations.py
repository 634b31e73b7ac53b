"""The projector's operator commands against the real Kafka and Redis (docs/operations.md): rebuild, verify,
poison events and the dead-letter topic, export and import.

A rebuild swaps whole Redis databases, so the view under test must own one: this module projects into
databases 11 (view) and 12 (rebuild) of the test Redis, 13/14 for the imported copy and 3/4 for the API
started on a restored copy, and flushes them first. It creates topics of its own for each run (through scripts/lib.sh) and deletes them at the end, so
a running stack and the other test modules are not disturbed.
"""
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict

import pytest

from conftest import (API_KEY, BROKERS, BUILD, KEYS_TOPIC, LOGS, REDIS_DBS, REDIS_PORT, REPO, BackgroundLoad, Client,
                      Stack, eventually)
from conftest import redis_cli as redis

RUN = uuid.uuid4().hex[:8]
PREFIX = f"credits-test-ops-{RUN}"
LEDGER, USAGE, SNAPSHOTS = f"{PREFIX}.ledger", f"{PREFIX}.usage", f"{PREFIX}.snapshots"
IMPORT_LEDGER, IMPORT_USAGE, IMPORT_KEYS = f"{PREFIX}-import.ledger", f"{PREFIX}-import.usage", f"{PREFIX}-import.keys"
VIEW_DB, REBUILD_DB = REDIS_DBS["test_operations"]
IMPORT_VIEW_DB, IMPORT_REBUILD_DB = REDIS_DBS["test_operations import"]
RESTORE_VIEW_DB, RESTORE_REBUILD_DB = REDIS_DBS["test_operations restore"]  # the API started on a restored copy
PROJECTOR = BUILD / "projector" / "credits-projector"

TOPICS_TIMEOUT_S = 120
OPERATION_TIMEOUT_S = 300  # one rebuild, verify, export or import of this module's few thousand events
CATCH_UP_TIMEOUT_S = 90
LOAD_WORKERS = 6
KILL_ROUNDS = 3

# Every key of a Redis database with its type and contents, as JSON, in one call.
DUMP_SCRIPT = """
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  local t = redis.call('TYPE', k).ok
  local v
  if t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'set' then v = redis.call('SMEMBERS', k); table.sort(v)
  elseif t == 'string' then v = {redis.call('GET', k)}
  else v = {} end
  out[#out + 1] = {k, t, v}
end
return cjson.encode(out)
"""


def dump(db):
    """{key: contents}; hashes as dicts. Empty Redis tables encode as {} in cjson, hence the `or []`."""
    out = {}
    for key, kind, value in json.loads(redis(db, "EVAL", DUMP_SCRIPT, "0")):
        if key == "credits:projector":  # the projector's own status (lag), not part of the view
            continue
        value = value or []
        out[key] = dict(zip(value[0::2], value[1::2])) if kind == "hash" else (kind, value)
    for field in ("id", "createdAt"):  # every view built gets an id of its own; its topics are compared
        out.get("credits:view", {}).pop(field, None)
    return out


def lib_sh(command, **settings):
    """Runs a scripts/lib.sh function against the Kafka the tests use, with lib.sh's settings (e.g. LEDGER_TOPIC)
    given for that call: sourcing lib.sh sets them from the CREDITS_* environment."""
    assignments = " ".join(f"{k}='{v}'" for k, v in settings.items())
    subprocess.run(["bash", "-c", f"source '{REPO}/scripts/lib.sh'; {assignments} {command}"],
                   env=dict(os.environ, CREDITS_KAFKA_PORT=BROKERS.rsplit(":", 1)[1]), check=True,
                   timeout=TOPICS_TIMEOUT_S, stdout=subprocess.DEVNULL)


def ops_settings(ledger=LEDGER, usage=USAGE, view_db=VIEW_DB, rebuild_db=REBUILD_DB, keys=KEYS_TOPIC):
    return {"CREDITS_KAFKA_BROKERS": BROKERS, "CREDITS_REDIS_PORT": REDIS_PORT, "CREDITS_LEDGER_TOPIC": ledger,
            "CREDITS_USAGE_TOPIC": usage, "CREDITS_KEYS_TOPIC": keys, "CREDITS_REDIS_DB": str(view_db),
            "CREDITS_REDIS_REBUILD_DB": str(rebuild_db), "ASAN_OPTIONS": "detect_leaks=0"}


def ops_env(*args):
    return dict(os.environ, **ops_settings(*args))


def projector(*args, env=None, timeout=OPERATION_TIMEOUT_S):
    return subprocess.run([str(PROJECTOR), *args], env=env or ops_env(), capture_output=True, text=True,
                          timeout=timeout)


def position(response):
    """(topic, partition) -> offset from a command's Credits-Position header."""
    topic, partition, offset = response.headers["Credits-Position"].rsplit(":", 2)
    return (topic, int(partition)), int(offset)


def wait_view(positions, db=VIEW_DB, timeout_s=CATCH_UP_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    for (topic, partition), offset in positions.items():
        while True:
            applied = redis(db, "HGET", "credits:positions", f"{topic}:{partition}").strip()
            if applied and int(applied) >= offset:
                break
            assert time.monotonic() < deadline, f"the view did not reach {topic}:{partition}@{offset} (at {applied})"
            time.sleep(0.05)


def log_end(*topics):
    """(topic, partition) -> offset of the last committed event, read with kcat."""
    end = {}
    for topic in topics:
        out = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", topic, "-e", "-q", "-X",
                              "isolation.level=read_committed", "-f", "%p\t%o\n"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        for line in out.splitlines():
            partition, offset = map(int, line.split("\t"))
            end[(topic, partition)] = max(offset, end.get((topic, partition), -1))
    return end


def wait_caught_up(db=VIEW_DB, ledger=LEDGER, usage=USAGE):
    """Until the view has applied the whole log, including events no command answer named (expiries)."""
    wait_view(log_end(ledger, usage), db)


class Positions:
    """The highest position each (topic, partition) reached in command answers; thread-safe."""

    def __init__(self):
        self.lock, self.latest = threading.Lock(), {}

    def note(self, response):
        if response.status_code != 200 or "Credits-Position" not in response.headers:
            return
        where, offset = position(response)
        with self.lock:
            self.latest[where] = max(offset, self.latest.get(where, -1))

    def snapshot(self):
        with self.lock:
            return dict(self.latest)


class Load(BackgroundLoad):
    """Commands flowing through the API from a few threads until stopped: credits in and out, holds confirmed,
    cancelled or left to expire, usage."""

    def __init__(self, url, accounts, positions):
        super().__init__(LOAD_WORKERS)
        self.url, self.accounts, self.positions = url, accounts, positions
        self.counts = defaultdict(int)
        self.unfair = []  # answers other than 200 and 402 (and 409 for a hold that expired), and exceptions
        self.spans = []  # (sent, answered) in time.monotonic() of each 200

    def __exit__(self, *exc):
        super().__exit__(*exc)
        assert self.counts["ok"] > 0, dict(self.counts)
        assert not self.unfair, f"{len(self.unfair)} unexpected answers, e.g. {self.unfair[:3]}"

    def answered(self, count, since=0.0):
        """For eventually(): `count` commands answered 200 after `since` (a time.monotonic())."""
        with self.lock:
            got = sum(answered > since for _, answered in self.spans)
        assert got >= count, dict(self.counts)

    def overlapping(self, t0, t1):
        """The commands answered 200 that were in flight at some time between t0 and t1."""
        with self.lock:
            return [(sent, answered) for sent, answered in self.spans if sent < t1 and answered > t0]

    def post(self, client, path, body, may_expire=False):
        sent = time.monotonic()
        r = client.post(path, body)
        if r.status_code == 200:
            with self.lock:
                self.spans.append((sent, time.monotonic()))
        self.positions.note(r)
        self.counts["ok" if r.status_code == 200 else str(r.status_code)] += 1
        expired = may_expire and r.status_code == 409 and r.json()["error"]["code"] == "reservation_expired"
        if r.status_code not in (200, 402) and not expired:
            self.unfair.append((path, body, r.status_code, r.text))
        return r

    def work(self, worker):
        client, rnd = Client(self.url), random.Random(worker)
        while not self.stopping.is_set():
            account = rnd.choice(self.accounts)
            roll = rnd.random()
            try:
                if roll < 0.3:  # grants of every kind: categories, priorities, some that expire during the load
                    terms = {"category": rnd.choice(["paid", "promotional"]), "priority": rnd.randint(0, 100)}
                    if rnd.random() < 0.3:
                        terms["expiresInSeconds"] = rnd.choice([2, 3600])
                    self.post(client, "/v1/accounts/credits/add",
                              {"accountId": account, "amount": rnd.randint(1, 100), **terms})
                elif roll < 0.45:
                    self.post(client, "/v1/accounts/credits/deduct", {"accountId": account, "amount": rnd.randint(1, 50)})
                elif roll < 0.85:
                    expires_s = rnd.choice([1, 2, 3600])
                    r = self.post(client, "/v1/reservations/create",
                                  {"accountId": account, "amount": rnd.randint(1, 50), "expiresInSeconds": expires_s})
                    if r.status_code == 200:
                        hold = r.json()["reservation"]
                        short = expires_s < 3600
                        if rnd.random() < 0.6:
                            self.post(client, "/v1/reservations/confirm",
                                      {"reservationId": hold["id"], "actualAmount": rnd.randint(0, hold["amount"])},
                                      may_expire=short)
                        elif rnd.random() < 0.5:
                            self.post(client, "/v1/reservations/cancel", {"reservationId": hold["id"]}, may_expire=short)
                else:
                    self.post(client, "/v1/usage/record",
                              {"context": "customer", "accountId": account, "modelId": rnd.choice(["a", "b"]),
                               "usageType": "text", "inputTokens": rnd.randint(1, 999), "outputTokens": 7})
            except Exception as e:  # the load goes on; the test fails on leaving the `with`
                self.counts[type(e).__name__] += 1
                self.unfair.append((type(e).__name__, str(e)[:300]))


def ops_stack(name, ledger, usage, snapshots, view_db, rebuild_db):
    """The API and the projector on the given topics (made here) and databases (flushed here), with 40 accounts of
    5,000 credits each (stack.accounts); stack.env is the projector's operator environment (rebuild, verify)."""
    lib_sh("create_topics", LEDGER_TOPIC=ledger, USAGE_TOPIC=usage, SNAPSHOT_TOPIC=snapshots)
    for db in (view_db, rebuild_db):
        redis(db, "FLUSHDB")
    stack = Stack()
    stack.api.env.update(ops_settings(ledger, usage, view_db, rebuild_db))  # one dict, shared by both processes
    stack.api.env.update({"CREDITS_SNAPSHOT_TOPIC": snapshots, "CREDITS_TRANSACTIONAL_ID": f"{PREFIX}-{name}-api"})
    stack.api.log_path = LOGS / f"test-operations-{name}-credits-api.log"
    stack.projector.log_path = LOGS / f"test-operations-{name}-credits-projector.log"
    stack.ops_env = ops_env(ledger, usage, view_db, rebuild_db)
    try:
        stack.start()
    except BaseException:
        stack.api.stop()
        stack.projector.stop()
        raise
    stack.positions = Positions()
    client = Client(stack.url)
    stack.accounts = []
    for i in range(40):
        r = client.post("/v1/accounts/create", {"name": f"Ops {i}", "externalId": f"ops_{RUN}_{name}_{i}"})
        assert r.status_code == 200, r.text
        stack.positions.note(r)
        stack.accounts.append(r.json()["account"]["id"])
        stack.positions.note(client.post("/v1/accounts/credits/add", {"accountId": stack.accounts[-1], "amount": 5000}))
    return stack


@pytest.fixture(scope="module")
def ops():
    for db in (IMPORT_VIEW_DB, IMPORT_REBUILD_DB):
        redis(db, "FLUSHDB")
    stack = ops_stack("main", LEDGER, USAGE, SNAPSHOTS, VIEW_DB, REBUILD_DB)
    yield stack
    stack.api.stop()
    stack.projector.stop()
    lib_sh(f"kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server '{BROKERS}' --delete "
           f"--topic '{re.escape(PREFIX)}(-[a-z0-9]+)?[.].*'")


def verify(env=None):
    r = projector("verify", env=env)
    summary = [line for line in r.stdout.splitlines() if line.startswith("verify:")]
    return r.returncode, r.stdout + r.stderr, summary[-1] if summary else ""


def test_rebuild_restores_a_wiped_view_exactly(ops):
    with Load(ops.url, ops.accounts, ops.positions):
        time.sleep(3)
    time.sleep(3)  # holds of 1-2 s expire: the writer appends their ReservationExpired events
    wait_caught_up()
    ops.projector.stop()
    before = dump(VIEW_DB)
    assert len([k for k in before if k.startswith("credits:account:")]) == len(ops.accounts)

    redis(VIEW_DB, "FLUSHDB")  # this module's own view database
    r = projector("rebuild")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "switched db" in r.stdout

    after = dump(VIEW_DB)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key
    ops.projector.start()
    code, output, summary = verify()
    assert code == 0, output
    assert " 0 mismatches" in summary


def test_verify_and_rebuild_while_commands_flow_end_with_every_event_in_the_view(ops):
    with Load(ops.url, ops.accounts, ops.positions) as load:
        eventually(lambda: load.answered(1))
        started = time.monotonic()
        code, output, _ = verify()  # the view and the log move on while it runs
        assert code == 0, output
        r = projector("rebuild")
        assert r.returncode == 0, r.stdout + r.stderr
        ended = time.monotonic()
        eventually(lambda: load.answered(1, since=ended))
    # Commands were in flight while verify and rebuild ran (a command takes about a second here, so it may be
    # sent before and answered after them).
    assert load.overlapping(started, ended), "no command was in flight while verify and rebuild ran"
    print("load:", dict(load.counts))
    wait_view(ops.positions.snapshot())
    code, output, summary = verify()
    assert code == 0, output
    assert " 0 mismatches" in summary


def test_verify_finds_a_grant_the_view_got_wrong(ops):
    with Load(ops.url, ops.accounts, ops.positions):
        time.sleep(2)
    wait_view(ops.positions.snapshot())
    [member] = redis(VIEW_DB, "ZRANGE", f"credits:grants:{{{ops.accounts[0]}}}", "0", "0").split()
    grant = member.split(":", 1)[1]
    key, counter = f"credits:grant:{{{ops.accounts[0]}}}", f"{grant}|charged"  # the account's grants (layout.hpp)
    redis(VIEW_DB, "HINCRBY", key, counter, "1")
    try:
        code, output, summary = verify()
        # What is left of a grant follows from its other counters (layout.hpp), so it is wrong too.
        assert code == 1 and f"mismatch: grant {grant} charged: view" in output, output
        assert f"mismatch: grant {grant} remaining: view" in output, output
    finally:
        redis(VIEW_DB, "HINCRBY", key, counter, "-1")
    code, output, summary = verify()
    assert code == 0 and " 0 mismatches" in summary and " grants compared" in summary, output


def test_sigkill_mid_projection_and_mid_rebuild_then_verify(ops):
    rnd = random.Random(RUN)
    interrupted = 0
    with Load(ops.url, ops.accounts, ops.positions):
        for _ in range(KILL_ROUNDS):
            time.sleep(rnd.uniform(0.2, 1.0))
            assert ops.projector.stop(signal.SIGKILL) == -signal.SIGKILL
            ops.projector.start()
            rebuild = subprocess.Popen([str(PROJECTOR), "rebuild"], env=ops_env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
            time.sleep(rnd.uniform(0.3, 2.0))
            if rebuild.poll() is None:
                interrupted += 1
                rebuild.kill()
            rebuild.communicate(timeout=OPERATION_TIMEOUT_S)
            time.sleep(rnd.uniform(0.1, 0.5))
            ops.projector.stop(signal.SIGKILL)
            ops.projector.start()
        r = projector("rebuild")  # the lock of a killed rebuild is taken over at once
        assert r.returncode == 0, r.stdout + r.stderr
    print(f"rebuilds killed midway: {interrupted} of {KILL_ROUNDS}")
    assert interrupted > 0
    time.sleep(3)
    wait_caught_up()
    code, output, summary = verify()
    assert code == 0, output
    assert " 0 mismatches" in summary


def test_export_then_import_into_fresh_topics_gives_the_same_view(ops, tmp_path):
    wait_caught_up()
    backup = tmp_path / "credits.jsonl"
    r = projector("export", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = backup.read_text().splitlines()
    header, records, end = json.loads(lines[0]), [json.loads(x) for x in lines[1:-1]], json.loads(lines[-1])
    assert (header["version"], header["ledgerTopic"], header["usageTopic"], header["keysTopic"]) == \
        (2, LEDGER, USAGE, KEYS_TOPIC)
    assert end["records"] == len(records) > 0
    assert {"topic", "partition", "offset", "key", "value", "headers"} <= records[0].keys()

    imported = ops_env(IMPORT_LEDGER, IMPORT_USAGE, IMPORT_VIEW_DB, IMPORT_REBUILD_DB, IMPORT_KEYS)
    r = projector("import", str(backup), env=imported)  # the topics do not exist yet: import creates them
    assert r.returncode == 0, r.stdout + r.stderr
    again = projector("import", str(backup), env=imported)
    assert again.returncode != 0 and "not empty" in again.stderr
    r = projector("rebuild", env=imported)
    assert r.returncode == 0, r.stdout + r.stderr
    code, output, summary = verify(imported)
    assert code == 0, output
    assert " 0 mismatches" in summary
    # The records keep their headers (the CloudEvents attributes downstream consumers read).
    assert record_headers(LEDGER) == record_headers(IMPORT_LEDGER)

    # Same accounts, balances, holds and usage; only the positions differ (new offsets, no transaction markers):
    # the positions hash, and the "<offset>:" that orders equal-time entries of the list indexes (which keep
    # their order: an import keeps each partition's order).
    original, copy = dump(VIEW_DB), dump(IMPORT_VIEW_DB)
    for view in (original, copy):
        view.pop("credits:positions")
        view.pop("credits:view")  # names the topics
        for key in [k for k in view if k.startswith(("credits:transactions:", "credits:usage-records:", "credits:grants:"))]:
            kind, value = view[key]
            view[key] = (kind, [re.sub(r"^[0-9]{19}:", "", v) for v in value])
    assert copy.keys() == original.keys()
    for key in original:
        assert copy[key] == original[key], key


def record_headers(topic):
    """{(partition, key, value): headers} of every record of `topic`, read with kcat."""
    out = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", topic, "-e", "-q", "-X", "isolation.level=read_committed",
                          "-f", "%p\t%k\t%h\t%s\n"], capture_output=True, text=True, check=True, timeout=60).stdout
    found = {}
    for line in out.splitlines():
        partition, key, headers, value = line.split("\t", 3)
        found[(partition, key, value)] = headers
    assert found and all("ce_type=" in h for h in found.values()), list(found.values())[:3]
    return found


ADMIN = BUILD / "admin" / "credits-admin"


def admin(*args, keys_topic=KEYS_TOPIC):
    env = {"CREDITS_KAFKA_BROKERS": BROKERS, "CREDITS_KEYS_TOPIC": keys_topic,
           "CREDITS_ADMIN_TRANSACTIONAL_ID": f"{PREFIX}-admin", "ASAN_OPTIONS": "detect_leaks=0"}
    done = subprocess.run([str(ADMIN), "keys", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_restore_keeps_the_api_keys_and_their_revocations(ops, tmp_path):
    """Export, import into fresh topics, start an API on them: keys made with credits-admin still work, and every
    key revoked before the export (a ck_live_ key and a bootstrap key that the restored API's CREDITS_API_KEYS
    still names) is refused."""
    live = json.loads(admin("create", "--tenant", "tenant_a"))
    revoked = json.loads(admin("create", "--tenant", "tenant_a", "--scope", "read-only"))
    admin("revoke", "--tenant", "tenant_a", "--key", revoked["keyId"])
    bootstrap = "ck_bootstrap_" + uuid.uuid4().hex
    bootstrap_id = "key_" + hashlib.sha256(bootstrap.encode()).hexdigest()[:16]
    admin("revoke", "--tenant", "tenant_a", "--key", bootstrap_id, "--bootstrap")
    wait_caught_up()
    account = ops.accounts[0]
    balance = Client(ops.url).get("/v1/accounts/balance", accountId=account).json()["balance"]

    backup = tmp_path / "credits.jsonl"
    r = projector("export", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    restore = {t: f"{PREFIX}-restore.{t}" for t in ("ledger", "usage", "snapshots", "keys")}
    lib_sh("create_topics", LEDGER_TOPIC=restore["ledger"], USAGE_TOPIC=restore["usage"],
           SNAPSHOT_TOPIC=restore["snapshots"], KEYS_TOPIC=restore["keys"])  # empty, as on a new cluster
    settings = ops_settings(restore["ledger"], restore["usage"], RESTORE_VIEW_DB, RESTORE_REBUILD_DB, restore["keys"])
    r = projector("import", str(backup), env=dict(os.environ, **settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert restore["keys"] in r.stdout

    for db in (RESTORE_VIEW_DB, RESTORE_REBUILD_DB):
        redis(db, "FLUSHDB")
    restored = Stack("-restored", {**settings, "CREDITS_SNAPSHOT_TOPIC": restore["snapshots"],
                                   "CREDITS_TRANSACTIONAL_ID": f"{PREFIX}-restored-api",
                                   "CREDITS_API_KEYS": f"tenant_a:{API_KEY},tenant_a:{bootstrap}"})
    restored.start()
    try:
        for key in (revoked["apiKey"], bootstrap):
            r = Client(restored.url, key).get("/v1/accounts")
            assert r.status_code == 401, (key[:16], r.status_code, r.text)

        def live_key_reads_the_restored_balance():
            r = Client(restored.url, live["apiKey"]).get("/v1/accounts/balance", accountId=account)
            assert r.status_code == 200, r.text
            assert r.json()["balance"] == balance
        eventually(live_key_reads_the_restored_balance, timeout_s=CATCH_UP_TIMEOUT_S)
        assert Client(restored.url, API_KEY).get("/v1/accounts").status_code == 200
    finally:
        restored.stop()

    # An export made before the key log was exported (version 1: no keysTopic, no headers) still imports, and
    # leaves the keys topic alone.
    lines = [json.loads(x) for x in backup.read_text().splitlines()]
    header, end = lines[0], lines[-1]
    header["version"] = 1
    del header["keysTopic"], header["partitions"][KEYS_TOPIC]
    records = [{k: v for k, v in x.items() if k != "headers"} for x in lines[1:-1] if x["topic"] != KEYS_TOPIC]
    end["records"] = len(records)
    old = tmp_path / "credits-v1.jsonl"
    old.write_text("".join(json.dumps(x) + "\n" for x in [header, *records, end]))
    v1 = ops_env(f"{PREFIX}-v1.ledger", f"{PREFIX}-v1.usage", IMPORT_VIEW_DB, IMPORT_REBUILD_DB, f"{PREFIX}-v1.keys")
    r = projector("import", str(old), env=v1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "has no API key log" in r.stdout


def kcat_produce(topic, partition, key, value):
    subprocess.run(["kcat", "-P", "-b", BROKERS, "-t", topic, "-p", str(partition), "-k", key], input=value + "\n",
                   text=True, check=True, timeout=30)


@pytest.fixture()
def poisoned():
    """A stack of its own: the poison this test writes stays in its log for good, and would make every later verify
    of the module's main stack answer 3 (issue 26: no test depends on the order the tests run in)."""
    ledger, usage, snapshots = (f"{PREFIX}-poison.{t}" for t in ("ledger", "usage", "snapshots"))
    stack = ops_stack("poison", ledger, usage, snapshots, *REDIS_DBS["test_operations poison"])
    stack.ledger, stack.usage, stack.view_db = ledger, usage, REDIS_DBS["test_operations poison"][0]
    yield stack
    stack.api.stop()
    stack.projector.stop()


def test_a_poison_event_is_dead_lettered_reported_and_the_others_keep_projecting(poisoned):
    ops = poisoned
    client = Client(ops.url)
    victim, other = ops.accounts[0], ops.accounts[1]
    r = client.post("/v1/accounts/credits/add", {"accountId": victim, "amount": 10})
    (topic, partition), _ = position(r)
    before = r.json()["balance"]
    # Garbage, then a well-formed event that confirms a hold that never existed, both on the victim's key and
    # partition, as a broken or hostile producer might write them.
    kcat_produce(topic, partition, victim, "{not json")
    bogus = {"eventId": str(uuid.uuid4()), "type": "ReservationConfirmed", "schemaVersion": 1, "tenant": "tenant_a",
             "accountId": victim, "apiKeyId": "key_x", "requestId": "req_x", "idempotencyKey": "", "requestHash": "",
             "occurredAt": "2026-01-01T00:00:00.000Z",
             "payload": {"reservationId": "rsv_" + victim[4:] + "_" + "0" * 16, "transactionId": "txn_x",
                         "charged": 1, "released": 0, "balanceAfter": before - 1}}
    kcat_produce(topic, partition, victim, json.dumps(bogus))
    # Both accounts keep projecting afterwards, the victim included.
    for account in (victim, other):
        ops.positions.note(client.post("/v1/accounts/credits/add", {"accountId": account, "amount": 5}))
    wait_view(ops.positions.snapshot(), ops.view_db)
    view = redis(ops.view_db, "HGET", f"credits:account:{{{victim}}}", "blocked").strip()
    assert view == "1"
    assert int(redis(ops.view_db, "HGET", f"credits:account:{{{victim}}}", "balance")) == before + 5
    assert redis(ops.view_db, "HGET", f"credits:account:{{{other}}}", "blocked").strip() == ""
    poison = {k: json.loads(v) for k, v in dump(ops.view_db)["credits:poison"].items()}
    ours = {k: v for k, v in poison.items() if v["key"] == victim}
    assert len(ours) == 2, poison
    assert any(v["reason"].startswith("undecodable") for v in ours.values())
    assert any("not pending" in v["reason"] for v in ours.values())

    dead = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", f"{ops.ledger}.dlq", "-e", "-q", "-f", "%k\t%h\t%s\n"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    copies = [line.split("\t", 2) for line in dead if line.startswith(victim + "\t")]
    assert len(copies) >= 2, dead
    assert {c[2] for c in copies} >= {"{not json", json.dumps(bogus)}
    for where in ours:
        offset = where.rsplit(":", 1)[1]
        assert any(f"credits-offset={offset}" in c[1] and "credits-reason=" in c[1] for c in copies), (where, copies)
    log = ops.projector.log_path.read_text(errors="replace")
    assert re.search(rf"poison event at {re.escape(ops.ledger)}:{partition}@\d+ \(key {victim}\)", log)

    code, output, summary = verify(ops.ops_env)
    assert code == 3, output  # the view matches the log, which has poison events
    assert " 0 mismatches" in summary and "poison events: 2, blocked accounts: 1" in summary
    for where in ours:
        assert f"poison: {where} key {victim}" in output

    # A rebuild judges the same events poison, in the same words, and copies nothing to the DLQ again.
    wait_caught_up(ops.view_db, ops.ledger, ops.usage)
    ops.projector.stop()
    before = dump(ops.view_db)
    r = projector("rebuild", env=ops.ops_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dump(ops.view_db) == before
    again = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", f"{ops.ledger}.dlq", "-e", "-q", "-f", "%k\n"],
                           capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    assert again.count(victim) == len(copies)
    ops.projector.start()
