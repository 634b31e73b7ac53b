"""Read models for reporting: transactions, usage records and summaries, balance as of a time, listings.
Each answer is checked against the log itself, read back from Kafka with kcat (conftest.read_topic)."""
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from conftest import LEDGER_TOPIC, USAGE_TOPIC, Client, eventually, fold_balance, read_topic

PAGINATED_TRANSACTIONS = 10_000
WRITERS = 32
PAGE = 200


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def new_account(client, credits=0):
    external_id = "user_" + uuid.uuid4().hex[:12]
    account_id = ok(client.post("/v1/accounts/create", {"name": "R", "externalId": external_id}))["account"]["id"]
    if credits:
        ok(client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": credits}))
    return account_id, external_id


def test_paging_through_10000_transactions_while_writes_continue(stack):
    account_id, _ = new_account(Client(stack.url))
    local = threading.local()

    def add(i):
        if not hasattr(local, "client"):
            local.client = Client(stack.url)
        ok(local.client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 1, "description": f"#{i}"}))

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(add, range(PAGINATED_TRANSACTIONS)))
    written = {e["payload"]["transactionId"] for e in read_topic(LEDGER_TOPIC, key=account_id, timeout_s=120)
               if e["type"] == "CreditsAdded"}
    assert len(written) == PAGINATED_TRANSACTIONS

    stop = threading.Event()
    during, errors = [], []

    def keep_writing():
        try:
            c = Client(stack.url)
            while not stop.is_set():
                during.append(ok(c.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 1}))["transactionId"])
        except BaseException as e:  # reported by the test
            errors.append(e)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    seen, times, cursor, pages = [], [], None, 0
    c = Client(stack.url)
    try:
        def writing():
            assert errors or during, "the writer has not written yet"
        eventually(writing)
        written_before_paging = len(during)
        while True:
            params = {"accountId": account_id, "limit": PAGE, **({"cursor": cursor} if cursor else {})}
            page = ok(c.get("/v1/transactions", **params))
            seen += [t["id"] for t in page["transactions"]]
            times += [t["createdAt"] for t in page["transactions"]]
            assert all(t["accountId"] == account_id and t["type"] == "credit" for t in page["transactions"])
            pages += 1
            cursor = page["nextCursor"]
            if not cursor:
                break
        written_while_paging = len(during) - written_before_paging
    finally:
        stop.set()
        writer.join()
    assert not errors, errors[0]
    assert written_while_paging > 0, "no write happened while the pages were read"
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert written <= set(seen), f"{len(written - set(seen))} entries were lost"
    assert set(seen) <= written | set(during)
    assert times == sorted(times, reverse=True), "not newest first"
    assert pages >= PAGINATED_TRANSACTIONS // PAGE
    # Each entry carries what the log says.
    first = ok(c.get("/v1/transactions", accountId=account_id, limit=1))["transactions"][0]
    event = next(e for e in read_topic(LEDGER_TOPIC, key=account_id) if e["payload"].get("transactionId") == first["id"])
    assert (first["amount"], first["balanceAfter"], first["createdAt"]) == \
        (event["payload"]["amount"], event["payload"]["balanceAfter"], event["occurredAt"])


def test_transactions_show_every_kind_and_filter_by_type_and_time(client):
    account_id, external_id = new_account(client, 1000)
    ok(client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 30, "description": "fee",
                                                   "metadata": {"k": "v"}}))
    rsv = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 500}))["reservation"]["id"]
    charge = ok(client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 320}))
    listed = ok(client.get("/v1/transactions", externalId=external_id))["transactions"]
    assert [(t["type"], t["amount"], t["balanceAfter"]) for t in listed] == \
        [("charge", -320, 650), ("debit", -30, 970), ("credit", 1000, 1000)]
    assert listed[0]["reservationId"] == rsv and listed[0]["id"] == charge["transactionId"]
    assert listed[1]["description"] == "fee" and listed[1]["metadata"] == {"k": "v"}
    assert [t["type"] for t in ok(client.get("/v1/transactions", accountId=account_id, type="debit"))["transactions"]] \
        == ["debit"]
    start = listed[1]["createdAt"]
    ranged = ok(client.get("/v1/transactions", accountId=account_id, startDate=start))["transactions"]
    assert {t["type"] for t in ranged} <= {"charge", "debit"} and "debit" in {t["type"] for t in ranged}
    assert ok(client.get("/v1/transactions", accountId=account_id, endDate=listed[-1]["createdAt"]))["transactions"] == []


def test_usage_records_and_summaries_equal_the_log(client, stack):
    accounts = [new_account(client, 10_000)[0] for _ in range(2)]
    plan = [("gpt-4o", "customer", 1000, 320, 0), ("gpt-4o", "system", 10, 5, 3), ("claude", "customer", 7, 9, 100),
            ("gpt-4o", "customer", 1, 2, 3)]
    for account_id in accounts:
        for model, context, i, o, cached in plan:
            ok(client.post("/v1/usage/record", {"accountId": account_id, "context": context, "modelId": model,
                                                "inputTokens": i, "outputTokens": o, "cachedTokens": cached}))
    events = read_topic(USAGE_TOPIC)

    def expected(selected):
        out = {"totals": defaultdict(int), "byModel": defaultdict(lambda: defaultdict(int)),
               "byContext": defaultdict(lambda: defaultdict(int)), "byDay": defaultdict(lambda: defaultdict(int))}
        for e in selected:
            p = e["payload"]
            for group in (out["totals"], out["byModel"][p["modelId"]], out["byContext"][p["context"]],
                          out["byDay"][e["occurredAt"][:10]]):
                group["inputTokens"] += p["inputTokens"]
                group["outputTokens"] += p["outputTokens"]
                group["cachedTokens"] += p["cachedTokens"]
                group["totalTokens"] += p["inputTokens"] + p["outputTokens"]
                group["records"] += 1
                group["costCredits"] += p.get("costCredits", 0)
        return {"totals": dict(out["totals"]), **{k: {g: dict(v) for g, v in out[k].items()}
                                                  for k in ("byModel", "byContext", "byDay")}}

    def summary_matches(params, selected):
        def check():
            body = ok(client.get("/v1/usage", summary="true", **params))
            got = {k: v for k, v in body["summary"].items() if k != "byDay"}
            want = expected(selected)
            assert got == {k: v for k, v in want.items() if k != "byDay"}
            assert {d: v for d, v in body["summary"]["byDay"].items() if v["records"]} == want["byDay"]
        eventually(check)

    mine = [e for e in events if e["accountId"] == accounts[0]]
    assert len(mine) == len(plan)
    summary_matches({"accountId": accounts[0]}, mine)
    summary_matches({"accountId": accounts[0], "modelId": "gpt-4o"},
                    [e for e in mine if e["payload"]["modelId"] == "gpt-4o"])
    summary_matches({"accountId": accounts[0], "context": "system"},
                    [e for e in mine if e["payload"]["context"] == "system"])
    summary_matches({}, [e for e in read_topic(USAGE_TOPIC) if e["tenant"] == "tenant_a"])  # the whole tenant

    records = eventually(lambda: check_records(client, accounts[0], len(plan)))
    assert [(r["modelId"], r["context"], r["inputTokens"]) for r in records] == \
        [(m, c, i) for m, c, i, _, _ in reversed(plan)]
    claude = ok(client.get("/v1/usage", accountId=accounts[0], modelId="claude"))["usage"]
    assert [r["cachedTokens"] for r in claude] == [100]
    page = ok(client.get("/v1/usage", accountId=accounts[0], limit=3))
    rest = ok(client.get("/v1/usage", accountId=accounts[0], cursor=page["nextCursor"]))
    assert [r["id"] for r in page["usage"] + rest["usage"]] == [r["id"] for r in records]


def check_records(client, account_id, n):
    records = ok(client.get("/v1/usage", accountId=account_id))["usage"]
    assert len(records) == n
    return records


def expired(account_id):
    """For eventually(): the account's stream, once its last event is a hold's expiry."""
    events = read_topic(LEDGER_TOPIC, key=account_id)
    assert events[-1]["type"] == "ReservationExpired", events[-1]
    return events


def test_balance_as_of_equals_the_fold_of_the_log_up_to_that_time(client, stack):
    account_id, _ = new_account(client)
    marks = []

    def mark():
        time.sleep(0.02)
        marks.append(int(time.time() * 1000))
        time.sleep(0.02)

    mark()  # before the first credit: 0
    ok(client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 1000}))
    mark()
    rsv = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 400}))["reservation"]["id"]
    mark()
    ok(client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 100}))
    mark()
    ok(client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 250}))
    mark()
    ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 50, "expiresInSeconds": 1}))
    mark()
    events = eventually(lambda: expired(account_id))  # the server's expiry scan writes it a second later
    mark()
    for t in marks:
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z"
        balance, reserved = fold_balance([e for e in events if e["occurredAt"] <= iso])

        def as_of_matches():  # the expiry may still be on its way to the view
            body = ok(client.get("/v1/accounts/balance", accountId=account_id, asOf=iso))
            assert (body["balance"], body["reserved"], body["available"], body["asOf"]) == \
                (balance, reserved, balance - reserved, iso), iso

        eventually(as_of_matches)


def test_listings_of_accounts_and_reservations(client, other_tenant):
    ids = [new_account(client, 100)[0] for _ in range(3)]

    def listing():  # a tenant-wide listing is read-your-writes only with a position: the view may not have them yet
        listed, cursor = [], None
        while True:
            page = ok(client.get("/v1/accounts", limit=2, **({"cursor": cursor} if cursor else {})))
            listed += page["accounts"]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert set(ids) <= {a["id"] for a in listed}
        return listed

    listed = eventually(listing)
    assert len(listed) == len({a["id"] for a in listed})
    assert all(a["balance"] - a["reserved"] == a["available"] for a in listed)
    assert not set(ids) & {a["id"] for a in ok(other_tenant.get("/v1/accounts", limit=200))["accounts"]}

    account_id = ids[0]
    held = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 10}))["reservation"]["id"]
    done = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 20}))["reservation"]["id"]
    ok(client.post("/v1/reservations/cancel", {"reservationId": done}))
    every = ok(client.get("/v1/reservations", accountId=account_id))["reservations"]
    assert [(r["id"], r["status"]) for r in every] == [(done, "cancelled"), (held, "pending")]
    active = ok(client.get("/v1/reservations", accountId=account_id, activeOnly="true"))["reservations"]
    assert [r["id"] for r in active] == [held]
    assert other_tenant.get("/v1/reservations", accountId=account_id).status_code == 404


def test_report_parameters_are_validated(client):
    account_id, _ = new_account(client)
    for path, params, field in [
            ("/v1/transactions", {"accountId": account_id, "limit": "0"}, "limit"),
            ("/v1/transactions", {"accountId": account_id, "limit": "201"}, "limit"),
            ("/v1/transactions", {"accountId": account_id, "cursor": "garbage"}, "cursor"),
            ("/v1/transactions", {"accountId": account_id, "type": "teleport"}, "type"),
            ("/v1/transactions", {"accountId": account_id, "startDate": "yesterday"}, "startDate"),
            ("/v1/usage", {"accountId": account_id, "context": "everyone"}, "context"),
            ("/v1/usage", {"summary": "true", "startDate": "2020-01-01T00:00:00Z"}, "startDate"),
            ("/v1/accounts/balance", {"accountId": account_id, "asOf": "2026-13-01T00:00:00Z"}, "asOf"),
            ("/v1/reservations", {"accountId": account_id, "activeOnly": "maybe"}, "activeOnly")]:
        r = client.get(path, **params)
        assert r.status_code == 400, (path, params, r.text)
        assert r.json()["error"]["field"] == field, (path, params, r.text)
    r = client.get("/v1/usage")
    assert r.status_code == 400 and r.json()["error"]["field"] in ("accountId", "externalId"), r.text


def test_reversals_refund_and_correct_as_linked_transactions(client, other_tenant):
    account_id, _ = new_account(client)
    grant = ok(client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 500}))["transactionId"]
    fee = ok(client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 100}))["transactionId"]
    refund = client.post("/v1/transactions/reverse", {"transactionId": fee, "amount": 30, "description": "goodwill"},
                         headers={"Idempotency-Key": "rev-" + account_id})
    body = ok(refund)
    assert (body["reversalOf"], body["amount"], body["balance"]) == (fee, 30, 430)
    again = client.post("/v1/transactions/reverse", {"transactionId": fee, "amount": 30, "description": "goodwill"},
                        headers={"Idempotency-Key": "rev-" + account_id})
    assert again.status_code == 200 and again.json() == body and again.headers["Idempotent-Replayed"] == "true"
    too_much = client.post("/v1/transactions/reverse", {"transactionId": fee, "amount": 71})
    assert too_much.status_code == 400 and too_much.json()["error"]["details"]["remaining"] == 70
    assert client.post("/v1/transactions/reverse", {"transactionId": body["transactionId"]}).status_code == 400
    # Taking back the whole grant would overdraw: 430 are left of it.
    assert client.post("/v1/transactions/reverse", {"transactionId": grant}).status_code == 402
    correction = ok(client.post("/v1/transactions/reverse", {"transactionId": grant, "amount": 400}))
    assert correction["balance"] == 30
    assert other_tenant.post("/v1/transactions/reverse", {"transactionId": fee}).status_code == 404

    listed = ok(client.get("/v1/transactions", accountId=account_id))["transactions"]
    assert [(t["type"], t["amount"], t["balanceAfter"], t["reversalOf"]) for t in listed] == [
        ("reversal", -400, 30, grant), ("reversal", 30, 430, fee), ("debit", -100, 400, None), ("credit", 500, 500, None)]
    assert ok(client.get("/v1/accounts/balance", accountId=account_id))["balance"] == 30
    assert fold_balance(read_topic(LEDGER_TOPIC, key=account_id)) == (30, 0)
