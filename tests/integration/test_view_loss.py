"""Redis loses the view under load (docs/operations.md, "When Redis loses the view"): the view's database is flushed
while commands and queries flow through the API. The projector notices by itself, counts and logs it, rebuilds the
view from the log and folds on; meanwhile /readyz names the view as not ready and says why, and queries answer 503
with Retry-After, never "not found"; at the end the view equals the fold of the log (`credits-projector verify`)
without anyone acting. Then the same with two projectors in a group.

Each test runs on topics of its own (conftest.private_stack) with the view in Redis database 2 and the rebuild in 6,
both flushed first. FLUSHDB of the test's own database stands for FLUSHALL, a restart without the append-only file
or a failover to an empty replica: all of them leave the view's database empty.
"""
import re
import socket
import subprocess
import time
from collections import Counter

import requests

from conftest import BUILD, REDIS_DBS, REDIS_PORT, BackgroundLoad, Client, Process, eventually, free_port, private_stack
from test_openapi import check

VIEW_DB, REBUILD_DB = REDIS_DBS["test_view_loss"]
PROJECTOR = BUILD / "projector" / "credits-projector"
ACCOUNTS = 100
LOAD_WORKERS = 3
REBUILD_TIMEOUT_S = 120  # the projector noticing, rebuilding this test's log and switching, on a busy 2-core machine
VERIFY_TIMEOUT_S = 300


class Resp:
    """One Redis connection, speaking RESP directly: the test needs a connection of its own (a client id that holds
    the rebuild lock, a MULTI around FLUSHDB), and the suite has no Redis client library."""

    def __init__(self, db):
        self.sock = socket.create_connection(("127.0.0.1", int(REDIS_PORT)), timeout=10)
        self.file = self.sock.makefile("rb")
        self.call("SELECT", str(db))

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            raise AssertionError("redis: " + rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise AssertionError(f"unexpected reply {line!r}")

    def close(self):
        self.file.close()
        self.sock.close()


def metric(url, name):
    """The sum of a metric's series in a Prometheus text page."""
    text = requests.get(url, timeout=10).text
    values = [float(m.group(2)) for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)]
    assert values, f"{name} not in {url}"
    return sum(values)


class Traffic(BackgroundLoad):
    """Commands (credits added) and balance queries from a few threads until stopped. Commands never read Redis, so
    every one must succeed; a query may answer 200 or 503 (with Retry-After), but never 404: every account queried
    exists in the log."""

    def __init__(self, url, accounts):
        super().__init__(LOAD_WORKERS)
        self.url, self.accounts = url, accounts
        self.commands, self.queries = Counter(), Counter()
        self.unfair, self.positions = [], {}

    def __exit__(self, *exc):
        super().__exit__(*exc)
        assert self.commands[200] > 0, dict(self.commands)
        assert not self.unfair, f"{len(self.unfair)} unexpected answers, e.g. {self.unfair[:3]}"

    def work(self, worker):
        client, n = Client(self.url), worker
        while not self.stopping.is_set():
            account = self.accounts[n % len(self.accounts)]
            n += LOAD_WORKERS
            try:
                r = client.post("/v1/accounts/credits/add", {"accountId": account, "amount": 1})
                self.note_command(r)
                q = client.get("/v1/accounts/balance", accountId=account)
                with self.lock:
                    self.queries[q.status_code] += 1
                    if q.status_code not in (200, 503) or (q.status_code == 503 and "Retry-After" not in q.headers):
                        self.unfair.append(("query", account, q.status_code, q.text[:200]))
            except requests.RequestException as e:
                with self.lock:
                    self.unfair.append((type(e).__name__, str(e)[:200]))

    def note_command(self, r):
        with self.lock:
            self.commands[r.status_code] += 1
            if r.status_code != 200:
                self.unfair.append(("command", r.status_code, r.text[:200]))
                return
            topic, partition, offset = r.headers["Credits-Position"].rsplit(":", 2)
            key = f"{topic}:{partition}"
            self.positions[key] = max(int(offset), self.positions.get(key, -1))


def started(stack):
    stack.start()
    client = Client(stack.url)
    accounts = []
    for i in range(ACCOUNTS):
        r = client.post("/v1/accounts/create", {"name": f"View {i}", "externalId": f"view_{i}"})
        assert r.status_code == 200, r.text
        accounts.append(r.json()["account"]["id"])
        assert client.post("/v1/accounts/credits/add", {"accountId": accounts[-1], "amount": 100}).status_code == 200
    return accounts


def until(condition, timeout_s=30):
    """Polls `condition` (no argument, truthy when done) until it holds; fails after timeout_s."""
    def check():
        assert condition()
    eventually(check, timeout_s=timeout_s)


def readiness(stack):
    r = check(requests.get(stack.url + "/readyz", timeout=10), "/readyz", "get")  # as docs/openapi.yaml says
    return r.status_code, r.json()


def wait_view_has(positions):
    """Until the view has applied every position a command answered with."""
    redis = Resp(VIEW_DB)
    try:
        def covered():
            for field, offset in positions.items():
                applied = redis.call("HGET", "credits:positions", field)
                assert applied is not None and int(applied) >= offset, (field, applied, offset)
        eventually(covered, timeout_s=REBUILD_TIMEOUT_S)
    finally:
        redis.close()


def verify(stack):
    r = subprocess.run([str(PROJECTOR), "verify"], env=stack.env, capture_output=True, text=True,
                       timeout=VERIFY_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 mismatches" in r.stdout, r.stdout
    return r.stdout


def new_stack(name):
    return private_stack(name, (VIEW_DB, REBUILD_DB))


def test_a_flushed_view_is_rebuilt_by_the_projector_and_queries_answer_503_meanwhile():
    stack = new_stack("viewloss")
    accounts = started(stack)
    try:
        assert readiness(stack)[0] == 200
        with Traffic(stack.url, accounts) as traffic:
            until(lambda: traffic.commands[200] > 20 and traffic.queries[200] > 0)
            # The view is lost, and this connection takes the rebuild lock in the same instant, so the window in
            # which the view is missing stays open until the test lets go (closing the connection: the projector
            # then sees a holder that is gone and takes the lock over, as after a crashed rebuild).
            holder = Resp(VIEW_DB)
            me = holder.call("CLIENT", "ID")
            holder.call("MULTI")
            holder.call("FLUSHDB")
            holder.call("SET", "credits:rebuild-lock", me)
            assert holder.call("EXEC") == ["OK", "OK"]
            lost_at = time.monotonic()

            def reported_missing():
                code, body = readiness(stack)
                assert code == 503 and "view" in body["down"], body
                assert "no view marker" in body["checks"]["view"]["error"], body
                assert metric(stack.projector_metrics_url, "credits_projector_view_losses_total") >= 1
                assert metric(stack.projector_metrics_url, "credits_projector_view_rebuilding") == 1
            eventually(reported_missing, timeout_s=REBUILD_TIMEOUT_S)
            print(f"\nview flushed -> reported by /readyz and the metrics: {time.monotonic() - lost_at:.2f} s")
            r = check(Client(stack.url).get("/v1/accounts/balance", accountId=accounts[0]), "/v1/accounts/balance",
                      "get")
            assert r.status_code == 503 and r.headers["Retry-After"] and r.json()["error"]["code"] == "unavailable"
            assert "no view marker" in r.json()["error"]["message"], r.text

            # What /readyz and a query say while a rebuild runs (the notice a rebuild writes, written here).
            holder.call("HSET", "credits:view", "rebuildingSince", "2026-12-05T00:00:00.000Z", "reason", "test")
            code, body = readiness(stack)
            assert code == 503 and body["checks"]["view"]["rebuilding"] is True, body
            assert "being rebuilt from the log (since 2026-12-05T00:00:00.000Z: test)" in body["checks"]["view"]["error"]
            r = check(Client(stack.url).get("/v1/accounts", limit=5), "/v1/accounts", "get")
            assert r.status_code == 503 and r.headers["Retry-After"], r.text

            holder.close()
            released_at = time.monotonic()
            until(lambda: readiness(stack)[0] == 200, timeout_s=REBUILD_TIMEOUT_S)
            print(f"lock released -> rebuilt and ready: {time.monotonic() - released_at:.2f} s")
            settled = traffic.commands[200]
            until(lambda: traffic.commands[200] > settled + 20)  # and folds on under load
        wait_view_has(traffic.positions)
        print("traffic:", dict(traffic.commands), "queries:", dict(traffic.queries))
        assert traffic.queries[503] > 0 and traffic.queries[200] > 0
        verify(stack)
        assert metric(stack.projector_metrics_url, "credits_projector_view_rebuilds_total") == 1
        assert metric(stack.projector_metrics_url, "credits_projector_view_rebuilding") == 0
        log = stack.projector.log_path.read_text(errors="replace")
        assert "the view lost its data: its marker credits:view is gone" in log
    finally:
        stack.stop()


def test_a_view_flushed_under_load_is_rebuilt_by_a_group_of_projectors():
    stack = new_stack("viewloss-group")
    stack.env.update({"CREDITS_PROJECTOR_GROUP_ID": "credits-test-" + stack.topics["ledger"],
                      "CREDITS_PROJECTOR_SESSION_TIMEOUT_MS": "6000", "CREDITS_PROJECTOR_INSTANCE_ID": "member-1"})
    second = Process("credits-projector-viewloss-member-2", PROJECTOR,
                     dict(stack.env, CREDITS_PROJECTOR_INSTANCE_ID="member-2",
                          CREDITS_PROJECTOR_METRICS_PORT=str(free_port())))
    second.metrics_url = f"http://127.0.0.1:{second.env['CREDITS_PROJECTOR_METRICS_PORT']}/metrics"
    second.start()
    members = (stack.projector_metrics_url, second.metrics_url)
    try:
        accounts = started(stack)
        redis = Resp(VIEW_DB)
        before = redis.call("HGET", "credits:view", "id")
        assert before
        with Traffic(stack.url, accounts) as traffic:
            until(lambda: traffic.commands[200] > 20 and traffic.queries[200] > 0)
            redis.call("FLUSHDB")
            flushed_at = time.monotonic()

            def rebuilt():
                now = redis.call("HGET", "credits:view", "id")
                assert now and now != before, now
                assert readiness(stack)[0] == 200
            eventually(rebuilt, timeout_s=REBUILD_TIMEOUT_S)
            print(f"\nview flushed -> rebuilt by the group and ready: {time.monotonic() - flushed_at:.2f} s")
            settled = traffic.commands[200]
            until(lambda: traffic.commands[200] > settled + 20)
        redis.close()
        wait_view_has(traffic.positions)
        print("traffic:", dict(traffic.commands), "queries:", dict(traffic.queries))
        verify(stack)
        assert second.alive() and stack.projector.alive()
        assert sum(metric(url, "credits_projector_view_losses_total") for url in members) >= 1
        # One member built the view; the other waited for it, then both folded on.
        assert sum(metric(url, "credits_projector_view_rebuilds_total") for url in members) == 1
        assert sum(metric(url, "credits_projector_view_rebuilding") for url in members) == 0
    finally:
        code = second.stop()
        stack.stop()
        assert code in (0, None), f"exit code {code}, see {second.log_path}"
