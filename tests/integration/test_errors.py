"""Every status code of the table, each with the JSON error body, and nothing written on a refusal."""
import pytest

from conftest import LEDGER_TOPIC, read_topic


def error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


@pytest.fixture()
def funded(client, external_id):
    assert client.post("/v1/accounts/create", {"name": "E", "externalId": external_id}).status_code == 200
    assert client.post("/v1/accounts/credits/add", {"externalId": external_id, "amount": 100}).status_code == 200
    return external_id


def test_missing_or_unknown_key_is_401(client, stack):
    import requests
    r = requests.get(stack.url + "/v1/accounts/balance?externalId=x")
    error(r, 401, "unauthorized")
    r = requests.post(stack.url + "/v1/accounts/create", json={"name": "x"}, headers={"X-API-Key": "ck_nope_nope"})
    error(r, 401, "unauthorized")


@pytest.mark.parametrize("amount", [0, -1, 1.5, "100", None, True, 2**53])
def test_invalid_amounts_are_400_with_the_field(client, funded, amount):
    e = error(client.post("/v1/accounts/credits/add", {"externalId": funded, "amount": amount}), 400, "invalid_request")
    assert e["field"] == "amount"


def test_malformed_json_is_400(client):
    error(client.post("/v1/accounts/create", None, raw="{not json"), 400, "invalid_request")
    error(client.post("/v1/accounts/create", None, raw="[1,2]"), 400, "invalid_request")


def test_unknown_account_and_reservation_are_404(client, other_tenant, funded):
    error(client.post("/v1/accounts/credits/add", {"externalId": "nobody_" + funded, "amount": 1}), 404, "account_not_found")
    error(client.get("/v1/accounts/balance", externalId="nobody_" + funded), 404, "account_not_found")
    error(client.post("/v1/reservations/confirm", {"reservationId": "rsv_nope", "actualAmount": 1}), 404,
          "reservation_not_found")
    # Another tenant's account is indistinguishable from a missing one.
    account_id = client.get("/v1/accounts/balance", externalId=funded).json()["accountId"]
    error(other_tenant.get("/v1/accounts/balance", accountId=account_id), 404, "account_not_found")
    error(other_tenant.post("/v1/accounts/credits/deduct", {"accountId": account_id, "amount": 1}), 404, "account_not_found")


def test_overdraft_is_402_with_needed_and_available(client, funded):
    e = error(client.post("/v1/reservations/create", {"externalId": funded, "amount": 101}), 402, "insufficient_credits")
    assert e["details"] == {"needed": 101, "available": 100}
    e = error(client.post("/v1/accounts/credits/deduct", {"externalId": funded, "amount": 500}), 402, "insufficient_credits")
    assert e["details"]["available"] == 100
    assert client.get("/v1/accounts/balance", externalId=funded).json()["balance"] == 100


def test_conflicts_are_409(client, funded):
    error(client.post("/v1/accounts/create", {"name": "again", "externalId": funded}), 409, "account_exists")
    rsv = client.post("/v1/reservations/create", {"externalId": funded, "amount": 10}).json()["reservation"]["id"]
    assert client.post("/v1/reservations/cancel", {"reservationId": rsv}).status_code == 200
    e = error(client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 5}), 409,
              "reservation_not_pending")
    assert e["details"]["status"] == "cancelled"


def test_confirm_above_the_hold_is_400(client, funded):
    rsv = client.post("/v1/reservations/create", {"externalId": funded, "amount": 10}).json()["reservation"]["id"]
    e = error(client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 11}), 400, "invalid_request")
    assert e["field"] == "actualAmount"


def test_usage_with_a_foreign_transaction_is_409_and_unknown_is_404(client, funded, external_id):
    other = "other_" + external_id
    client.post("/v1/accounts/create", {"name": "O", "externalId": other})
    txn = client.post("/v1/accounts/credits/add", {"externalId": other, "amount": 5}).json()["transactionId"]
    body = {"context": "customer", "externalId": funded, "modelId": "m", "inputTokens": 1, "outputTokens": 1}
    error(client.post("/v1/usage/record", dict(body, transactionId=txn)), 409, "transaction_account_mismatch")
    unknown = txn[:-1] + ("1" if txn[-1] == "0" else "0")  # same account, an id that was never issued
    error(client.post("/v1/usage/record", dict(body, transactionId=unknown)), 404, "transaction_not_found")
    error(client.post("/v1/usage/record", dict(body, context="robot")), 400, "invalid_request")


def test_body_too_large_is_413(client):
    r = client.post("/v1/accounts/create", None, raw='{"name":"' + "x" * (70 * 1024) + '"}')
    error(r, 413, "payload_too_large")


def test_unknown_route_is_404_and_wrong_method_405(client):
    error(client.get("/v1/nothing"), 404, "not_found")
    error(client.get("/v1/accounts/create"), 405, "method_not_allowed")


def test_refusals_write_nothing(client, funded):
    account_id = client.get("/v1/accounts/balance", externalId=funded).json()["accountId"]
    before = len(read_topic(LEDGER_TOPIC, key=account_id))
    client.post("/v1/reservations/create", {"externalId": funded, "amount": 10**6})
    client.post("/v1/accounts/credits/add", {"externalId": funded, "amount": -3})
    client.post("/v1/accounts/create", {"name": "again", "externalId": funded})
    assert len(read_topic(LEDGER_TOPIC, key=account_id)) == before
