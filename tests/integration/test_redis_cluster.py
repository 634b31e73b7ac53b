"""The read model on a Redis Cluster (docs/scaling.md, "Redis Cluster"): three masters started by
scripts/redis-cluster.sh on free loopback ports, the projector and the API pointed at different nodes of it (each
finds the cluster on its own and routes by key slot), on Kafka topics of their own.

* The guide's flow in two tenants reads back exactly through every query endpoint, and the view's keys are spread
  over all three masters.
* SIGKILLs of the projector under load, and slots moved between masters under load (`redis-cli --cluster
  reshard`): every event is applied exactly once (the balances, the transaction lists and the usage summaries equal
  the log's fold; `credits-projector verify` finds no mismatch), and a query answered while slots move shows a state
  the account really had, in order, or 503.
* Two projectors of one consumer group share the partitions into the cluster; one is SIGKILLed under load and the
  other takes its partitions over, with the same exactly-once checks.
* `credits-projector rebuild` refuses a cluster; a poison event is dead-lettered, recorded and blocks its account.
* The API is ready only while the cluster says cluster_state:ok.

Each test gets an empty cluster (FLUSHALL on every master) and new topics. The shared standalone Redis of the other
tests is not touched.
"""
import json
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import defaultdict

import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import (BROKERS, BUILD, OTHER_TENANT_KEY, REPO, BackgroundLoad, Client, Process, Stack, create_topics,
                      eventually, fold_balance, free_port, read_topic)
from test_openapi import check

SCRIPT = REPO / "scripts" / "redis-cluster.sh"
PROJECTOR = BUILD / "projector" / "credits-projector"
CLUSTER_NODES = 3                # what scripts/redis-cluster.sh starts
BUS_PORT_OFFSET = 10000          # a node's cluster bus listens on its port + 10000
FIRST_PORT_RANGE = (20000, 29000 - CLUSTER_NODES)  # bus ports 30000-38999
CLUSTER_UP_ATTEMPTS = 5          # a port taken between the check and the start: try other ports
SCRIPT_TIMEOUT_S = 120
PARTITIONS = 3
EXIT_USAGE = 2                   # bad configuration or usage (projector/include/credits/operations.hpp)
EXIT_POISON = 3                  # credits::ops::exit_poison (same header)

LOAD_THREADS = 3
LOAD_ACCOUNTS = 8
OPENING_CREDITS = 100_000        # no deduction of the short loads below can be refused
PROJECTOR_KILLS = 2
RESHARD_SLOTS = 2000
PROBES_MIN = 3                   # accounts whose slots the reshard moves
PROBE_ATTEMPTS_MAX = 150         # accounts created to find them (each lands in the moved slots with p = 2000/16384)
RESHARD_TIMEOUT_S = 180
CONVERGE_TIMEOUT_S = 60          # the view catching up with the log after the load
VERIFY_TIMEOUT_S = 180
GROUP_SESSION_TIMEOUT_MS = 6000  # the broker's minimum: a killed projector's partitions move after it
COMMAND_STATUSES = {200, 402, 503}   # 503: Kafka slow on this 2-core box; never a wrong answer


# ---- the cluster ----------------------------------------------------------------------------------------------

def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Cluster:
    """The nodes scripts/redis-cluster.sh runs in `directory` on `first_port` and the next ports."""

    def __init__(self, directory, first_port):
        self.directory, self.first_port = directory, first_port
        self.ports = [first_port + i for i in range(CLUSTER_NODES)]

    def script(self, command):
        return subprocess.run([str(SCRIPT), command, str(self.directory), str(self.first_port)], capture_output=True,
                              text=True, timeout=SCRIPT_TIMEOUT_S)

    @staticmethod
    def cli(port, *args, follow=False):
        """redis-cli against one node; `follow` (-c) follows MOVED and ASK redirects to the key's node."""
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *(["-c"] if follow else []), "--raw",
                               *args], capture_output=True, text=True, check=True, timeout=60).stdout

    def hget(self, key, field):
        return self.cli(self.ports[0], "HGET", key, field, follow=True).strip()

    def hgetall(self, key):
        out = self.cli(self.ports[0], "HGETALL", key, follow=True).splitlines()
        return dict(zip(out[0::2], out[1::2]))

    def node_id(self, port):
        return self.cli(port, "CLUSTER", "MYID").strip()

    def key_slot(self, key):
        return int(self.cli(self.ports[0], "CLUSTER", "KEYSLOT", key))

    def keys(self, port, pattern="credits:*"):
        """The keys held by this one node (SCAN does not leave a node)."""
        return set(self.cli(port, "--scan", "--pattern", pattern).split())

    def slots(self, port):
        """The slots this node owns, in order, from its CLUSTER NODES line (migration markers skipped)."""
        me = next(line for line in self.cli(port, "CLUSTER", "NODES").splitlines() if "myself" in line.split()[2])
        owned = []
        for part in me.split()[8:]:
            if part.startswith("["):
                continue
            first, _, last = part.partition("-")
            owned += range(int(first), int(last or first) + 1)
        return owned

    def flush(self):
        for port in self.ports:
            self.cli(port, "FLUSHALL")

    def reshard(self, source, target, slots):
        """Moves `slots` slots (the source's lowest) with redis-cli, one key per MIGRATE so a slot holding keys stays
        half moved for a while (ASK and TRYAGAIN for whoever reads or writes it then)."""
        r = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{self.ports[0]}",
                            "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
                            "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "1"],
                           capture_output=True, text=True, timeout=RESHARD_TIMEOUT_S)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("redis-cluster")
    rnd, tried = random.Random(), []
    for _ in range(CLUSTER_UP_ATTEMPTS):
        first = rnd.randrange(*FIRST_PORT_RANGE)
        if not all(port_free(p) and port_free(p + BUS_PORT_OFFSET) for p in range(first, first + CLUSTER_NODES)):
            continue
        c = Cluster(directory, first)
        r = c.script("up")
        if r.returncode == 0:
            break
        tried.append(r.stdout + r.stderr)
        c.script("down")
    else:
        pytest.fail(f"no Redis Cluster started in {CLUSTER_UP_ATTEMPTS} attempts: {tried}")
    assert all("cluster_state:ok" in c.cli(p, "CLUSTER", "INFO") for p in c.ports)
    yield c
    r = c.script("down")
    assert r.returncode == 0, r.stdout + r.stderr


def cluster_stack(name, cluster):
    """A Stack on topics of its own whose processes use the cluster: the projector (and verify, below) through the
    first node, the API through the last one."""
    run = uuid.uuid4().hex[:8]
    topics = {t: f"credits-test-{name}-{run}.{t}" for t in ("ledger", "usage", "keys")}
    create_topics([NewTopic(topics["ledger"], PARTITIONS, 1, config={"retention.ms": "-1"}),
                   NewTopic(topics["usage"], PARTITIONS, 1, config={"retention.ms": "-1"}),
                   NewTopic(topics["ledger"] + ".dlq", PARTITIONS, 1, config={"retention.ms": "-1"}),
                   NewTopic(topics["keys"], 1, 1, config={"retention.ms": "-1"})])
    s = Stack("-" + name, {"CREDITS_LEDGER_TOPIC": topics["ledger"], "CREDITS_USAGE_TOPIC": topics["usage"],
                           "CREDITS_KEYS_TOPIC": topics["keys"], "CREDITS_SNAPSHOT_INTERVAL_EVENTS": "0",
                           "CREDITS_REDIS_HOST": "127.0.0.1", "CREDITS_REDIS_PORT": str(cluster.ports[0]),
                           "CREDITS_REDIS_DB": "0"})
    s.api.env = dict(s.env, CREDITS_REDIS_PORT=str(cluster.ports[-1]))
    s.topics = topics
    return s


@pytest.fixture()
def stack(cluster, request):
    cluster.flush()  # the previous test's stack has stopped: nothing writes the cluster now
    s = cluster_stack("cluster-" + request.node.name.removeprefix("test_")[:16].replace("_", "-"), cluster)
    s.start()
    yield s
    try:
        s.stop()
    finally:
        admin = AdminClient({"bootstrap.servers": BROKERS})
        for f in admin.delete_topics([*s.topics.values(), s.topics["ledger"] + ".dlq"]).values():
            f.result(30)


def verify(stack, port):
    """`credits-projector verify` with the stack's settings, through the cluster node on `port`."""
    r = subprocess.run([str(PROJECTOR), "verify"], env=dict(stack.env, CREDITS_REDIS_PORT=str(port)),
                       capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S)
    summary = [line for line in r.stdout.splitlines() if line.startswith("verify:")]
    return r.returncode, r.stdout + r.stderr, summary[-1] if summary else ""


# ---- reading and writing through the API ----------------------------------------------------------------------

def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def assert_balance(client, account, balance):
    assert ok(client.get("/v1/accounts/balance", accountId=account))["balance"] == balance


def pages(client, path, items, **params):
    """Every entry of a paginated listing, following nextCursor."""
    out, cursor = [], None
    while True:
        page = ok(client.get(path, **params, **({"cursor": cursor} if cursor else {})))
        out += page[items]
        cursor = page["nextCursor"]
        if not cursor:
            return out


def open_account(client, credits, name="Cluster"):
    account = ok(client.post("/v1/accounts/create", {"name": name, "externalId": "user_" + uuid.uuid4().hex[:12]}))
    account = account["account"]["id"]
    if credits:
        ok(client.post("/v1/accounts/credits/add", {"accountId": account, "amount": credits}))
    return account


def usage_totals(records):
    """A usage summary's totals, by model and by context, of usage events (or of (model, context, in, out, cached)
    tuples), as the API reports them."""
    fields = ("inputTokens", "outputTokens", "cachedTokens", "totalTokens", "records", "costCredits")
    out = {"totals": dict.fromkeys(fields, 0), "byModel": defaultdict(lambda: defaultdict(int)),
           "byContext": defaultdict(lambda: defaultdict(int))}
    for r in records:
        if isinstance(r, dict):
            p = r["payload"]
            r = (p["modelId"], p["context"], p["inputTokens"], p["outputTokens"], p["cachedTokens"])
        model, context, i, o, cached = r
        for group in (out["totals"], out["byModel"][model], out["byContext"][context]):
            group["inputTokens"] += i
            group["outputTokens"] += o
            group["cachedTokens"] += cached
            group["totalTokens"] += i + o
            group["records"] += 1
            group["costCredits"] += 0  # no model prices are configured
    by = {k: {g: dict(v) for g, v in out[k].items()} for k in ("byModel", "byContext")}
    return {"totals": out["totals"], **by}


def summary_of(client, **params):
    body = ok(client.get("/v1/usage", summary="true", **params))["summary"]
    return {k: body[k] for k in ("totals", "byModel", "byContext")}


class Load(BackgroundLoad):
    """Commands from a few threads until stopped: credits added and deducted, holds confirmed below their amount or
    cancelled, usage recorded. `hot` accounts get most of them (their slots fill with reservation keys). A thread
    ended by anything but a failed request (a 200 without its body, ...) fails the test when the `with` ends."""

    def __init__(self, url, accounts, hot=()):
        super().__init__(LOAD_THREADS)
        self.url, self.accounts, self.hot = url, list(accounts), list(hot)
        self.counts = defaultdict(int)

    def post(self, client, path, body):
        r = client.post(path, body)
        with self.lock:
            self.counts[r.status_code] += 1
        return r

    def accepted(self):
        """How many commands were answered 200 so far: the tests compare it before and after a fault."""
        with self.lock:
            return self.counts[200]

    def work(self, seed):
        client, rnd = Client(self.url), random.Random(seed)
        while not self.stopping.is_set():
            account = rnd.choice(self.hot if self.hot and rnd.random() < 0.6 else self.accounts)
            roll = rnd.random()
            try:
                if roll < 0.25:
                    self.post(client, "/v1/accounts/credits/add", {"accountId": account, "amount": rnd.randint(1, 100)})
                elif roll < 0.45:
                    self.post(client, "/v1/accounts/credits/deduct",
                              {"accountId": account, "amount": rnd.randint(1, 50)})
                elif roll < 0.8:
                    r = self.post(client, "/v1/reservations/create",
                                  {"accountId": account, "amount": rnd.randint(2, 50)})
                    if r.status_code == 200:
                        hold = r.json()["reservation"]
                        if rnd.random() < 0.8:
                            self.post(client, "/v1/reservations/confirm",
                                      {"reservationId": hold["id"], "actualAmount": rnd.randint(1, hold["amount"] - 1)})
                        else:
                            self.post(client, "/v1/reservations/cancel", {"reservationId": hold["id"]})
                else:
                    self.post(client, "/v1/usage/record",
                              {"context": rnd.choice(["customer", "system"]), "accountId": account,
                               "modelId": rnd.choice(["gpt-4o", "claude"]), "usageType": "text",
                               "inputTokens": rnd.randint(1, 999), "outputTokens": rnd.randint(1, 99),
                               "cachedTokens": rnd.randint(0, 9)})
            except requests.RequestException as e:  # counted; the checks below say whether it mattered
                with self.lock:
                    self.counts[type(e).__name__] += 1

    def check(self):
        print("load:", dict(self.counts))
        assert self.counts[200] > 20, dict(self.counts)
        assert set(self.counts) <= COMMAND_STATUSES, dict(self.counts)


CHARGES = ("CreditsAdded", "CreditsDeducted", "ReservationConfirmed", "TransactionReversed")


def check_view_equals_log(stack, cluster, accounts):
    """Once the view has caught up: every balance from the API is the fold of the account's events, the transaction
    lists and usage summaries hold each event once, and verify (through the second node) finds no mismatch."""
    ledger, usage = read_topic(stack.topics["ledger"], timeout_s=60), read_topic(stack.topics["usage"], timeout_s=60)
    client = Client(stack.url)
    expected = {a: fold_balance([e for e in ledger if e["accountId"] == a]) for a in accounts}

    def balances_match():
        got = {}
        for a in accounts:
            body = ok(client.get("/v1/accounts/balance", accountId=a))
            got[a] = (body["balance"], body["reserved"])
            assert body["available"] == body["balance"] - body["reserved"], body
        assert got == expected, {a: (got[a], expected[a]) for a in accounts if got[a] != expected[a]}
    eventually(balances_match, CONVERGE_TIMEOUT_S)

    code, output, summary = verify(stack, cluster.ports[1])
    assert code == 0, output[-4000:]
    assert " 0 mismatches" in summary, output[-4000:]

    for a in accounts:
        listed = [t["id"] for t in pages(client, "/v1/transactions", "transactions", accountId=a, limit=200)]
        logged = [e["payload"]["transactionId"] for e in ledger if e["accountId"] == a and e["type"] in CHARGES]
        assert len(listed) == len(set(listed)), f"{a}: a transaction listed twice"
        assert set(listed) == set(logged), f"{a}: listed {len(listed)}, logged {len(logged)}"
        assert summary_of(client, accountId=a) == usage_totals([e for e in usage if e["accountId"] == a]), a
    assert summary_of(client) == usage_totals(usage)  # the whole tenant: every account is tenant_a's
    return ledger


# ---- the tests ------------------------------------------------------------------------------------------------

def test_the_guide_in_two_tenants_reads_back_exactly_from_the_cluster(stack, cluster):
    a, b = Client(stack.url), Client(stack.url, OTHER_TENANT_KEY)

    # The guide, for Alice in tenant_a: credits, a hold confirmed below its amount, one cancelled, one left pending.
    alice_ext = "user_" + uuid.uuid4().hex[:12]
    alice = ok(a.post("/v1/accounts/create", {"name": "Alice", "externalId": alice_ext, "email": "alice@example.com"}))
    alice = alice["account"]["id"]
    grant = ok(a.post("/v1/accounts/credits/add", {"externalId": alice_ext, "amount": 1000,
                                                   "description": "Starter credits"}))["transactionId"]
    r = a.get("/v1/accounts/balance", externalId=alice_ext)
    assert r.status_code == 200 and "Credits-Stale" not in r.headers, (r.headers, r.text)  # read-your-writes
    assert r.json() == {"success": True, "accountId": alice, "externalId": alice_ext,
                        "balance": 1000, "reserved": 0, "available": 1000}
    confirmed = ok(a.post("/v1/reservations/create", {"externalId": alice_ext, "amount": 500}))["reservation"]["id"]
    charge = ok(a.post("/v1/reservations/confirm", {"reservationId": confirmed, "actualAmount": 320}))
    assert (charge["amountCharged"], charge["amountReleased"], charge["balance"]) == (320, 180, 680)
    cancelled = ok(a.post("/v1/reservations/create", {"accountId": alice, "amount": 100}))["reservation"]["id"]
    ok(a.post("/v1/reservations/cancel", {"reservationId": cancelled}))
    pending = ok(a.post("/v1/reservations/create", {"accountId": alice, "amount": 50}))["reservation"]["id"]
    alice_usage = [("gpt-4o", "customer", 1000, 320, 0), ("claude", "system", 7, 9, 2)]
    ok(a.post("/v1/usage/record", {"context": "customer", "accountId": alice, "transactionId": charge["transactionId"],
                                   "modelId": "gpt-4o", "usageType": "text", "inputTokens": 1000, "outputTokens": 320}))
    ok(a.post("/v1/usage/record", {"context": "system", "externalId": alice_ext, "modelId": "claude",
                                   "usageType": "text", "inputTokens": 7, "outputTokens": 9, "cachedTokens": 2}))

    # Bob in tenant_b: a hold confirmed whole, usage of one model.
    bob = open_account(b, 500, "Bob")
    held = ok(b.post("/v1/reservations/create", {"accountId": bob, "amount": 200}))["reservation"]["id"]
    ok(b.post("/v1/reservations/confirm", {"reservationId": held, "actualAmount": 200}))
    bob_usage = [("gpt-4o", "customer", 11, 13, 0)]
    ok(b.post("/v1/usage/record", {"context": "customer", "accountId": bob, "modelId": "gpt-4o", "usageType": "text",
                                   "inputTokens": 11, "outputTokens": 13}))

    # Enough accounts that every master holds some: 20 in tenant_a, 10 in tenant_b.
    balances = {alice: (680, 50), bob: (300, 0)}
    tenant_of = {alice: a, bob: b}
    for i in range(28):
        client = a if i < 19 else b
        account = open_account(client, 100 + i)
        balances[account], tenant_of[account] = (100 + i, 0), client

    # Every query endpoint, answered from the cluster, exactly.
    r = check(a.get("/v1/accounts/balance", accountId=alice), "/v1/accounts/balance", "get")
    assert r.json() == {"success": True, "accountId": alice, "externalId": alice_ext,
                        "balance": 680, "reserved": 50, "available": 630}
    got = check(a.get("/v1/accounts/get", externalId=alice_ext), "/v1/accounts/get", "get").json()["account"]
    assert (got["id"], got["name"], got["email"], got["balance"], got["reserved"], got["available"]) == \
        (alice, "Alice", "alice@example.com", 680, 50, 630)
    r = check(a.get("/v1/transactions", accountId=alice), "/v1/transactions", "get")
    assert [(t["id"], t["type"], t["amount"], t["balanceAfter"]) for t in r.json()["transactions"]] == \
        [(charge["transactionId"], "charge", -320, 680), (grant, "credit", 1000, 1000)]
    r = check(a.get("/v1/reservations", externalId=alice_ext), "/v1/reservations", "get")
    assert [(x["id"], x["status"], x["amount"], x["charged"]) for x in r.json()["reservations"]] == \
        [(pending, "pending", 50, 0), (cancelled, "cancelled", 100, 0), (confirmed, "confirmed", 500, 320)]
    assert [x["id"] for x in ok(a.get("/v1/reservations", accountId=alice, activeOnly="true"))["reservations"]] == \
        [pending]
    r = check(a.get("/v1/usage", accountId=alice), "/v1/usage", "get")
    assert [(u["modelId"], u["context"], u["inputTokens"], u["outputTokens"], u["cachedTokens"], u["transactionId"])
            for u in r.json()["usage"]] == [("claude", "system", 7, 9, 2, None),
                                            ("gpt-4o", "customer", 1000, 320, 0, charge["transactionId"])]
    check(a.get("/v1/usage", accountId=alice, summary="true"), "/v1/usage", "get")
    assert summary_of(a, accountId=alice) == usage_totals(alice_usage)
    assert summary_of(a, accountId=alice, modelId="claude") == usage_totals(alice_usage[1:])
    assert summary_of(a) == usage_totals(alice_usage)  # tenant_a as a whole: only Alice recorded usage
    assert summary_of(b) == usage_totals(bob_usage)
    assert summary_of(b, accountId=bob) == usage_totals(bob_usage)
    assert b.get("/v1/accounts/balance", accountId=alice).status_code == 404  # another tenant's account
    for client in (a, b):
        check(client.get("/v1/accounts", limit=7), "/v1/accounts", "get")
        listed = pages(client, "/v1/accounts", "accounts", limit=7)
        mine = {x for x, c in tenant_of.items() if c is client}
        assert len(listed) == len(mine) and {x["id"] for x in listed} == mine
        assert {x["id"]: (x["balance"], x["reserved"]) for x in listed} == {x: balances[x] for x in mine}
        assert all(x["available"] == x["balance"] - x["reserved"] for x in listed)

    # Ready: on a cluster that means CLUSTER INFO says cluster_state:ok.
    r = requests.get(stack.url + "/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["checks"]["redis"] == {"ok": True}, r.text

    # The view is spread over the masters: each holds some accounts, and together exactly these.
    held_by = {port: cluster.keys(port, "credits:account:*") for port in cluster.ports}
    assert all(held_by.values()), {p: len(k) for p, k in held_by.items()}
    assert set().union(*held_by.values()) == {"credits:account:{%s}" % x for x in balances}
    assert sum(map(len, held_by.values())) == len(balances)
    assert cluster.hget("credits:account:{%s}" % alice, "balance") == "680"


def test_projector_sigkills_under_load_apply_every_event_exactly_once(stack, cluster):
    client = Client(stack.url)
    accounts = [open_account(client, OPENING_CREDITS) for _ in range(LOAD_ACCOUNTS)]
    rnd = random.Random()
    accepted_between_kills = []
    with Load(stack.url, accounts) as load:
        for _ in range(PROJECTOR_KILLS):
            before = load.accepted()
            time.sleep(rnd.uniform(1.5, 3.0))
            assert stack.projector.stop(signal.SIGKILL) == -signal.SIGKILL, \
                f"the projector had exited before the kill, see {stack.projector.log_path}"
            accepted_between_kills.append(load.accepted() - before)
            time.sleep(rnd.uniform(0.1, 0.5))
            stack.projector.start()
        before = load.accepted()
        time.sleep(2)
        accepted_after = load.accepted() - before
    load.check()
    # The kills hit a projector with commands to fold: writes went on before each one and after the last.
    assert all(n > 0 for n in accepted_between_kills) and accepted_after > 0, (accepted_between_kills, accepted_after)
    assert stack.projector.alive(), f"see {stack.projector.log_path}"
    check_view_equals_log(stack, cluster, accounts)


def test_two_projectors_of_a_group_share_the_cluster_and_one_survives_a_sigkill(stack, cluster):
    # The stack's projector joins a group; a second one joins it, and the first is killed under load: the survivor
    # takes its partitions over after the session timeout, starting from the positions the dead one raised.
    group = {"CREDITS_PROJECTOR_GROUP_ID": "credits-test-cluster-" + uuid.uuid4().hex[:8],
             "CREDITS_PROJECTOR_SESSION_TIMEOUT_MS": str(GROUP_SESSION_TIMEOUT_MS)}
    stack.projector.stop()
    stack.projector.env = dict(stack.projector.env, **group)
    stack.projector.start()
    other = Process(stack.projector.name + "-2", PROJECTOR,
                    dict(stack.env, **group, CREDITS_PROJECTOR_METRICS_PORT=str(free_port()),
                         CREDITS_REDIS_PORT=str(cluster.ports[1])))
    logged_before = other.log_path.stat().st_size if other.log_path.exists() else 0  # the log file is appended to
    other.start()
    try:
        client = Client(stack.url)
        accounts = [open_account(client, OPENING_CREDITS) for _ in range(LOAD_ACCOUNTS)]
        with Load(stack.url, accounts) as load:
            time.sleep(3)
            assert stack.projector.stop(signal.SIGKILL) == -signal.SIGKILL, f"see {stack.projector.log_path}"
            before = load.accepted()
            time.sleep(GROUP_SESSION_TIMEOUT_MS / 1000 + 2)
            accepted_after_kill = load.accepted() - before
        load.check()
        # Writes went on after the kill, so the survivor had the dead one's partitions' new events to fold.
        assert accepted_after_kill > 0, dict(load.counts)
        assert other.alive(), f"see {other.log_path}"
        check_view_equals_log(stack, cluster, accounts)
        # Its share when it joined, then the dead one's.
        logged = other.log_path.read_bytes()[logged_before:].decode()
        assert logged.count("group " + group["CREDITS_PROJECTOR_GROUP_ID"] + " assigned") >= 2, logged[-2000:]
    finally:
        assert other.stop() == 0, f"the surviving projector did not leave its group cleanly, see {other.log_path}"


class Observer:
    """Reads while slots move, from its own thread: balances, the newest ledger transaction and the account list.
    Each answer is kept in the order this thread got it."""

    def __init__(self, url, accounts, probes, everyone, seed):
        self.url, self.accounts, self.probes, self.everyone = url, accounts, probes, set(everyone)
        self.rnd = random.Random(seed)
        self.balances, self.newest, self.listed, self.statuses = [], [], [], defaultdict(int)
        self.errors = []  # what ended the thread other than a failed request: check() fails on it
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        client = Client(self.url)
        while not self.stopping.is_set():
            account = self.rnd.choice(self.probes if self.rnd.random() < 0.7 else self.accounts)
            try:
                r = client.get("/v1/accounts/balance", accountId=account)
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    body = r.json()
                    self.balances.append((account, (body["balance"], body["reserved"]), body["available"]))
                r = client.get("/v1/transactions", accountId=account, limit=1)
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    top = r.json()["transactions"]
                    newest = top[0] if top else {"id": None, "balanceAfter": None}
                    self.newest.append((account, newest["id"], newest["balanceAfter"]))
                if self.rnd.random() < 0.2:
                    r = client.get("/v1/accounts", limit=200)
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        self.listed.append({x["id"] for x in r.json()["accounts"]})
            except requests.RequestException as e:
                self.statuses[type(e).__name__] += 1
            except Exception as e:  # a 200 without the fields read above, ...: would end this thread unseen
                self.errors.append(f"{type(e).__name__}: {e}")
                return

    def check(self, ledger):
        """Every answer shows a state its account had (per account, in the log's order) or is a 503."""
        assert not self.thread.is_alive(), "an observer did not stop"
        assert not self.errors, self.errors
        assert set(self.statuses) <= {200, 503}, dict(self.statuses)
        states, charges = defaultdict(list), defaultdict(dict)
        for account in self.accounts:
            stream = [e for e in ledger if e["accountId"] == account]
            states[account] = [fold_balance(stream[:i + 1]) for i in range(len(stream))]
            for i, e in enumerate(stream):
                if e["type"] in CHARGES:
                    charges[account][e["payload"]["transactionId"]] = (i, e["payload"]["balanceAfter"])
        at = defaultdict(int)
        for account, state, available in self.balances:
            assert available == state[0] - state[1], (account, state, available)
            try:
                at[account] = states[account].index(state, at[account])
            except ValueError:
                raise AssertionError(f"{account}: (balance, reserved) {state} is no state of its log at or after event "
                                     f"#{at[account]}: {states[account][at[account]:][:10]}...") from None
        at.clear()
        for account, transaction, balance_after in self.newest:
            assert transaction is not None, f"{account}: its transaction list was empty"
            assert transaction in charges[account], f"{account}: {transaction} is not in its log"
            index, logged_after = charges[account][transaction]
            assert balance_after == logged_after, (account, transaction, balance_after, logged_after)
            assert index >= at[account], f"{account}: the newest transaction went back to {transaction}"
            at[account] = index
        for ids in self.listed:
            assert ids == self.everyone, f"accounts list: {len(ids)} of {len(self.everyone)}"


def test_moving_slots_under_load_loses_and_duplicates_nothing(stack, cluster):
    client = Client(stack.url)
    first, second = cluster.ports[0], cluster.ports[1]
    moving = set(cluster.slots(first)[:RESHARD_SLOTS])  # redis-cli moves the source's lowest slots
    assert max(moving) < min(cluster.slots(second)), "moved back, they are the second node's lowest slots"
    accounts = [open_account(client, OPENING_CREDITS) for _ in range(LOAD_ACCOUNTS)]
    probes = [a for a in accounts if cluster.key_slot("credits:account:{%s}" % a) in moving]
    everyone = list(accounts)
    for _ in range(PROBE_ATTEMPTS_MAX):
        if len(probes) >= PROBES_MIN:
            break
        account = open_account(client, 0)
        everyone.append(account)
        if cluster.key_slot("credits:account:{%s}" % account) in moving:
            ok(client.post("/v1/accounts/credits/add", {"accountId": account, "amount": OPENING_CREDITS}))
            probes.append(account)
            accounts.append(account)
    assert len(probes) >= PROBES_MIN, f"no {PROBES_MIN} accounts in slots {min(moving)}-{max(moving)}"

    def probes_on(port):
        return all(cluster.cli(port, "EXISTS", "credits:account:{%s}" % p).strip() == "1" for p in probes)

    def listed_whole():
        assert {a["id"] for a in ok(client.get("/v1/accounts", limit=200))["accounts"]} == set(everyone)
    eventually(listed_whole, CONVERGE_TIMEOUT_S)  # the observers expect every account in the list
    observers = [Observer(stack.url, accounts, probes, everyone, seed) for seed in range(2)]
    with Load(stack.url, accounts, hot=probes) as load:
        for o in observers:
            o.thread.start()
        try:
            time.sleep(2)  # holds pile up in the probes' slots
            before, accepted_before = sum(len(o.balances) for o in observers), load.accepted()
            cluster.reshard(first, second, RESHARD_SLOTS)
            assert probes_on(second), "the reshard did not move the probes' slots"
            time.sleep(1)
            cluster.reshard(second, first, RESHARD_SLOTS)
            assert probes_on(first), "the reshard back did not return the probes' slots"
            during = sum(len(o.balances) for o in observers) - before
            written_during = load.accepted() - accepted_before
            time.sleep(1)
        finally:
            for o in observers:
                o.stopping.set()
            for o in observers:
                o.thread.join(60)
    load.check()
    assert stack.projector.alive(), f"see {stack.projector.log_path}"
    print("observed:", [dict(o.statuses) for o in observers], "balances read while slots moved:", during)
    assert during > 0, "no balance was read while the slots moved"
    assert written_during > 0, "no command was accepted while the slots moved"

    ledger = check_view_equals_log(stack, cluster, everyone)
    for o in observers:
        o.check(ledger)


def test_rebuild_refuses_a_redis_cluster_and_leaves_the_view_alone(stack, cluster):
    client = Client(stack.url)
    account = open_account(client, 100)
    eventually(lambda: assert_balance(client, account, 100), CONVERGE_TIMEOUT_S)
    keys = {port: cluster.keys(port) for port in cluster.ports}
    view = cluster.hgetall("credits:account:{%s}" % account)

    r = subprocess.run([str(PROJECTOR), "rebuild"], env=stack.env, capture_output=True, text=True,
                       timeout=VERIFY_TIMEOUT_S)
    assert r.returncode == EXIT_USAGE, r.stdout + r.stderr
    assert "Redis Cluster" in r.stdout + r.stderr, r.stdout + r.stderr

    assert stack.projector.alive(), f"see {stack.projector.log_path}"
    assert {port: cluster.keys(port, "credits:account:*") for port in cluster.ports} == \
        {port: {k for k in keys[port] if k.startswith("credits:account:")} for port in cluster.ports}
    assert cluster.hgetall("credits:account:{%s}" % account) == view
    ok(client.post("/v1/accounts/credits/add", {"accountId": account, "amount": 5}))
    eventually(lambda: assert_balance(client, account, 105), CONVERGE_TIMEOUT_S)  # the live projector still applies


def test_a_poison_event_is_dead_lettered_recorded_and_blocks_its_account(stack, cluster):
    client = Client(stack.url)
    victim, bystander = open_account(client, 100), open_account(client, 100)
    r = client.post("/v1/accounts/credits/add", {"accountId": victim, "amount": 10})
    topic, partition, _ = r.headers["Credits-Position"].rsplit(":", 2)
    assert topic == stack.topics["ledger"]
    before = ok(r)["balance"]

    # A well-formed event confirming a hold the account never had, on the victim's key and partition, as a broken
    # or hostile producer might write it.
    bogus = {"eventId": str(uuid.uuid4()), "type": "ReservationConfirmed", "schemaVersion": 1, "tenant": "tenant_a",
             "accountId": victim, "apiKeyId": "key_x", "requestId": "req_x", "idempotencyKey": "", "requestHash": "",
             "occurredAt": "2026-01-01T00:00:00.000Z",
             "payload": {"reservationId": "rsv_" + victim[4:] + "_" + "0" * 16, "transactionId": "txn_x",
                         "charged": 1, "released": 0, "balanceAfter": before - 1}}
    delivered = []
    producer = Producer({"bootstrap.servers": BROKERS})
    producer.produce(topic, key=victim, value=json.dumps(bogus), partition=int(partition),
                     on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    assert producer.flush(30) == 0
    (err, offset), = delivered
    assert err is None, err
    where = f"{topic}:{partition}:{offset}"

    # Both accounts keep projecting afterwards, the victim included.
    for account in (victim, bystander):
        ok(client.post("/v1/accounts/credits/add", {"accountId": account, "amount": 5}))
    eventually(lambda: assert_balance(client, victim, before + 5), CONVERGE_TIMEOUT_S)
    eventually(lambda: assert_balance(client, bystander, 105), CONVERGE_TIMEOUT_S)

    assert cluster.hget("credits:account:{%s}" % victim, "blocked") == "1"
    assert cluster.hget("credits:account:{%s}" % bystander, "blocked") == ""
    poison = {k: json.loads(v) for k, v in cluster.hgetall("credits:poison").items()}
    assert list(poison) == [where], poison
    assert poison[where]["key"] == victim and poison[where]["reason"], poison

    dead = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", topic + ".dlq", "-e", "-q", "-f", "%k\t%h\t%s\n"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    copies = [line.split("\t", 2) for line in dead]
    assert copies and all(c[0] == victim and c[2] == json.dumps(bogus) for c in copies), dead
    assert all(f"credits-offset={offset}" in c[1] and "credits-reason=" in c[1] for c in copies), dead

    code, output, summary = verify(stack, cluster.ports[1])
    assert code == EXIT_POISON, output[-4000:]  # the view matches the log, which has a poison event
    assert " 0 mismatches" in summary and "poison events: 1, blocked accounts: 1" in summary, output[-4000:]
    assert f"poison: {where} key {victim}" in output, output[-4000:]


def test_the_api_is_not_ready_while_a_slot_has_no_master(stack, cluster):
    # Kept last in this module: it takes a slot away from the API's node for a moment (and gives it back).
    def ready():
        r = requests.get(stack.url + "/readyz", timeout=10)
        return r.status_code, r.json()["checks"]["redis"]

    assert ready() == (200, {"ok": True})
    node = cluster.ports[-1]  # the API's
    slot = str(cluster.slots(node)[0])
    cluster.cli(node, "CLUSTER", "DELSLOTS", slot)
    try:
        status, redis = ready()
        assert status == 503 and redis["ok"] is False and "cluster" in redis["error"].lower(), redis
    finally:
        cluster.cli(node, "CLUSTER", "ADDSLOTS", slot)

    def ready_again():
        assert ready() == (200, {"ok": True})
    eventually(ready_again, CONVERGE_TIMEOUT_S)
