"""Crashes and races (issue #5), against the real stack (conftest's session `stack`), loopback only.

* SIGKILL of credits-api under load: clients retry unanswered commands with the same Idempotency-Key and
  body; afterwards every command answered 2xx is in the log exactly once, nothing else is, and every
  balance (writer, API query, Redis) is the fold of the log.
* SIGKILL of credits-projector under load: the Redis view converges to the fold of the log.
* Races: many concurrent reservations and deductions never overdraw and succeed exactly as often as the
  balance allows; a confirm and a cancel of the same reservation: exactly one wins, the other gets 409.

Sizes come from the environment: CI (an ASan build on 2 cores) runs the modest defaults, a developer can
run larger ones. CREDITS_CRASH_SEED replays the random choices of a run (printed with the figures; run
pytest with -s to see them).

  CREDITS_CRASH_CLIENTS          client threads sending commands in the crash tests        (8)
  CREDITS_CRASH_ACCOUNTS         accounts they share                                        (4)
  CREDITS_CRASH_API_KILLS        SIGKILLs of credits-api under load                         (4)
  CREDITS_CRASH_PROJECTOR_KILLS  SIGKILLs of credits-projector under load                   (3)
  CREDITS_CRASH_GAP_S            mean load time between a restart and the next kill, s      (1.5)
  CREDITS_CRASH_RETRY_S          how long a client retries one unanswered command, s        (120)
  CREDITS_CRASH_REPLAYS          answered commands retried again after the kills            (40)
  CREDITS_CRASH_SHORT_HOLDS      share of reservations that expire after 1-3 s               (0.2)
  CREDITS_CRASH_IMPATIENT        share of commands whose first attempt gives up after 10-300 ms (0.1)
  CREDITS_RACE_ATTEMPTS          concurrent reservations + deductions                       (1200)
  CREDITS_RACE_PAIRS             reservations confirmed and cancelled at the same time      (200)
  CREDITS_RACE_WORKERS           threads for the races                                      (48)
  CREDITS_CRASH_API_ENV          extra environment for credits-api in this module, comma-separated
                                 NAME=value (e.g. a small CREDITS_SNAPSHOT_INTERVAL_EVENTS)  (none)
"""
import collections
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from conftest import API_KEY, LEDGER_TOPIC, REDIS_PORT, SHARED_DB, START_TIMEOUT_S, USAGE_TOPIC, fold_balance, read_topic

CLIENTS = int(os.environ.get("CREDITS_CRASH_CLIENTS", "8"))
ACCOUNTS = int(os.environ.get("CREDITS_CRASH_ACCOUNTS", "4"))
API_KILLS = int(os.environ.get("CREDITS_CRASH_API_KILLS", "4"))
PROJECTOR_KILLS = int(os.environ.get("CREDITS_CRASH_PROJECTOR_KILLS", "3"))
GAP_S = float(os.environ.get("CREDITS_CRASH_GAP_S", "1.5"))
RETRY_S = float(os.environ.get("CREDITS_CRASH_RETRY_S", "120"))
REPLAYS = int(os.environ.get("CREDITS_CRASH_REPLAYS", "40"))
SHORT_HOLDS = float(os.environ.get("CREDITS_CRASH_SHORT_HOLDS", "0.2"))
IMPATIENT = float(os.environ.get("CREDITS_CRASH_IMPATIENT", "0.1"))
RACE_ATTEMPTS = int(os.environ.get("CREDITS_RACE_ATTEMPTS", "1200"))
RACE_PAIRS = int(os.environ.get("CREDITS_RACE_PAIRS", "200"))
RACE_WORKERS = int(os.environ.get("CREDITS_RACE_WORKERS", "48"))
BARRIER_S = 60  # the two of a pair meet within this (the pool starts its threads on demand; generous for ASan)
API_ENV = dict(kv.split("=", 1) for kv in os.environ.get("CREDITS_CRASH_API_ENV", "").split(",") if kv.strip())
SEED = int(os.environ.get("CREDITS_CRASH_SEED", str(random.randrange(2**32))))

REQUEST_TIMEOUT_S = 30   # one HTTP attempt; a command is answered after its Kafka commit (append timeout 5 s)
CONVERGE_S = 60          # the projector catching up with the log after the load stopped
TAIL_LOAD_S = 1.0        # load that keeps running after the last restart
IMPATIENT_TOP_UP_MAX = 300  # impatient commands sent after the load when it met neither outcome of their retry

EVENT_OF = {
    "/v1/accounts/create": "AccountCreated",
    "/v1/accounts/credits/add": "CreditsAdded",
    "/v1/accounts/credits/deduct": "CreditsDeducted",
    "/v1/reservations/create": "CreditsReserved",
    "/v1/reservations/confirm": "ReservationConfirmed",
    "/v1/reservations/cancel": "ReservationCancelled",
    "/v1/usage/record": "UsageRecorded",
}
MODEL = "crash-model"


# ---- the client side's record of every command ------------------------------------------------------------

@dataclass
class Command:
    path: str
    body: str                 # the exact bytes sent on every attempt (the request hash covers them)
    account: str | None
    key: str = field(default_factory=lambda: "crash-" + uuid.uuid4().hex)
    status: int | None = None   # the final answer; None while (or if never) answered
    answer: dict | None = None
    position: str | None = None
    replayed: bool = False
    attempts: list = field(default_factory=list)  # per attempt: the status code, "in_flight", or an exception's name
    sent_at: float | None = None      # time.monotonic() of the first attempt
    answered_at: float | None = None  # time.monotonic() of the final answer
    may_expire: bool = False  # a confirm or cancel of a short hold: 409 reservation_expired is a fair answer

    def describe(self):
        return f"{self.path} key={self.key} body={self.body} status={self.status} attempts={self.attempts}"


def dropped(e):
    """A connection that was open when the server went away (not one refused because it was down)."""
    text = repr(e)
    return isinstance(e, requests.ConnectionError) and "refused" not in text.lower() and (
        "aborted" in text or "RemoteDisconnected" in text or "reset" in text.lower() or "BrokenPipe" in text)


def in_flight(r):
    try:
        return r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_in_flight"
    except (ValueError, KeyError, TypeError):
        return False


class Sender:
    """Sends every command with its own Idempotency-Key and records it with its body. An unanswered attempt
    (connection error, timeout, 503, idempotency_key_in_flight) is retried with the same key and the same
    bytes until answered or `retry_s` ran out. One requests.Session per thread."""

    def __init__(self, url, retry_s=RETRY_S):
        self.url, self.retry_s = url, retry_s
        self.lock = threading.Lock()
        self.commands = []
        self.local = threading.local()

    def session(self):
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = requests.Session()
        return s

    def send(self, path, body, account, impatient=False, may_expire=False, eager=False):
        cmd = Command(path, json.dumps(body, separators=(",", ":")), account, may_expire=may_expire)
        with self.lock:
            self.commands.append(cmd)
        self.attempt_until_answered(cmd, impatient, eager)
        return cmd

    def attempt_until_answered(self, cmd, impatient=False, eager=False):
        """`impatient`: the first attempt gives up after 10-300 ms, typically while the command is still queued
        or being committed, so the retry meets it in flight or replays it. `eager`: the first attempt waits for
        its answer 1-10 ms only and the retry follows at once, so that it meets the command in flight and a
        later one its replay."""
        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json", "Idempotency-Key": cmd.key}
        deadline = time.monotonic() + self.retry_s
        backoff = 0.05
        if cmd.sent_at is None:
            cmd.sent_at = time.monotonic()
        while True:
            timeout = REQUEST_TIMEOUT_S
            if eager and not cmd.attempts:
                timeout = (REQUEST_TIMEOUT_S, random.uniform(0.001, 0.01))  # (connect, read)
            elif impatient and not cmd.attempts:
                timeout = random.uniform(0.01, 0.3)
            try:
                r = self.session().post(self.url + cmd.path, data=cmd.body, headers=headers, timeout=timeout)
                cmd.attempts.append("in_flight" if in_flight(r) else r.status_code)
                if r.status_code != 503 and not in_flight(r):
                    cmd.status, cmd.answer = r.status_code, r.json()
                    cmd.position = r.headers.get("Credits-Position")
                    cmd.replayed = r.headers.get("Idempotent-Replayed") == "true"
                    cmd.answered_at = time.monotonic()
                    return
            except requests.RequestException as e:
                cmd.attempts.append("dropped" if dropped(e) else type(e).__name__)
                self.session().close()
                self.local.session = None  # a fresh connection pool after the server went away
            if time.monotonic() >= deadline:
                return
            if eager and len(cmd.attempts) == 1:
                continue
            time.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 0.5)

    def answered(self):
        return [c for c in self.commands if c.status is not None]


def get(url, path, **params):
    return requests.get(url + path, params=params, headers={"X-API-Key": API_KEY}, timeout=REQUEST_TIMEOUT_S)


def open_accounts(sender, count, credits, prefix):
    accounts = []
    for i in range(count):
        external_id = f"{prefix}_{uuid.uuid4().hex[:16]}"
        c = sender.send("/v1/accounts/create", {"name": f"{prefix} {i}", "externalId": external_id}, None)
        assert c.status == 200, c.describe()
        c.account = c.answer["account"]["id"]
        accounts.append(c.account)
        if credits:
            add = sender.send("/v1/accounts/credits/add", {"accountId": c.account, "amount": credits}, c.account)
            assert add.status == 200, add.describe()
    return accounts


# ---- processes --------------------------------------------------------------------------------------------

def wait_healthy(stack, timeout_s=START_TIMEOUT_S):
    stack.wait_healthy(timeout_s, poll_s=0.1)


def ensure_running(stack):
    if not stack.projector.alive():
        stack.projector.start()
    if not stack.api.alive():
        stack.api.start()
    wait_healthy(stack)


@pytest.fixture(scope="module")
def module_stack(stack):
    """The session stack, with CREDITS_CRASH_API_ENV applied to credits-api for this module (restarted with it,
    and without it again at the end). With CREDITS_DATA_DIR set, the processes (re)started here log into that
    directory (a private stack's) rather than the shared .data/logs."""
    saved_logs, saved_env = (stack.api.log_path, stack.projector.log_path), stack.api.env
    if os.environ.get("CREDITS_DATA_DIR"):
        logs = Path(os.environ["CREDITS_DATA_DIR"]) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stack.api.log_path = logs / "test-credits-api.log"
        stack.projector.log_path = logs / "test-credits-projector.log"
    if API_ENV:
        stack.api.env = {**saved_env, **API_ENV}
        stack.api.stop()
        ensure_running(stack)
    yield stack
    try:
        if API_ENV:
            stack.api.env = saved_env
            stack.api.stop()
        ensure_running(stack)
    finally:
        stack.api.log_path, stack.projector.log_path = saved_logs
        stack.api.env = saved_env


@pytest.fixture()
def crash_stack(module_stack):
    """Left running with both processes up, whatever the test killed."""
    yield module_stack
    ensure_running(module_stack)


class Killer(threading.Thread):
    """SIGKILLs one process `kills` times, each after a random stretch of load, and starts it again. Every
    third kill of credits-api from the second on is followed by one more while it is starting up (rebuilding
    its state from the log)."""

    def __init__(self, stack, process, kills, rng):
        super().__init__(daemon=True)
        self.stack, self.process, self.kills, self.rng = stack, process, kills, rng
        self.downtimes, self.kills_while_starting, self.error = [], 0, None
        self.killed_at = []  # time.monotonic() of each SIGKILL

    def kill_and_start(self):
        self.killed_at.append(time.monotonic())
        code = self.process.stop(signal.SIGKILL)
        assert code == -signal.SIGKILL, f"{self.process.name} exited with {code} before it was killed"
        if self.process is self.stack.projector:
            time.sleep(self.rng.uniform(0, 0.5))
        self.process.start()

    def run(self):
        try:
            for i in range(self.kills):
                time.sleep(GAP_S * self.rng.uniform(0.5, 1.5))
                t0 = time.monotonic()
                self.kill_and_start()
                if self.process is self.stack.api and i % 3 == 1:
                    time.sleep(self.rng.uniform(0.05, 1.0))
                    self.kill_and_start()
                    self.kills_while_starting += 1
                if self.process is self.stack.api:
                    wait_healthy(self.stack)
                else:
                    time.sleep(0.5)
                    assert self.process.alive(), f"credits-projector exited on restart, see {self.process.log_path}"
                self.downtimes.append(time.monotonic() - t0)
            time.sleep(TAIL_LOAD_S)
        except BaseException as e:  # reported by the test
            self.error = e


# ---- the load: a mix of commands against a few accounts -----------------------------------------------------

class Workload:
    """Adds, deducts, reserves, confirms, cancels and records usage at random against `accounts`. Reservations
    are handed from the thread that made them to whichever thread confirms or cancels them, once each; a share
    of them expire after 1-3 s, so expiries (written by the writer, with no caller and no key) happen around
    the kills too."""

    OPS = ["add", "deduct", "reserve", "confirm", "cancel", "usage"]
    WEIGHTS = [15, 20, 30, 15, 10, 10]

    def __init__(self, sender, accounts):
        self.sender, self.accounts = sender, accounts
        self.lock = threading.Lock()
        self.pending = collections.deque()  # (reservationId, amount, short hold)
        self.transactions = {a: [] for a in accounts}
        self.errors = []

    def step(self, rng):
        account = rng.choice(self.accounts)
        op = rng.choices(self.OPS, self.WEIGHTS)[0]
        held = None
        if op in ("confirm", "cancel"):
            with self.lock:
                held = self.pending.popleft() if self.pending else None
            if held is None:
                op = "reserve"
            else:
                account = "acc_" + held[0].split("_")[1]  # rsv_<the account's 24 hex digits>_<16 hex digits>
        if op == "add":
            path, body = "credits/add", {"accountId": account, "amount": rng.randint(1, 120), "description": "crash"}
        elif op == "deduct":
            path, body = "credits/deduct", {"accountId": account, "amount": rng.randint(1, 60)}
        elif op == "reserve":
            path, body = "reservations/create", {"accountId": account, "amount": rng.randint(1, 60), "model": MODEL}
            if rng.random() < SHORT_HOLDS:
                body["expiresInSeconds"] = rng.randint(1, 3)
        elif op == "confirm":
            path, body = "reservations/confirm", {"reservationId": held[0], "actualAmount": rng.randint(0, held[1])}
        elif op == "cancel":
            path, body = "reservations/cancel", {"reservationId": held[0]}
        else:
            path, body = "usage/record", {"context": "customer", "accountId": account, "modelId": MODEL,
                                          "usageType": "text", "inputTokens": rng.randint(0, 5000),
                                          "outputTokens": rng.randint(0, 2000)}
            with self.lock:
                if self.transactions[account] and rng.random() < 0.5:
                    body["transactionId"] = rng.choice(self.transactions[account])
        path = ("/v1/accounts/" if path.startswith("credits/") else "/v1/") + path
        c = self.sender.send(path, body, account, impatient=rng.random() < IMPATIENT, may_expire=bool(held and held[2]))
        if c.status == 200:
            with self.lock:
                if op == "reserve":
                    r = c.answer["reservation"]
                    self.pending.append((r["id"], r["amount"], "expiresInSeconds" in body))
                if "transactionId" in c.answer:
                    self.transactions[account].append(c.answer["transactionId"])

    def client(self, stop, seed):
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                self.step(rng)
        except BaseException as e:  # reported by the test
            self.errors.append(e)

    def run_while(self, killer, seed):
        """Runs CLIENTS client threads until `killer` has finished its kills; returns the load's duration."""
        stop = threading.Event()
        clients = [threading.Thread(target=self.client, args=(stop, seed + i), daemon=True) for i in range(CLIENTS)]
        t0 = time.monotonic()
        for t in clients:
            t.start()
        killer.start()
        killer.join()
        stop.set()
        for t in clients:
            t.join(RETRY_S + 2 * REQUEST_TIMEOUT_S)
            assert not t.is_alive(), "a client thread did not finish"
        if killer.error:
            raise killer.error
        if self.errors:
            raise self.errors[0]
        return time.monotonic() - t0


# ---- the log, folded independently -------------------------------------------------------------------------

def read_events(accounts):
    """Every committed event of `accounts` in both topics (with `_topic`), in log order per partition."""
    accounts = set(accounts)
    events = []
    for topic in (LEDGER_TOPIC, USAGE_TOPIC):
        for e in read_topic(topic, timeout_s=120):
            if e["accountId"] in accounts:
                e["_topic"] = topic
                events.append(e)
    return events


def ledger_of(events, account):
    return sorted((e for e in events if e["_topic"] == LEDGER_TOPIC and e["accountId"] == account),
                  key=lambda e: (e["_partition"], e["_offset"]))


def check_balance_after(stream):
    """Every balanceAfter in the stream is the running balance: the writer decided on the folded state."""
    balance = 0
    for e in stream:
        p = e["payload"]
        if e["type"] == "CreditsAdded":
            balance += p["amount"]
        elif e["type"] == "CreditsDeducted":
            balance -= p["amount"]
        elif e["type"] == "ReservationConfirmed":
            balance -= p["charged"]
        else:
            continue
        assert p["balanceAfter"] == balance, f"balanceAfter {p['balanceAfter']} but the fold gives {balance} at {e}"


def check_log_against_commands(commands, events):
    """Exactly-once, matched by Idempotency-Key: every command answered 2xx has exactly one event, at the
    position its answer named; a refused command has none; no key is in the log twice; no event carries a key
    that the clients did not send, and none is without a key (except expiries, which have no caller)."""
    sent = {c.key: c for c in commands}
    assert len(sent) == len(commands), "the client generated a key twice"
    by_key = collections.defaultdict(list)
    unkeyed = []
    for e in events:
        (by_key[e["idempotencyKey"]] if e["idempotencyKey"] else unkeyed).append(e)
    duplicated = {k: v for k, v in by_key.items() if len(v) > 1}
    foreign = {k: v for k, v in by_key.items() if k not in sent}
    lost = [c for c in commands if c.status == 200 and len(by_key.get(c.key, [])) != 1]
    written_but_refused = [c for c in commands if c.status is not None and c.status != 200 and c.key in by_key]
    misplaced = []
    for c in commands:
        if c.status == 200 and len(by_key.get(c.key, [])) == 1:
            e = by_key[c.key][0]
            where = f"{e['_topic']}:{e['_partition']}:{e['_offset']}"
            if e["type"] != EVENT_OF[c.path] or where != c.position or e["accountId"] != c.account:
                misplaced.append((c.describe(), c.position, where, e["type"]))
    unexpected_unkeyed = [e for e in unkeyed if e["type"] != "ReservationExpired"]
    assert not duplicated, f"{len(duplicated)} keys in the log more than once: {list(duplicated.items())[:3]}"
    assert not lost, f"{len(lost)} commands answered 200 but not in the log once: {[c.describe() for c in lost[:5]]}"
    assert not written_but_refused, (f"{len(written_but_refused)} refused commands are in the log: "
                                     f"{[(c.describe(), by_key[c.key]) for c in written_but_refused[:3]]}")
    assert not foreign, f"{len(foreign)} keys in the log the clients never sent: {list(foreign)[:5]}"
    assert not unexpected_unkeyed, f"{len(unexpected_unkeyed)} events without a key: {unexpected_unkeyed[:3]}"
    assert not misplaced, f"{len(misplaced)} answers that do not name their event: {misplaced[:3]}"
    return {"duplicated": len(duplicated), "lost": len(lost), "foreign": len(foreign),
            "expired": len(unkeyed), "events": len(events)}


def check_reservations(events):
    """Each reservation ends at most once, after it was made; a confirm or cancel before its expiresAt, an
    expiry at or after it (occurredAt and expiresAt are both the writer's clock, in one sortable format)."""
    made, ended, bad = {}, collections.Counter(), []
    for e in sorted(events, key=lambda e: (e["_topic"], e["_partition"], e["_offset"])):
        p = e["payload"]
        if e["type"] == "CreditsReserved":
            made[p["reservationId"]] = p["expiresAt"]
        elif e["type"] in ("ReservationConfirmed", "ReservationCancelled", "ReservationExpired"):
            rsv = p["reservationId"]
            ended[rsv] += 1
            if rsv not in made or ended[rsv] > 1:
                bad.append(("ended twice or before it was made", e))
            elif (e["occurredAt"] >= made[rsv]) != (e["type"] == "ReservationExpired"):
                bad.append((f"expiresAt {made[rsv]}", e))
    assert not bad, f"{len(bad)} reservations ended wrongly: {bad[:3]}"


def events_after_expiries(accounts, timeout_s=CONVERGE_S):
    """The events of `accounts` once every short hold has ended in the log: no hold is left that expires
    within the next minute (the long ones last the default 900 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = read_events(accounts)
        open_holds = {e["payload"]["reservationId"]: e["payload"]["expiresAt"] for e in events
                      if e["type"] == "CreditsReserved"}
        for e in events:
            if e["type"].startswith("Reservation"):
                open_holds.pop(e["payload"]["reservationId"], None)
        soon = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 60))
        short = {r: at for r, at in open_holds.items() if at < soon}
        if not short:
            return events
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
        assert time.monotonic() < deadline, (f"holds past expiresAt not released: "
                                             f"{[(r, at) for r, at in short.items() if at < now][:3]}")
        time.sleep(0.5)


def redis_values(commands):
    """One redis-cli round trip; each command must have a one-line reply (HGET, HINCRBY 0, ...)."""
    text = "".join(" ".join(f'"{a}"' for a in cmd) + "\n" for cmd in commands)
    out = subprocess.run(["redis-cli", "-p", REDIS_PORT, "-n", str(SHARED_DB), "--raw"], input=text, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split("\n")
    assert len(out) >= len(commands), out
    return out[:len(commands)]


def expected_view(events, account):
    """What the Redis view of `account` must hold: the fold of its log."""
    stream = ledger_of(events, account)
    check_balance_after(stream)
    balance, reserved = fold_balance(stream)
    reservations = {}
    for e in stream:
        if e["type"] == "CreditsReserved":
            reservations[e["payload"]["reservationId"]] = "pending"
        elif e["type"] in ("ReservationConfirmed", "ReservationCancelled", "ReservationExpired"):
            reservations[e["payload"]["reservationId"]] = e["type"][len("Reservation"):].lower()
    usage = collections.Counter()
    for e in events:
        if e["_topic"] == USAGE_TOPIC and e["accountId"] == account:
            p = e["payload"]
            day = e["occurredAt"][:10]
            usage[(day, p["modelId"], "records")] += 1
            usage[(day, p["modelId"], "inputTokens")] += p["inputTokens"]
            usage[(day, p["modelId"], "outputTokens")] += p["outputTokens"]
    return {"balance": balance, "reserved": reserved, "reservations": reservations, "usage": dict(usage)}


def redis_view(account, like):
    """The Redis view of `account`, the same fields as `like` (an expected_view)."""
    commands = [["HGET", f"credits:account:{{{account}}}", field] for field in ("balance", "reserved")]
    rsv = sorted(like["reservations"])
    commands += [["HGET", f"credits:reservation:{{{account}}}:{r}", "status"] for r in rsv]
    usage = sorted(like["usage"])
    commands += [["HGET", f"credits:usage-daily:{{{account}}}:{day}", f"{model}:{what}"] for day, model, what in usage]
    values = redis_values(commands)
    number = lambda v: int(v) if v else None  # noqa: E731
    return {"balance": number(values[0]), "reserved": number(values[1]),
            "reservations": dict(zip(rsv, values[2:2 + len(rsv)])),
            "usage": {k: number(v) for k, v in zip(usage, values[2 + len(rsv):])}}


def wait_converged(accounts, expected, timeout_s=CONVERGE_S):
    """Polls the Redis view until it equals the fold of the log for every account; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        views = {a: redis_view(a, expected[a]) for a in accounts}
        diff = {a: (views[a], expected[a]) for a in accounts if views[a] != expected[a]}
        if not diff:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            a, (got, want) = next(iter(diff.items()))
            small = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            if "reservations" in small:
                small["reservations"] = {r: (got["reservations"][r], s) for r, s in want["reservations"].items()
                                         if got["reservations"][r] != s}
            raise AssertionError(f"Redis view of {len(diff)} accounts differs from the log after {timeout_s}s; "
                                 f"{a}: (redis, log) {small}")
        time.sleep(0.2)


def check_api_and_writer(url, accounts, expected):
    """The API's balance query (read-your-writes, not stale) and the writer's own state equal the fold. The
    writer's state is probed without writing: deducting one more than `available` must be refused with
    details.available equal to the fold's."""
    for a in accounts:
        want = expected[a]
        deadline = time.monotonic() + CONVERGE_S
        while True:
            r = get(url, "/v1/accounts/balance", accountId=a)
            if r.status_code == 200 and "Credits-Stale" not in r.headers:
                break
            assert time.monotonic() < deadline, f"balance of {a} still stale or failing: {r.status_code} {r.text}"
            time.sleep(0.2)
        b = r.json()
        assert (b["balance"], b["reserved"], b["available"]) == (
            want["balance"], want["reserved"], want["balance"] - want["reserved"]), (a, b, want)
        available = want["balance"] - want["reserved"]
        probe = requests.post(url + "/v1/accounts/credits/deduct", json={"accountId": a, "amount": available + 1},
                              headers={"X-API-Key": API_KEY}, timeout=REQUEST_TIMEOUT_S)
        assert probe.status_code == 402, (a, probe.status_code, probe.text, want)
        assert probe.json()["error"]["details"] == {"needed": available + 1, "available": available}, (a, probe.text)


def check_replays(url, commands, rng):
    """Commands answered 200 are answered again, unchanged, when retried now (after the restarts): every one
    that needed more than one attempt (those around the kills) and a random sample of the others, at most
    REPLAYS in all (a replay after a restart re-reads the log and is slow)."""
    sender = Sender(url, retry_s=60)

    def replay(c):
        again = Command(c.path, c.body, c.account, key=c.key)
        sender.attempt_until_answered(again)
        return c, again

    answered = [c for c in commands if c.status == 200]
    retried = [c for c in answered if len(c.attempts) > 1]
    others = [c for c in answered if len(c.attempts) == 1]
    chosen = retried[:REPLAYS] + rng.sample(others, min(len(others), max(0, REPLAYS - len(retried))))
    bad = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for c, again in pool.map(replay, chosen):
            if (again.status, again.answer, again.position, again.replayed) != (200, c.answer, c.position, True):
                bad.append((c.describe(), c.answer, c.position, again.status, again.answer, again.position))
    assert not bad, f"{len(bad)} retries not answered with the kept outcome: {bad[:3]}"
    return len(chosen)


def top_up_impatient(sender, accounts):
    """A short load may, by chance, meet only one of the two outcomes of an impatient first attempt: its retry
    finds the command still in flight (409), or already committed (a replay). Eager adds (Sender), checked with
    the rest, until both were met (or IMPATIENT_TOP_UP_MAX were sent: then the assertion after it fails)."""
    rng = random.Random(SEED + 7)
    for _ in range(IMPATIENT_TOP_UP_MAX):
        seen = figures(sender)
        if seen["409_in_flight"] > 0 and seen["resolved_by_replay"] > 0:
            return
        account = rng.choice(accounts)
        sender.send("/v1/accounts/credits/add", {"accountId": account, "amount": 1, "description": "eager"},
                    account, eager=True)


def figures(sender, **extra):
    commands = sender.commands
    attempts = [a for c in commands for a in c.attempts]
    statuses = collections.Counter(c.status for c in commands)
    out = {
        "commands": len(commands),
        "attempts": len(attempts),
        "retried": sum(len(c.attempts) > 1 for c in commands),
        "resolved_by_replay": sum(c.replayed for c in commands),
        "503": attempts.count(503),
        "409_in_flight": attempts.count("in_flight"),
        "timeouts": sum(a in ("ReadTimeout", "Timeout") for a in attempts),
        "dropped": attempts.count("dropped"),
        "connection_errors": sum(isinstance(a, str) and a not in ("in_flight", "dropped", "ReadTimeout", "Timeout")
                                 for a in attempts),
        "final": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        "seed": SEED,
    }
    out.update(extra)
    return out


def in_flight_at(commands, t):
    """The commands sent before `t` and not yet answered at `t`."""
    return [c for c in commands if c.sent_at is not None and c.sent_at < t and (c.answered_at is None or c.answered_at > t)]


def check_kills_met_load(sender, killer):
    """The fault happened under load: at every SIGKILL some commands were in flight (sent, not yet answered)."""
    assert len(killer.killed_at) >= killer.kills, (killer.kills, killer.killed_at)
    idle = [i for i, t in enumerate(killer.killed_at) if not in_flight_at(sender.commands, t)]
    assert not idle, f"kills {idle} of {len(killer.killed_at)} found no command in flight"


def check_commands_answered(sender):
    unanswered = [c for c in sender.commands if c.status is None]
    assert not unanswered, (f"{len(unanswered)} commands unanswered after {RETRY_S}s of retries: "
                            f"{[c.describe() for c in unanswered[:3]]}")
    # In this workload a reservation is confirmed or cancelled once, by one thread: the only refusals the ledger
    # may give are 402 (not enough available) and, for a short hold, 409 reservation_expired. Anything else
    # (404 for a reservation answered 200, 409 idempotency_key_reused for a byte-identical retry, 500) is a bug.
    def fair(c):
        return c.status in (200, 402) or (c.may_expire and c.status == 409
                                          and c.answer["error"]["code"] == "reservation_expired")
    odd = [c for c in sender.commands if not fair(c)]
    assert not odd, f"{len(odd)} unexpected answers: {[(c.describe(), c.answer) for c in odd[:3]]}"


# ---- the tests ---------------------------------------------------------------------------------------------

def test_api_sigkill_under_load_loses_and_duplicates_nothing(crash_stack):
    stack = crash_stack
    t0 = time.monotonic()
    sender = Sender(stack.url)
    accounts = open_accounts(sender, ACCOUNTS, 500, "crash_api")
    workload = Workload(sender, accounts)
    killer = Killer(stack, stack.api, API_KILLS, random.Random(SEED))
    load_s = workload.run_while(killer, SEED)

    check_commands_answered(sender)
    check_kills_met_load(sender, killer)
    seen = figures(sender)
    # The kills cut requests off mid-way and the clients retried them; impatient first attempts (and retries
    # around the restarts) met their command still in flight.
    assert seen["dropped"] > 0 and seen["retried"] > 0, seen
    if IMPATIENT > 0:
        top_up_impatient(sender, accounts)
        seen = figures(sender)
        assert seen["409_in_flight"] > 0 and seen["resolved_by_replay"] > 0, seen
    events = events_after_expiries(accounts)
    log = check_log_against_commands(sender.commands, events)
    check_reservations(events)
    expected = {a: expected_view(events, a) for a in accounts}
    converge_s = wait_converged(accounts, expected)
    check_api_and_writer(stack.url, accounts, expected)
    t_replay = time.monotonic()
    replays = check_replays(stack.url, sender.commands, random.Random(SEED))
    replay_s = time.monotonic() - t_replay
    print("\ncrash figures (credits-api SIGKILL):", json.dumps(figures(
        sender, kills=len(killer.downtimes), kills_while_starting=killer.kills_while_starting,
        downtime_s=[round(d, 2) for d in killer.downtimes], load_s=round(load_s, 1), converge_s=round(converge_s, 2),
        replays=replays, replay_s=round(replay_s, 1), total_s=round(time.monotonic() - t0, 1), **log)))


def test_projector_sigkill_under_load_converges_to_the_log(crash_stack):
    stack = crash_stack
    t0 = time.monotonic()
    sender = Sender(stack.url)
    accounts = open_accounts(sender, ACCOUNTS, 500, "crash_projector")
    workload = Workload(sender, accounts)
    killer = Killer(stack, stack.projector, PROJECTOR_KILLS, random.Random(SEED + 1))
    load_s = workload.run_while(killer, SEED + 1000)

    check_commands_answered(sender)
    check_kills_met_load(sender, killer)
    events = events_after_expiries(accounts)
    log = check_log_against_commands(sender.commands, events)
    check_reservations(events)
    expected = {a: expected_view(events, a) for a in accounts}
    converge_s = wait_converged(accounts, expected)
    check_api_and_writer(stack.url, accounts, expected)
    print("\ncrash figures (credits-projector SIGKILL):", json.dumps(figures(
        sender, kills=len(killer.downtimes), load_s=round(load_s, 1), converge_s=round(converge_s, 2),
        total_s=round(time.monotonic() - t0, 1), **log)))


def test_concurrent_reservations_and_deductions_succeed_exactly_as_often_as_the_balance_allows(crash_stack):
    stack = crash_stack
    t0 = time.monotonic()
    amount, n_accounts = 10, 3
    per_account = -(-RACE_ATTEMPTS // n_accounts)
    allowed = per_account * 5 // 8                 # so that some attempts must be refused
    credits = allowed * amount + amount // 2       # a remainder that no attempt can take
    sender = Sender(stack.url)
    accounts = open_accounts(sender, n_accounts, credits, "race")
    setup = len(sender.commands)
    rng = random.Random(SEED)
    tasks = [(a, rng.choice(["reserve", "deduct"])) for a in accounts for _ in range(per_account)]
    rng.shuffle(tasks)

    def attempt(task):
        account, kind = task
        path = "/v1/reservations/create" if kind == "reserve" else "/v1/accounts/credits/deduct"
        return task, sender.send(path, {"accountId": account, "amount": amount}, account)

    t_race = time.monotonic()
    with ThreadPoolExecutor(max_workers=RACE_WORKERS) as pool:
        results = list(pool.map(attempt, tasks))
    race_s = time.monotonic() - t_race

    check_commands_answered(sender)
    wins = collections.Counter()
    for (account, kind), c in results:
        if c.status == 200:
            wins[(account, kind)] += 1
        else:
            d = c.answer["error"]["details"]
            assert c.answer["error"]["code"] == "insufficient_credits", c.answer
            assert d["needed"] == amount and d["available"] < amount, c.answer
    for a in accounts:
        assert wins[(a, "reserve")] + wins[(a, "deduct")] == allowed, (a, wins, allowed)
    events = read_events(accounts)
    log = check_log_against_commands(sender.commands, events)
    check_reservations(events)
    expected = {a: expected_view(events, a) for a in accounts}
    for a in accounts:
        assert (expected[a]["balance"], expected[a]["reserved"]) == (
            credits - wins[(a, "deduct")] * amount, wins[(a, "reserve")] * amount), (a, expected[a])
    wait_converged(accounts, expected)
    check_api_and_writer(stack.url, accounts, expected)  # available is the remainder, amount // 2
    print("\nrace figures (reserve/deduct):", json.dumps({
        "attempts": len(sender.commands) - setup, "successes": sum(wins.values()), "allowed": allowed * n_accounts,
        "refused_402": len(sender.commands) - setup - sum(wins.values()), "workers": RACE_WORKERS,
        "race_s": round(race_s, 1), "total_s": round(time.monotonic() - t0, 1), "seed": SEED, **log}))


def test_concurrent_confirm_and_cancel_of_one_reservation_exactly_one_wins(crash_stack):
    stack = crash_stack
    t0 = time.monotonic()
    amount = 10
    sender = Sender(stack.url)
    (account,) = open_accounts(sender, 1, RACE_PAIRS * amount, "pair")
    with ThreadPoolExecutor(max_workers=RACE_WORKERS) as pool:
        created = list(pool.map(lambda _: sender.send("/v1/reservations/create",
                                                      {"accountId": account, "amount": amount}, account),
                                range(RACE_PAIRS)))
    assert all(c.status == 200 for c in created), [c.describe() for c in created if c.status != 200][:3]
    rng = random.Random(SEED)
    tasks = []
    for c in created:
        rsv = c.answer["reservation"]["id"]
        barrier = threading.Barrier(2)
        pair = [("confirm", rsv, rng.randint(0, amount), barrier), ("cancel", rsv, None, barrier)]
        rng.shuffle(pair)
        tasks += pair

    def attempt(task):
        kind, rsv, actual, barrier = task
        body = {"reservationId": rsv, "actualAmount": actual} if kind == "confirm" else {"reservationId": rsv}
        # Both of a pair leave together (the pool picks them up one after the other); a barrier that breaks fails
        # the test instead of sending the pair apart.
        barrier.wait(timeout=BARRIER_S)
        return task, sender.send(f"/v1/reservations/{kind}", body, account)

    workers = max(2, RACE_WORKERS - RACE_WORKERS % 2)
    t_race = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, tasks))
    race_s = time.monotonic() - t_race

    unanswered = [c for _, c in results if c.status is None]
    assert not unanswered, [c.describe() for c in unanswered[:3]]
    by_rsv = collections.defaultdict(dict)
    for (kind, rsv, actual, _), c in results:
        by_rsv[rsv][kind] = (c, actual)
    # A pair raced when both were in flight at once: each was sent before the other was answered.
    overlapped = sum(max(c.sent_at for c, _ in both.values()) < min(c.answered_at for c, _ in both.values())
                     for both in by_rsv.values())
    winners, charged, bad = collections.Counter(), 0, []
    for rsv, both in by_rsv.items():
        (confirm, actual), (cancel, _) = both["confirm"], both["cancel"]
        codes = (confirm.status, cancel.status)
        if codes == (200, 409):
            winner, loser, status = "confirm", cancel, "confirmed"
            charged += actual
        elif codes == (409, 200):
            winner, loser, status = "cancel", confirm, "cancelled"
        else:
            bad.append((rsv, confirm.describe(), confirm.answer, cancel.describe(), cancel.answer))
            continue
        winners[winner] += 1
        error = loser.answer["error"]
        if (error["code"], error.get("details")) != ("reservation_not_pending", {"status": status}):
            bad.append((rsv, winner, loser.describe(), loser.answer))
    assert not bad, f"{len(bad)} pairs without exactly one winner and one 409 loser: {bad[:3]}"
    # A race, not two requests in turn: most pairs were in flight together, and each side won some of them.
    assert overlapped >= len(by_rsv) // 2, f"only {overlapped} of {len(by_rsv)} pairs were in flight together"
    assert winners["confirm"] > 0 and winners["cancel"] > 0, dict(winners)

    events = read_events([account])
    log = check_log_against_commands(sender.commands, events)
    check_reservations(events)
    ends = collections.Counter(e["payload"]["reservationId"] for e in events
                               if e["type"] in ("ReservationConfirmed", "ReservationCancelled", "ReservationExpired"))
    assert set(ends) == set(by_rsv) and set(ends.values()) == {1}, "a reservation ended more or less than once"
    expected = {account: expected_view(events, account)}
    assert (expected[account]["balance"], expected[account]["reserved"]) == (RACE_PAIRS * amount - charged, 0)
    wait_converged([account], expected)
    check_api_and_writer(stack.url, [account], expected)
    print("\nrace figures (confirm/cancel):", json.dumps({
        "pairs": RACE_PAIRS, "overlapped": overlapped, "confirm_won": winners["confirm"], "cancel_won": winners["cancel"], "workers": workers,
        "race_s": round(race_s, 1), "total_s": round(time.monotonic() - t0, 1), "seed": SEED, **log}))
