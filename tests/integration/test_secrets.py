"""Keys are not recoverable from what the ledger stores: after a run with every kind of request (commands,
queries, refusals, a revocation, a restart), neither a whole key nor its secret part is found in Redis, in the
Kafka log directory, or in any log file. The stack logs every request (CREDITS_ACCESS_LOG=1)."""
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import LOGS, REDIS_DATABASES, REDIS_DBS, REPO, Client, private_stack, redis_cli
from test_keys import admin_for, wait_status

DATA = Path(os.environ.get("CREDITS_DATA_DIR", REPO / ".data"))
BOOTSTRAP_KEY = "ck_secret_bootstrap_" + uuid.uuid4().hex
# Every value of every key in a Redis database that contains ARGV[1], counted on the server.
SCAN_SCRIPT = """
local hits, cursor, needle = 0, "0", ARGV[1]
local function check(s) if string.find(s, needle, 1, true) then hits = hits + 1 end end
repeat
  local r = redis.call("SCAN", cursor, "COUNT", 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    check(k)
    local t = redis.call("TYPE", k).ok
    local values = {}
    if t == "string" then values = {redis.call("GET", k)}
    elseif t == "hash" then values = redis.call("HGETALL", k)
    elseif t == "list" then values = redis.call("LRANGE", k, 0, -1)
    elseif t == "set" then values = redis.call("SMEMBERS", k)
    elseif t == "zset" then values = redis.call("ZRANGE", k, 0, -1) end
    for _, v in ipairs(values) do check(v) end
  end
until cursor == "0"
return hits
"""


@pytest.fixture(scope="module")
def secrets_stack():
    s = private_stack("secrets", REDIS_DBS["test_secrets"], {"CREDITS_ACCESS_LOG": "1", "CREDITS_API_KEYS": f"sec:{BOOTSTRAP_KEY}"})
    s.start()
    yield s
    s.stop()


def redis_hits(needle):
    total = 0
    for db in range(REDIS_DATABASES):
        total += int(redis_cli(db, "EVAL", SCAN_SCRIPT, "0", needle).strip())
    return total


def files_with(needle, root):
    found = subprocess.run(["grep", "-rlF", "--", needle, str(root)], capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.split()


def test_no_key_is_found_in_redis_kafka_or_logs_after_a_run(secrets_stack):
    admin = admin_for(secrets_stack.topics["keys"])
    rw = json.loads(admin("create", "--tenant", "sec").stdout)
    ro = json.loads(admin("create", "--tenant", "sec", "--scope", "read-only").stdout)
    writer, reader, boot = (Client(secrets_stack.url, k) for k in (rw["apiKey"], ro["apiKey"], BOOTSTRAP_KEY))
    wait_status(writer, 200)
    wait_status(reader, 200)
    accounts = []
    for c in (writer, boot):
        account = c.post("/v1/accounts/create", {"name": "S", "externalId": "u_" + uuid.uuid4().hex[:8]}).json()
        acc = account["account"]["id"]
        accounts.append(acc)
        assert c.post("/v1/accounts/credits/add", {"accountId": acc, "amount": 100}).status_code == 200
        rsv = c.post("/v1/reservations/create", {"accountId": acc, "amount": 10}).json()["reservation"]["id"]
        txn = c.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 5}).json()["transactionId"]
        assert c.post("/v1/usage/record", {"context": "customer", "accountId": acc, "transactionId": txn,
                                           "modelId": "m", "usageType": "text", "inputTokens": 1,
                                           "outputTokens": 1}).status_code == 200
        assert c.get("/v1/transactions", accountId=acc).status_code == 200
        assert reader.post("/v1/accounts/credits/add", {"accountId": acc, "amount": 1}).status_code == 403
    assert Client(secrets_stack.url, rw["apiKey"][:-4] + "0000").get("/v1/accounts").status_code == 401
    admin("revoke", "--tenant", "sec", "--key", ro["keyId"])
    wait_status(reader, 401)
    secrets_stack.restart()
    assert reader.get("/v1/accounts").status_code == 401
    secrets_stack.stop()

    # The searches work: what is meant to be stored is found where it is stored.
    assert redis_hits(accounts[0]) > 0
    assert files_with(rw["keyId"], DATA / "kafka" / "data"), "the events name their key by id"
    assert files_with(accounts[0], LOGS), "the access log names the account"
    needles = [rw["apiKey"], rw["apiKey"][25:], ro["apiKey"], ro["apiKey"][25:], BOOTSTRAP_KEY]
    assert LOGS.exists() and any(LOGS.iterdir())
    for needle in needles:
        assert redis_hits(needle) == 0, needle[:12]
        assert files_with(needle, DATA / "kafka" / "data") == [], needle[:12]
        assert files_with(needle, DATA / "redis") == [], needle[:12]
        assert files_with(needle, LOGS) == [], needle[:12]
    secrets_stack.start()  # the fixture stops it
