"""Fixtures for the HTTP-level integration tests.

They run the real binaries (credits-api, credits-projector) against the real Kafka and Redis that
scripts/test.sh brings up, on topics of their own so a developer's running stack is not disturbed.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CREDITS_TEST_BUILD_DIR", REPO / "build" / "dev"))
BROKERS = os.environ.get("CREDITS_KAFKA_BROKERS", "127.0.0.1:9092")
REDIS_PORT = os.environ.get("CREDITS_REDIS_PORT", "6379")
# The shared stack's topics: new for every run (the `shared_topics` fixture makes them), so nothing a run finds
# there was left by an earlier one; CREDITS_TEST_*_TOPIC names others (made if missing) to look at a run's log
# afterwards.
RUN_ID = uuid.uuid4().hex[:8]
LEDGER_TOPIC = os.environ.get("CREDITS_TEST_LEDGER_TOPIC", f"credits-test-{RUN_ID}.ledger")
USAGE_TOPIC = os.environ.get("CREDITS_TEST_USAGE_TOPIC", f"credits-test-{RUN_ID}.usage")
SNAPSHOT_TOPIC = os.environ.get("CREDITS_TEST_SNAPSHOT_TOPIC", f"credits-test-{RUN_ID}.snapshots")
KEYS_TOPIC = os.environ.get("CREDITS_TEST_KEYS_TOPIC", f"credits-test-{RUN_ID}.keys")
SHARED_TOPIC_PARTITIONS = 12  # as scripts/lib.sh makes the stack's own
SNAPSHOT_INTERVAL_EVENTS = 400  # small, so the tests' traffic writes snapshots and restarts load them
API_KEY = "ck_test_key_tenant_a"
OTHER_TENANT_KEY = "ck_test_key_tenant_b"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
LOGS = REPO / ".data" / "logs"

# Every suite's own Redis databases, a (view, rebuild) pair each: no suite reads, flushes or swaps another's keys,
# and none depends on the order the suites run in. 0 and 1 stay a developer's running stack's (scripts/up.sh).
# tests/README.md shows this table with the C++ suites' (integration/suite_resources.hpp) and the SDK's pairs;
# test_suite_layout.py checks that they agree and that no database is claimed twice.
REDIS_DATABASES = 64  # scripts/lib.sh starts Redis with this many (redis-server --databases)
REDIS_DBS = {
    "shared stack": (2, 3),  # the session-wide `stack` fixture, which every module that uses `client` shares
    "test_contract": (4, 5),
    "test_scale_out": (6, 7),
    "test_secrets": (8, 9),
    "test_schemathesis": (10, 11),
    "test_rate_limits": (12, 13),
    "test_tls": (14, 15),
    "test_quarantine": (16, 17),
    "test_view_loss": (18, 19),
    "test_operations": (20, 21),
    "test_operations import": (22, 23),
    "test_operations restore": (24, 25),
    "test_compose_env": (26, 27),
    "test_operations poison": (36, 37),
    "test_grants month end": (38, 39),
    "test_grants_legacy": (40, 41),
    "test_grants_legacy copy": (42, 43),
    "test_grants_legacy live": (44, 45),
}
SHARED_DB, SHARED_REBUILD_DB = REDIS_DBS["shared stack"]


def pytest_collection_modifyitems(config, items):
    """CREDITS_TEST_ORDER=reverse runs the tests last to first (modules, and the tests in each): no test may depend
    on what ran before it (tests/README.md)."""
    if os.environ.get("CREDITS_TEST_ORDER") == "reverse":
        items.reverse()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """One of our executables, started with a CREDITS_* environment and stopped with SIGTERM."""

    def __init__(self, name, binary, env):
        self.name, self.binary, self.env, self.proc = name, binary, env, None
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"test-{name}.log"
        self.log_from = 0  # where the current run's lines begin in log_path (it keeps earlier runs' lines)

    def start(self):
        log = open(self.log_path, "ab")
        self.log_from = log.tell()
        self.proc = subprocess.Popen([str(self.binary)], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode if self.proc else None
        self.proc = None
        return code

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Stack:
    """The command API and the projector under test, restartable. `name` and `env` give a second stack its own
    topics, Redis database, transactional id and log files (see test_contract.py)."""

    def __init__(self, name="", env=None, exact_env=None):
        """`exact_env`, if given, is the processes' whole environment instead of the test defaults and `env`
        (test_compose_env.py); it must set CREDITS_HTTP_PORT and CREDITS_PROJECTOR_METRICS_PORT."""
        if exact_env is not None:
            self.env = dict(exact_env)
        else:
            self.env = self.default_env(name, env)
        self.port = int(self.env["CREDITS_HTTP_PORT"])
        self.projector_metrics_url = f"http://127.0.0.1:{self.env['CREDITS_PROJECTOR_METRICS_PORT']}/metrics"
        self.api = Process("credits-api" + name, BUILD / "command-api" / "credits-api", self.env)
        self.projector = Process("credits-projector" + name, BUILD / "projector" / "credits-projector", self.env)
        self.url = f"http://127.0.0.1:{self.port}"

    @staticmethod
    def default_env(name, env):
        result = dict(os.environ)
        result.update({
            "CREDITS_HTTP_PORT": str(free_port()),
            "CREDITS_KAFKA_BROKERS": BROKERS,
            "CREDITS_REDIS_PORT": REDIS_PORT,
            "CREDITS_REDIS_DB": str(SHARED_DB),
            "CREDITS_REDIS_REBUILD_DB": str(SHARED_REBUILD_DB),
            "CREDITS_LEDGER_TOPIC": LEDGER_TOPIC,
            "CREDITS_USAGE_TOPIC": USAGE_TOPIC,
            "CREDITS_SNAPSHOT_TOPIC": SNAPSHOT_TOPIC,
            "CREDITS_KEYS_TOPIC": KEYS_TOPIC,
            "CREDITS_SNAPSHOT_INTERVAL_EVENTS": str(SNAPSHOT_INTERVAL_EVENTS),
            "CREDITS_API_KEYS": f"tenant_a:{API_KEY},tenant_b:{OTHER_TENANT_KEY}",
            "CREDITS_TRANSACTIONAL_ID": "credits-test-api" + name,
            "CREDITS_EXPIRY_SCAN_INTERVAL_MS": "100",
            "CREDITS_PROJECTOR_METRICS_PORT": str(free_port()),
            "ASAN_OPTIONS": "detect_leaks=0",
        })
        result.update(env or {})
        return result

    def start(self):
        try:
            self.projector.start()
            self.api.start()
            self.wait_healthy(also_alive=[self.projector])
        except BaseException:  # a failed start leaves nothing running to disturb later tests
            self.api.stop()
            self.projector.stop()
            raise

    def wait_healthy(self, timeout_s=START_TIMEOUT_S, poll_s=0.2, also_alive=()):
        """Until the API answers /healthz; fails at once if it (or a process in `also_alive`) exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in (self.api, *also_alive):
                assert process.alive(), f"{process.name} exited, see {process.log_path}"
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(poll_s)
        raise AssertionError(f"credits-api not healthy within {timeout_s}s, see {self.api.log_path}")

    def stop(self):
        api, projector = self.api.stop(), self.projector.stop()
        assert api in (0, None), f"credits-api exit code {api}, see {self.api.log_path}"
        assert projector in (0, None), f"credits-projector exit code {projector}, see {self.projector.log_path}"

    def restart(self):
        self.stop()
        self.start()


class Client:
    """A thin REST client: the calls the guide makes, with the key in X-API-Key."""

    def __init__(self, url, key=API_KEY):
        self.url, self.key, self.session = url, key, requests.Session()

    def post(self, path, body, headers=None, raw=None):
        h = {"X-API-Key": self.key, "Content-Type": "application/json"}
        h.update(headers or {})
        data = raw if raw is not None else json.dumps(body)
        return self.session.post(self.url + path, data=data, headers=h, timeout=30)

    def get(self, path, headers=None, **params):
        h = {"X-API-Key": self.key}
        h.update(headers or {})
        return self.session.get(self.url + path, params=params, headers=h, timeout=30)


def redis_cli(db, *args):
    """One redis-cli command against database `db` of the tests' Redis; its --raw output."""
    return subprocess.run(["redis-cli", "-p", REDIS_PORT, "-n", str(db), "--raw", *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def flush_dbs(dbs):
    for db in dbs:
        redis_cli(db, "FLUSHDB")


@pytest.fixture(scope="session", autouse=True)
def redis_has_every_suites_database():
    """A Redis started before scripts/lib.sh asked for REDIS_DATABASES has 16: say so instead of failing later."""
    have = int(redis_cli(0, "CONFIG", "GET", "databases").split()[1])
    assert have >= REDIS_DATABASES, (f"the Redis on port {REDIS_PORT} has {have} databases, the tests need "
                                     f"{REDIS_DATABASES}: restart it (scripts/down.sh; scripts/up.sh --infra-only)")


@pytest.fixture(scope="session", autouse=True)
def shared_topics():
    """The shared stack's topics, as scripts/lib.sh create_topics makes a stack's; those that exist are kept. Every
    Stack's defaults name them (a private stack replaces some), so they are made before any test."""
    from confluent_kafka.admin import AdminClient, NewTopic
    forever = {"retention.ms": "-1", "retention.bytes": "-1"}
    wanted = [NewTopic(LEDGER_TOPIC, SHARED_TOPIC_PARTITIONS, 1, config=forever),
              NewTopic(USAGE_TOPIC, SHARED_TOPIC_PARTITIONS, 1, config=forever),
              NewTopic(LEDGER_TOPIC + ".dlq", SHARED_TOPIC_PARTITIONS, 1, config=forever),
              NewTopic(SNAPSHOT_TOPIC, 1, 1, config={"cleanup.policy": "compact", "retention.ms": "-1"}),
              NewTopic(KEYS_TOPIC, 1, 1, config=forever)]
    listed = AdminClient({"bootstrap.servers": BROKERS}).list_topics(timeout=10).topics
    missing = [t for t in wanted if t.topic not in listed]
    if missing:
        create_topics(missing)


@pytest.fixture(scope="session")
def stack():
    flush_dbs(REDIS_DBS["shared stack"])
    s = Stack()
    s.start()
    yield s
    s.stop()


@pytest.fixture()
def client(stack):
    return Client(stack.url)


@pytest.fixture()
def other_tenant(stack):
    return Client(stack.url, OTHER_TENANT_KEY)


@pytest.fixture()
def external_id():
    return "user_" + uuid.uuid4().hex[:12]


def read_topic(topic, key=None, timeout_s=30):
    """Every committed event of `topic` (optionally only those keyed `key`), in log order per partition,
    read with kcat: a third-party client, so the wire format is checked, not our own decoder."""
    out = subprocess.run(
        ["kcat", "-C", "-b", BROKERS, "-t", topic, "-e", "-q", "-X", "isolation.level=read_committed",
         "-f", "%k\t%p\t%o\t%s\n"],
        capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    events = []
    # One record a line: "\n" alone ends a line (JSON escapes it in a value), not the other line breaks that
    # str.splitlines() knows (U+2028, U+0085, ...), which a value may hold unescaped.
    for line in filter(None, out.split("\n")):
        k, p, o, value = line.split("\t", 3)
        if key is None or k == key:
            e = json.loads(value)
            e["_partition"], e["_offset"] = int(p), int(o)
            events.append(e)
    events.sort(key=lambda e: (e["_partition"], e["_offset"]))
    return events


def redis_hash(key, db=SHARED_DB):
    out = redis_cli(db, "HGETALL", key).splitlines()
    return dict(zip(out[0::2], out[1::2]))


def fold_balance(events):
    """The balance and reserved amount of an account stream, folded independently of the C++ code."""
    balance = reserved = 0
    held = {}
    for e in events:
        p = e["payload"]
        t = e["type"]
        if t == "CreditsAdded":
            balance += p["amount"]
        elif t == "CreditsDeducted":
            balance -= p["amount"]
        elif t == "CreditsReserved":
            reserved += p["amount"]
            held[p["reservationId"]] = p["amount"]
        elif t == "ReservationConfirmed":
            reserved -= held.pop(p["reservationId"])
            balance -= p["charged"]
        elif t in ("ReservationCancelled", "ReservationExpired"):
            reserved -= held.pop(p["reservationId"])
        elif t == "TransactionReversed":
            balance += -p["amount"] if p["originalType"] == "CreditsAdded" else p["amount"]
        assert 0 <= reserved <= balance, f"overdraft in the log at {e}"
    return balance, reserved


class BackgroundLoad:
    """`workers` threads, each running self.work(worker) until the `with` ends (self.stopping is set). An exception
    that ends a thread is kept (self.errors) and fails the test when the `with` ends, unless the body is failing
    already: a dying load thread is never silent, and neither is one that does not stop."""

    JOIN_TIMEOUT_S = 60

    def __init__(self, workers):
        self.stopping, self.lock, self.errors = threading.Event(), threading.Lock(), []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def work(self, worker):
        raise NotImplementedError

    def _run(self, worker):
        try:
            self.work(worker)
        except BaseException as e:  # reported when the `with` ends
            with self.lock:
                self.errors.append(e)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stopping.set()
        for t in self.threads:
            t.join(self.JOIN_TIMEOUT_S)
        if exc_type is None:
            assert not any(t.is_alive() for t in self.threads), f"a load thread did not stop in {self.JOIN_TIMEOUT_S} s"
            if self.errors:
                raise AssertionError(f"{len(self.errors)} load thread(s) died: {self.errors[:3]!r}") from self.errors[0]


def log_records(path, offset=0):
    """Every line of one of our processes' logs from byte `offset` on, parsed as the JSON object it must be
    (librdkafka's diagnostics included, docs/operations.md "Logs"): a line that is not fails, nothing is skipped
    unread."""
    with open(path, "rb") as f:
        f.seek(offset)
        lines = f.read().split(b"\n")[:-1]  # a last line without its "\n" is still being written
    records = []
    for number, line in enumerate(lines):
        where = f"{path}: line {number + 1} after byte {offset}"
        try:
            record = json.loads(line.decode(errors="strict"))
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError alike
            raise AssertionError(f"{where} is not JSON ({e}): {line[:300]!r}") from None
        assert isinstance(record, dict), f"{where} is not a JSON object: {line[:300]!r}"
        records.append(record)
    return records


def eventually(fn, timeout_s=30, poll_s=0.2):
    """fn's result once it stops raising AssertionError; its last AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(poll_s)


def create_topics(new):
    """Creates confluent_kafka NewTopics and waits until the metadata shows them all."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": BROKERS})  # kept alive until the futures are done
    for f in admin.create_topics(new).values():
        f.result(30)
    # Created is not yet known to every metadata request: the API refuses to start on a key log it cannot see.
    deadline = time.monotonic() + 30
    while True:
        listed = admin.list_topics(timeout=10).topics
        if all(t.topic in listed and listed[t.topic].error is None and listed[t.topic].partitions for t in new):
            return
        assert time.monotonic() < deadline, "the new topics did not show up in the metadata"
        time.sleep(0.1)


def private_stack(name, dbs, env=None, partitions=3):
    """A Stack on topics of its own (ledger, usage, dead letters, key log, made here) and its own Redis databases
    (`dbs`: the view's and the rebuild's, from REDIS_DBS, flushed here), so its settings (rate limits, TLS, the
    access log) and what it writes touch no other test."""
    from confluent_kafka.admin import NewTopic
    run = uuid.uuid4().hex[:8]
    topics = {t: f"credits-test-{name}-{run}.{t}" for t in ("ledger", "usage", "keys")}
    new = [NewTopic(topics["ledger"], partitions, 1, config={"retention.ms": "-1"}),
           NewTopic(topics["usage"], partitions, 1, config={"retention.ms": "-1"}),
           NewTopic(topics["ledger"] + ".dlq", partitions, 1, config={"retention.ms": "-1"}),
           NewTopic(topics["keys"], 1, 1, config={"retention.ms": "-1"})]
    create_topics(new)
    flush_dbs(dbs)
    s = Stack("-" + name, {"CREDITS_LEDGER_TOPIC": topics["ledger"], "CREDITS_USAGE_TOPIC": topics["usage"],
                           "CREDITS_KEYS_TOPIC": topics["keys"], "CREDITS_SNAPSHOT_INTERVAL_EVENTS": "0",
                           "CREDITS_REDIS_DB": str(dbs[0]), "CREDITS_REDIS_REBUILD_DB": str(dbs[1]), **(env or {})})
    s.topics = topics
    return s


@contextlib.contextmanager
def kafka_paused():
    """The broker of the stack the CREDITS_* environment names, stopped with SIGSTOP for the body's duration (and
    continued afterwards, whatever happens): an append started meanwhile waits for it, so a command stays in
    flight. Keep the body short: the API gives up on an append after 5 s (CREDITS_APPEND_TIMEOUT_MS)."""
    pid = subprocess.run(["bash", "-c", f'source "{REPO}/scripts/lib.sh" && pid_alive "$KAFKA_PIDFILE" "$KAFKA_MARKER"'],
                         env=os.environ, capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    os.kill(int(pid), signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(int(pid), signal.SIGCONT)
