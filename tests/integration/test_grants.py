"""Credit grants over the REST API on the real stack: burn order, holds that draw from grants, expiry while a hold
is open, over-capture, voids, bad input, and a consumer written before grants that must not drift.

What the writer holds is read from the writer itself (a deduction of far too much is refused with what is
`available` now); what was written is read from the log with kcat (conftest.read_topic) and folded here."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import BROKERS, LEDGER_TOPIC, USAGE_TOPIC, eventually, fold_balance, read_topic

OLD_TOTALS = Path(__file__).parent / "consumers_v1" / "totals.py"
AMOUNT_MAX = 2**53 - 1
CONSUMER_TIMEOUT_S = 120
ACCOUNTS = []  # the accounts new_account made: the old consumer's fold of each is compared with the API


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, status, code, field=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


def new_account(client):
    account_id = ok(client.post("/v1/accounts/create", {"name": "G", "externalId": "user_" + uuid.uuid4().hex[:12]}))[
        "account"]["id"]
    ACCOUNTS.append(account_id)
    return account_id


def add(client, account_id, amount, **terms):
    return ok(client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": amount, **terms}))


def spendable(client, account_id):
    """What the writer would let a deduction take now, from its own state (not the Redis view)."""
    error = refused(client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": AMOUNT_MAX}),
                    402, "insufficient_credits")
    return error["details"]["available"]


def events_of(account_id):
    return read_topic(LEDGER_TOPIC, key=account_id)


def fold_grants(events):
    """Per grant: (remaining, held) by the draws the events record, folded independently of the C++ code."""
    remaining, held, holds = {}, {}, {}
    for e in events:
        p, t = e["payload"], e["type"]
        draws = p.get("draws", [])
        if t == "CreditsAdded":
            remaining[p["grantId"]] = p["amount"]
            held[p["grantId"]] = 0
        elif t == "CreditsDeducted":
            for d in draws:
                remaining[d["grantId"]] -= d["amount"]
        elif t == "CreditsReserved":
            holds[p["reservationId"]] = draws
            for d in draws:
                remaining[d["grantId"]] -= d["amount"]
                held[d["grantId"]] += d["amount"]
        elif t in ("ReservationConfirmed", "ReservationCancelled", "ReservationExpired"):
            for d in holds.pop(p["reservationId"]):  # the hold ends: what it held goes back, then the charge leaves
                remaining[d["grantId"]] += d["amount"]
                held[d["grantId"]] -= d["amount"]
            if t == "ReservationConfirmed":
                for d in draws:
                    remaining[d["grantId"]] -= d["amount"]
        elif t == "TransactionReversed":
            sign = -1 if p["originalType"] == "CreditsAdded" else 1
            for d in draws:
                remaining[d["grantId"]] += sign * d["amount"]
    assert all(v >= 0 for v in remaining.values()) and all(v >= 0 for v in held.values()), (remaining, held)
    return {g: (remaining[g], held[g]) for g in remaining}


def grant_counters(events):
    """Per grant, every counter the grants listing shows, and its category, folded here from the draws."""
    grants, holds = {}, {}

    def move(draws, frm, into, sign=1):
        for d in draws:
            g = grants[d["grantId"]]
            if frm:
                g[frm] -= sign * d["amount"]
            if into:
                g[into] += sign * d["amount"]
    for e in events:
        p, t = e["payload"], e["type"]
        draws = p.get("draws", [])
        if t == "CreditsAdded":
            grants[p["grantId"]] = {"amount": p["amount"], "remaining": p["amount"], "held": 0, "charged": 0,
                                    "refunded": 0, "expired": 0, "voided": 0, "corrected": 0,
                                    "category": p.get("category", "paid"), "priority": p.get("priority", 50),
                                    "expiresAt": p.get("expiresAt")}
        elif t == "CreditsDeducted":
            move(draws, "remaining", {"grant_expired": "expired", "grant_voided": "voided"}.get(p.get("reason"),
                                                                                               "charged"))
        elif t == "CreditsReserved":
            holds[p["reservationId"]] = draws
            move(draws, "remaining", "held")
        elif t in ("ReservationConfirmed", "ReservationCancelled", "ReservationExpired"):
            move(holds.pop(p["reservationId"]), "held", "remaining")
            if t == "ReservationConfirmed":
                move(draws, "remaining", "charged")
        elif t == "TransactionReversed":
            if p["originalType"] == "CreditsAdded":
                move(draws, "remaining", "corrected")
            else:
                move(draws, None, "refunded")
                move(draws, None, "remaining")
    return grants


def position_of(events):
    return f"{LEDGER_TOPIC}:{events[-1]['_partition']}:{events[-1]['_offset']}"


def deductions(events, reason):
    return [e["payload"] for e in events if e["type"] == "CreditsDeducted" and e["payload"].get("reason") == reason]


def expiries_in_log(account_id, count, timeout_s=30):
    """The account's grant expiries once the log holds `count` of them (the writer's scan writes them)."""
    def written():
        found = deductions(events_of(account_id), "grant_expired")
        assert len(found) >= count, f"{len(found)} of {count} expiries written"
        return found
    return eventually(written, timeout_s=timeout_s)


def test_every_add_is_a_grant_with_its_terms(client):
    account_id = new_account(client)
    plain = add(client, account_id, 100)
    assert plain["grantId"] == "grt" + plain["transactionId"][3:]
    assert (plain["expiresAt"], plain["priority"], plain["category"], plain["costBasis"]) == (None, 50, "paid", None)
    trial = add(client, account_id, 50, category="promotional", priority=10, expiresInSeconds=3600,
                costBasis={"amount": 0, "currency": "USD"})
    assert (trial["priority"], trial["category"], trial["costBasis"]) == (10, "promotional",
                                                                          {"amount": 0, "currency": "USD"})
    added = {e["payload"]["grantId"]: e["payload"] for e in events_of(account_id) if e["type"] == "CreditsAdded"}
    assert set(added) == {plain["grantId"], trial["grantId"]}
    assert added[trial["grantId"]]["expiresAt"] == trial["expiresAt"]
    assert added[trial["grantId"]]["category"] == "promotional" and added[trial["grantId"]]["priority"] == 10


def test_deductions_and_holds_burn_in_the_documented_order(client):
    account_id = new_account(client)
    paid = add(client, account_id, 100)["grantId"]                                        # 50, never: burns last
    promo = add(client, account_id, 50, priority=10, category="promotional")["grantId"]  # lowest priority: first
    soon = add(client, account_id, 30, expiresInSeconds=3600)["grantId"]                  # 50, expires: before paid
    later = add(client, account_id, 20, expiresInSeconds=7200)["grantId"]

    taken = ok(client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 60}))
    assert taken["draws"] == [{"grantId": promo, "amount": 50}, {"grantId": soon, "amount": 10}]
    hold = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 50}))["reservation"]
    confirmed = ok(client.post("/v1/reservations/confirm", {"reservationId": hold["id"], "actualAmount": 35}))
    # The hold drew soon 20, later 20, paid 10; the charge takes them in that order, the rest returns to paid.
    assert confirmed["draws"] == [{"grantId": soon, "amount": 20}, {"grantId": later, "amount": 15}]
    assert (confirmed["amountCharged"], confirmed["amountReleased"], confirmed["balance"]) == (35, 15, 105)

    events = events_of(account_id)
    reserved = next(e["payload"] for e in events if e["type"] == "CreditsReserved")
    assert reserved["draws"] == [{"grantId": soon, "amount": 20}, {"grantId": later, "amount": 20},
                                 {"grantId": paid, "amount": 10}]
    assert fold_grants(events) == {paid: (100, 0), promo: (0, 0), soon: (0, 0), later: (5, 0)}
    assert fold_balance(events) == (105, 0) and spendable(client, account_id) == 105

    # A refund goes back to the grants the charge took from, last drawn first.
    answer = client.post("/v1/transactions/reverse", {"transactionId": confirmed["transactionId"], "amount": 20})
    refund = ok(answer)
    assert refund["balance"] == 125
    events = events_of(account_id)
    assert events[-1]["payload"]["draws"] == [{"grantId": later, "amount": 15}, {"grantId": soon, "amount": 5}]
    assert fold_grants(events)[soon] == (5, 0)

    # The transactions listing says which credits each movement used.
    listed = ok(client.get("/v1/transactions", headers={"Credits-Min-Position": answer.headers["Credits-Position"]},
                           accountId=account_id))["transactions"]
    by_id = {t["id"]: t for t in listed}
    assert by_id[taken["transactionId"]]["draws"] == taken["draws"]
    assert by_id[confirmed["transactionId"]]["draws"] == confirmed["draws"]
    assert by_id[refund["transactionId"]]["draws"] == events[-1]["payload"]["draws"]
    assert {t["grantId"] for t in listed if t["type"] == "credit"} == {paid, promo, soon, later}


def test_a_grant_expires_while_a_hold_on_it_is_open(client):
    account_id = new_account(client)
    trial = add(client, account_id, 100, category="promotional", expiresInSeconds=6)["grantId"]
    paid = add(client, account_id, 50)["grantId"]
    confirm_hold = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 40}))["reservation"]
    cancel_hold = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 30}))["reservation"]
    held = [e["payload"]["draws"] for e in events_of(account_id) if e["type"] == "CreditsReserved"]
    assert held == [[{"grantId": trial, "amount": 40}], [{"grantId": trial, "amount": 30}]], "the expiring grant first"

    # The unheld 30 of the trial expires; the held 70 stays held. (Six seconds may pass before here on a slow
    # machine, so nothing above depends on the grant being unexpired.)
    [expiry] = expiries_in_log(account_id, 1)
    assert (expiry["grantId"], expiry["amount"], expiry["draws"]) == (trial, 30, [{"grantId": trial, "amount": 30}])
    assert spendable(client, account_id) == 50

    # Confirm after the expiry charges the held credits; what it releases of the expired grant expires at once.
    confirmed = ok(client.post("/v1/reservations/confirm", {"reservationId": confirm_hold["id"], "actualAmount": 25}))
    # Its balance is after the charge; the expiry of what it released follows it in the same transaction.
    assert (confirmed["amountCharged"], confirmed["amountReleased"], confirmed["balance"]) == (25, 15, 95)
    assert spendable(client, account_id) == 50
    # Cancel returns all of its hold to the expired grant, which expires it at once.
    cancelled = ok(client.post("/v1/reservations/cancel", {"reservationId": cancel_hold["id"]}))
    assert cancelled["amountReleased"] == 30
    assert spendable(client, account_id) == 50

    events = events_of(account_id)
    assert sorted(d["amount"] for d in deductions(events, "grant_expired")) == [15, 30, 30]
    assert fold_grants(events) == {trial: (0, 0), paid: (50, 0)}
    assert fold_balance(events) == (50, 0)
    # Nothing is left to expire: no further expiry is ever written.
    time.sleep(1)
    assert len(deductions(events_of(account_id), "grant_expired")) == 3


def test_overcapture_charges_the_excess_or_refuses_and_keeps_the_hold(client):
    account_id = new_account(client)
    add(client, account_id, 100)
    hold = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 40}))["reservation"]
    before = len(events_of(account_id))

    refused(client.post("/v1/reservations/confirm", {"reservationId": hold["id"], "actualAmount": 70}),
            400, "invalid_request", "actualAmount")
    refused(client.post("/v1/reservations/confirm",
                        {"reservationId": hold["id"], "actualAmount": 70, "allowOvercapture": "yes"}),
            400, "invalid_request", "allowOvercapture")
    error = refused(client.post("/v1/reservations/confirm",
                                {"reservationId": hold["id"], "actualAmount": 200, "allowOvercapture": True}),
                    402, "insufficient_credits", "actualAmount")
    assert error["details"] == {"needed": 160, "available": 60}

    confirmed = ok(client.post("/v1/reservations/confirm",
                               {"reservationId": hold["id"], "actualAmount": 70, "allowOvercapture": True}))
    assert (confirmed["amountCharged"], confirmed["amountReleased"], confirmed["overcaptured"],
            confirmed["balance"]) == (70, 0, 30, 30)
    events = events_of(account_id)
    assert [e["type"] for e in events[before:]] == ["ReservationConfirmed", "CreditsDeducted"], \
        "the refusals wrote nothing; the over-capture is the confirm of the whole hold and its deduction"
    confirm, excess = events[before]["payload"], events[before + 1]["payload"]
    assert (confirm["charged"], confirm["released"], confirm["overcaptured"]) == (40, 0, 30)
    assert (excess["reason"], excess["amount"], excess["reservationId"], excess["transactionId"]) == \
        ("overcapture", 30, hold["id"], confirmed["overcaptureTransactionId"])
    assert events[before + 1]["_offset"] == events[before]["_offset"] + 1
    assert fold_balance(events) == (30, 0) and spendable(client, account_id) == 30


def test_a_void_removes_the_unheld_remainder_and_what_holds_return_later(client, other_tenant):
    account_id = new_account(client)
    promo = add(client, account_id, 100, category="promotional")["grantId"]
    hold = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 30}))["reservation"]

    refused(other_tenant.post("/v1/grants/void", {"grantId": promo}), 404, "grant_not_found", "grantId")
    refused(client.post("/v1/grants/void", {"grantId": "grt_nonsense"}), 404, "grant_not_found", "grantId")
    voided = ok(client.post("/v1/grants/void", {"grantId": promo}))
    assert (voided["grantId"], voided["voided"], voided["balance"]) == (promo, 70, 30)
    error = refused(client.post("/v1/grants/void", {"grantId": promo}), 409, "grant_not_active", "grantId")
    assert error["details"] == {"status": "voided"}

    ok(client.post("/v1/reservations/cancel", {"reservationId": hold["id"]}))
    events = events_of(account_id)
    assert [d["amount"] for d in deductions(events, "grant_voided")] == [70, 30]
    assert fold_balance(events) == (0, 0) and spendable(client, account_id) == 0


def test_bad_grant_terms_get_400_with_the_field_and_write_nothing(client):
    account_id = new_account(client)
    before = len(events_of(account_id))
    past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    cases = [({"expiresAt": past}, "expiresAt"),
             ({"expiresAt": "tomorrow"}, "expiresAt"),
             ({"expiresAt": "2099-01-01T00:00:00Z", "expiresInSeconds": 60}, "expiresAt"),
             ({"expiresInSeconds": 0}, "expiresInSeconds"),
             ({"expiresInSeconds": 1.5}, "expiresInSeconds"),
             ({"priority": 101}, "priority"),
             ({"priority": -1}, "priority"),
             ({"priority": "high"}, "priority"),
             ({"category": "free"}, "category"),
             ({"category": 1}, "category"),
             ({"costBasis": 999}, "costBasis"),
             ({"costBasis": {"amount": 999}}, "costBasis.currency"),
             ({"costBasis": {"amount": 9.99, "currency": "USD"}}, "costBasis.amount"),
             ({"costBasis": {"amount": -1, "currency": "USD"}}, "costBasis.amount"),
             ({"costBasis": {"amount": 999, "currency": "usd"}}, "costBasis.currency"),
             ({"costBasis": {"amount": 999, "currency": "USD", "tax": 1}}, "costBasis.tax")]
    for terms, field in cases:
        refused(client.post("/v1/accounts/credits/add", {"accountId": account_id, "amount": 10, **terms}),
                400, "invalid_request", field)
    refused(client.post("/v1/grants/void", {}), 400, "invalid_request", "grantId")
    assert len(events_of(account_id)) == before


def test_an_accepted_add_replays_after_its_expiry_has_passed(client):
    account_id = new_account(client)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
    body = {"accountId": account_id, "amount": 10, "expiresAt": expires}
    key = {"Idempotency-Key": "grant-" + uuid.uuid4().hex}
    first = ok(client.post("/v1/accounts/credits/add", body, headers=key))
    time.sleep(5)
    again = client.post("/v1/accounts/credits/add", body, headers=key)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true", again.text
    assert again.json()["grantId"] == first["grantId"]
    refused(client.post("/v1/accounts/credits/add", body, headers={"Idempotency-Key": "grant-" + uuid.uuid4().hex}),
            400, "invalid_request", "expiresAt")


def test_a_consumer_written_before_grants_still_folds_every_balance(client, other_tenant):
    """A copy of totals.py as it was before grants (consumers_v1/) folds a log that holds every new case (expiries,
    also of what a hold releases, voids, over-captures, refunds to grants) and must agree with the API."""
    ACCOUNTS.clear()
    test_deductions_and_holds_burn_in_the_documented_order(client)
    test_a_grant_expires_while_a_hold_on_it_is_open(client)
    test_overcapture_charges_the_excess_or_refuses_and_keeps_the_hold(client)
    test_a_void_removes_the_unheld_remainder_and_what_holds_return_later(client, other_tenant)
    out = subprocess.run([sys.executable, OLD_TOTALS, "--brokers", BROKERS, "--ledger-topic", LEDGER_TOPIC,
                          "--usage-topic", USAGE_TOPIC, "--until-end"],
                         capture_output=True, text=True, timeout=CONSUMER_TIMEOUT_S, check=True)
    totals = json.loads(out.stdout)  # its "skipped" counts the shared topic's hostile records too: not checked
    last = {}
    for e in read_topic(LEDGER_TOPIC):
        if e["accountId"] in ACCOUNTS:
            last[e["accountId"]] = f"{LEDGER_TOPIC}:{e['_partition']}:{e['_offset']}"
    assert len(last) == 4
    for account_id in ACCOUNTS:
        api = ok(client.get("/v1/accounts/balance", headers={"Credits-Min-Position": last[account_id]},
                            accountId=account_id))
        mine = totals["accounts"][account_id]
        assert (mine["balance"], mine["reserved"], mine["available"]) == \
            (api["balance"], api["reserved"], api["available"]), account_id


def test_a_grant_expires_once_across_a_restart_from_a_snapshot(stack, client):
    """The grant and its hold are in the snapshot the restarted writer loads; its expiry comes after the restart,
    exactly once, and a second restart after it neither repeats nor loses it."""
    from test_snapshots import make_traffic, open_accounts, startup
    account_id = new_account(client)
    trial = add(client, account_id, 100, expiresInSeconds=20)
    expires_at = time.time() + 20
    add(client, account_id, 50)
    hold = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 30}))["reservation"]
    events_after, _ = make_traffic(client, open_accounts(client, "grants_" + uuid.uuid4().hex[:8], 4))

    stack.restart()
    client = type(client)(stack.url)
    restarted = startup(stack)
    assert restarted["fromSnapshot"] is True and restarted["eventsReplayed"] < events_after, restarted

    time.sleep(max(0.0, expires_at - time.time()))
    expiries_in_log(account_id, 1)
    assert spendable(client, account_id) == 50
    stack.restart()
    client = type(client)(stack.url)
    assert spendable(client, account_id) == 50
    confirmed = ok(client.post("/v1/reservations/confirm", {"reservationId": hold["id"], "actualAmount": 20}))
    assert confirmed["draws"] == [{"grantId": trial["grantId"], "amount": 20}]
    events = events_of(account_id)
    assert [d["amount"] for d in deductions(events, "grant_expired")] == [70, 10], "once, and the release at once"
    assert fold_balance(events) == (50, 0) and spendable(client, account_id) == 50


def test_the_grants_view_is_the_fold_of_the_log(client):
    """The grants listing, the balance by category and what expires soon, read from the Redis view, equal a fold of
    the log done here: for a fresh account with every kind of movement, and for those the other tests made."""
    account_id = new_account(client)
    trial = add(client, account_id, 100, category="promotional", priority=10, expiresInSeconds=3 * 86400)
    paid = add(client, account_id, 60, costBasis={"amount": 1299, "currency": "EUR"})
    hold = ok(client.post("/v1/reservations/create", {"accountId": account_id, "amount": 50}))["reservation"]
    taken = ok(client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 70}))
    ok(client.post("/v1/reservations/confirm", {"reservationId": hold["id"], "actualAmount": 20}))
    ok(client.post("/v1/transactions/reverse", {"transactionId": taken["transactionId"], "amount": 15}))
    ok(client.post("/v1/transactions/reverse", {"transactionId": paid["transactionId"], "amount": 5}))

    for acc in ACCOUNTS:
        events = events_of(acc)
        expected = grant_counters(events)
        at = {"Credits-Min-Position": position_of(events)}
        listed, cursor = [], None
        while True:  # one grant a page: the cursor walks them all, newest first
            page = ok(client.get("/v1/accounts/grants", headers=at, accountId=acc, limit=1,
                                 **({"cursor": cursor} if cursor else {})))
            listed += page["grants"]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert [g["id"] for g in listed] == list(reversed(list(expected))), acc
        for g in listed:
            want = expected[g["id"]]
            assert {k: g[k] for k in want} == want, (acc, g)
            assert g["amount"] - g["corrected"] == g["remaining"] + g["held"] + g["charged"] - g["refunded"] + \
                g["expired"] + g["voided"], g
        balance = ok(client.get("/v1/accounts/balance", headers=at, accountId=acc, include="grants"))
        promotional = sum(w["remaining"] + w["held"] for w in expected.values() if w["category"] == "promotional")
        assert balance["byCategory"] == {"paid": balance["balance"] - promotional, "promotional": promotional}, acc
        assert balance["balance"] == sum(w["remaining"] + w["held"] for w in expected.values()), acc

    # The fresh account: the trial (3 days) is all that expires within a week, and nothing within a day.
    at = {"Credits-Min-Position": position_of(events_of(account_id))}
    grants = {g["id"]: g for g in ok(client.get("/v1/accounts/grants", headers=at, accountId=account_id))["grants"]}
    assert grants[paid["grantId"]]["costBasis"] == {"amount": 1299, "currency": "EUR"}
    assert grants[trial["grantId"]]["status"] == "active" and grants[trial["grantId"]]["expiresAt"] == trial["expiresAt"]
    plain = ok(client.get("/v1/accounts/balance", headers=at, accountId=account_id))
    assert set(plain) == {"success", "accountId", "externalId", "balance", "reserved", "available"}, \
        "without include=grants the answer keeps the upstream shape"
    week = ok(client.get("/v1/accounts/balance", headers=at, accountId=account_id, include="grants"))
    day = ok(client.get("/v1/accounts/balance", headers=at, accountId=account_id, expiringWithinDays=1))
    trial_left = grants[trial["grantId"]]["remaining"] + grants[trial["grantId"]]["held"]
    assert trial_left > 0
    assert (week["expiringSoon"], week["expiringWithinDays"]) == (trial_left, 7)
    assert (day["expiringSoon"], day["expiringWithinDays"]) == (0, 1)
    refused(client.get("/v1/accounts/balance", accountId=account_id, expiringWithinDays=3651), 400,
            "invalid_request", "expiringWithinDays")
    refused(client.get("/v1/accounts/balance", accountId=account_id, include="all"), 400, "invalid_request", "include")
    voided = ok(client.get("/v1/accounts/grants", headers=at, accountId=account_id, status="voided"))["grants"]
    assert voided == []
    refused(client.get("/v1/accounts/grants", accountId=account_id, status="gone"), 400, "invalid_request", "status")


def test_the_credits_report_counts_each_movement_by_day_and_category(client, other_tenant):
    """The tenant's report before and after known movements of a fresh account: the differences are exactly those
    movements. (Expiries of other tests' grants may land meanwhile, so `expired` is only checked not to fall.)"""
    def report(at=None):
        return ok(client.get("/v1/reports/credits", headers=at or {},
                             startDate=time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400))))

    before, theirs = report(), ok(other_tenant.get("/v1/reports/credits"))
    account_id = new_account(client)
    promo = add(client, account_id, 80, category="promotional")
    add(client, account_id, 40)
    taken = ok(client.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 90}))  # 80 promo, 10 paid
    ok(client.post("/v1/transactions/reverse", {"transactionId": taken["transactionId"], "amount": 30}))  # 10, 20
    ok(client.post("/v1/grants/void", {"grantId": promo["grantId"]}))  # the 20 refunded to it
    after = report({"Credits-Min-Position": position_of(events_of(account_id))})
    diff = {m: {c: after["totals"][m][c] - before["totals"][m][c] for c in ("paid", "promotional")}
            for m in after["totals"]}
    expired = diff.pop("expired")
    assert diff == {"granted": {"paid": 40, "promotional": 80}, "consumed": {"paid": 10, "promotional": 80},
                    "refunded": {"paid": 10, "promotional": 20}, "voided": {"paid": 0, "promotional": 20},
                    "corrected": {"paid": 0, "promotional": 0}}
    assert min(expired.values()) >= 0
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert today in after["byDay"] and after["endDate"] == today
    assert sum(day["granted"]["promotional"] for day in after["byDay"].values()) == \
        after["totals"]["granted"]["promotional"]
    # Another tenant's report does not see these.
    assert ok(other_tenant.get("/v1/reports/credits"))["totals"]["granted"] == theirs["totals"]["granted"]
    refused(client.get("/v1/reports/credits", startDate="2020-01-01T00:00:00Z"), 400, "invalid_request", "startDate")


def test_a_balance_as_of_a_time_before_an_expiry_still_has_the_expired_credits(client):
    account_id = new_account(client)
    add(client, account_id, 30, expiresInSeconds=2)
    [expiry] = expiries_in_log(account_id, 1)
    events = events_of(account_id)
    expired_at = next(e for e in events if e["payload"].get("reason") == "grant_expired")["occurredAt"]
    at = {"Credits-Min-Position": position_of(events)}
    assert ok(client.get("/v1/accounts/balance", headers=at, accountId=account_id))["balance"] == 0
    before = ok(client.get("/v1/accounts/balance", headers=at, accountId=account_id,
                           asOf=events[1]["occurredAt"], include="grants"))
    assert before["balance"] == 30 and "byCategory" not in before
    assert ok(client.get("/v1/accounts/balance", headers=at, accountId=account_id, asOf=expired_at))["balance"] == 0
    assert expiry["amount"] == 30
