"""The guide's six steps over REST, then the read model and the topics checked with third-party clients."""
from conftest import LEDGER_TOPIC, SHARED_DB, USAGE_TOPIC, fold_balance, read_topic, redis_hash


def test_the_guide_end_to_end(client, external_id):
    run_guide(client, external_id, "tenant_a", LEDGER_TOPIC, USAGE_TOPIC)


def run_guide(client, external_id, tenant, ledger_topic, usage_topic, redis_db=SHARED_DB):
    """The guide's steps by `client` (of `tenant`) on a stack writing to these topics; also run by
    test_compose_env.py on the native stack configured as compose would configure it."""
    # Step 2: create an account with the app's own user id.
    r = client.post("/v1/accounts/create", {"name": "Alice", "externalId": external_id, "email": "alice@example.com"})
    assert r.status_code == 200, r.text
    account = r.json()["account"]
    assert r.json()["success"] is True
    assert account["id"].startswith("acc_")
    assert account["externalId"] == external_id and account["name"] == "Alice"
    assert account["email"] == "alice@example.com"
    assert r.headers["Credits-Position"].startswith(ledger_topic + ":")

    # Step 3: add credits by externalId.
    r = client.post("/v1/accounts/credits/add", {"externalId": external_id, "amount": 1000,
                                                 "description": "Starter credits",
                                                 "metadata": {"source": "onboarding"}})
    assert r.status_code == 200, r.text
    added = r.json()
    assert added["success"] is True and added["balance"] == 1000 and added["added"] == 1000
    assert added["accountId"] == account["id"] and added["transactionId"].startswith("txn_")

    # Step 4: the balance right after the write already shows it (read-your-writes), not stale.
    r = client.get("/v1/accounts/balance", externalId=external_id)
    assert r.status_code == 200, r.text
    assert "Credits-Stale" not in r.headers
    assert r.json() == {"success": True, "accountId": account["id"], "externalId": external_id,
                        "balance": 1000, "reserved": 0, "available": 1000}

    # Step 5: reserve, confirm with the actual amount.
    r = client.post("/v1/reservations/create", {"externalId": external_id, "amount": 500})
    assert r.status_code == 200, r.text
    reservation = r.json()["reservation"]
    assert reservation["status"] == "pending" and reservation["amount"] == 500
    assert reservation["accountId"] == account["id"] and reservation["expiresAt"].endswith("Z")
    balance = client.get("/v1/accounts/balance", externalId=external_id).json()
    assert (balance["balance"], balance["reserved"], balance["available"]) == (1000, 500, 500)

    r = client.post("/v1/reservations/confirm", {"reservationId": reservation["id"], "actualAmount": 320})
    assert r.status_code == 200, r.text
    confirmed = r.json()
    assert confirmed["success"] is True
    assert confirmed["reservationId"] == reservation["id"] and confirmed["accountId"] == account["id"]
    assert confirmed["transactionId"].startswith("txn_")
    assert confirmed["amountCharged"] == 320 and confirmed["amountReleased"] == 180

    # ... or cancel: a second reservation, released whole.
    second = client.post("/v1/reservations/create", {"accountId": account["id"], "amount": 100}).json()["reservation"]
    r = client.post("/v1/reservations/cancel", {"reservationId": second["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["reservation"]["status"] == "cancelled"

    # Step 6: record usage linked to the confirmed transaction.
    r = client.post("/v1/usage/record", {"context": "customer", "transactionId": confirmed["transactionId"],
                                         "accountId": confirmed["accountId"], "modelId": "gpt-4o",
                                         "usageType": "text", "inputTokens": 1000, "outputTokens": 320})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["id"].startswith("use_") and usage["transactionId"] == confirmed["transactionId"]

    final = client.get("/v1/accounts/balance", accountId=account["id"]).json()
    assert (final["balance"], final["reserved"], final["available"]) == (680, 0, 680)
    got = client.get("/v1/accounts/get", externalId=external_id)
    assert got.status_code == 200 and got.json()["account"]["id"] == account["id"]

    # The read model in Redis, read with redis-cli.
    view = redis_hash("credits:account:{%s}" % account["id"], redis_db)
    assert (view["balance"], view["reserved"], view["externalId"]) == ("680", "0", external_id)
    assert redis_hash("credits:reservation:{%s}:%s" % (account["id"], second["id"]), redis_db)["status"] == "cancelled"

    # The log, read with kcat: the account stream in order, with the ids the API returned.
    events = read_topic(ledger_topic, key=account["id"])
    assert [e["type"] for e in events] == ["AccountCreated", "CreditsAdded", "CreditsReserved",
                                           "ReservationConfirmed", "CreditsReserved", "ReservationCancelled"]
    assert len({e["_partition"] for e in events}) == 1, "an account stream lives in one partition"
    assert events[1]["payload"]["transactionId"] == added["transactionId"]
    assert events[3]["payload"]["transactionId"] == confirmed["transactionId"]
    for e in events:
        assert e["tenant"] == tenant and e["accountId"] == account["id"] and e["schemaVersion"] == 1
        assert e["apiKeyId"].startswith("key_") and client.key not in str(e)
        assert e["occurredAt"].endswith("Z") and len(e["eventId"]) == 36
    assert fold_balance(events) == (680, 0)
    usage_events = read_topic(usage_topic, key=account["id"])
    assert [e["type"] for e in usage_events] == ["UsageRecorded"]
    assert usage_events[0]["payload"]["modelId"] == "gpt-4o" and usage_events[0]["payload"]["inputTokens"] == 1000


def test_client_position_is_honoured_and_validated(client, external_id):
    r = client.post("/v1/accounts/create", {"name": "P", "externalId": external_id})
    position = client.post("/v1/accounts/credits/add", {"externalId": external_id, "amount": 7}).headers["Credits-Position"]
    r = client.get("/v1/accounts/balance", headers={"Credits-Min-Position": position}, externalId=external_id)
    assert r.status_code == 200 and r.json()["balance"] == 7 and "Credits-Stale" not in r.headers
    r = client.get("/v1/accounts/balance", headers={"Credits-Min-Position": "nonsense"}, externalId=external_id)
    assert r.status_code == 400 and r.json()["error"]["field"] == "Credits-Min-Position"
    # A position the projector can never reach within the wait: answered, but marked stale.
    far = LEDGER_TOPIC + ":0:999999999999"
    r = client.get("/v1/accounts/balance", headers={"Credits-Min-Position": far}, externalId=external_id)
    assert r.status_code == 200 and r.headers.get("Credits-Stale") == "true"
