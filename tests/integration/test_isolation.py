"""Tenant isolation: tenant B, holding tenant A's account, reservation and ledger transaction ids, gets 404 on
every endpoint and changes nothing; tenant-wide listings and summaries never show another tenant's data."""
import uuid

import pytest

from conftest import LEDGER_TOPIC, USAGE_TOPIC, eventually, read_topic


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture()
def tenant_a(stack):
    """Tenant A's account with every kind of id: a pending and a confirmed reservation, a credit, a charge, a
    usage record. Fresh for each test: a test that gives tenant B an account under A's externalId (as the command
    test does) must not turn another test's cross-tenant 404 into B's own 200."""
    from conftest import Client
    a = Client(stack.url)
    external_id = "iso_" + uuid.uuid4().hex[:12]
    account = ok(a.post("/v1/accounts/create", {"name": "A", "externalId": external_id}))["account"]
    added = ok(a.post("/v1/accounts/credits/add", {"accountId": account["id"], "amount": 1000}))
    pending = ok(a.post("/v1/reservations/create", {"accountId": account["id"], "amount": 100}))["reservation"]
    held = ok(a.post("/v1/reservations/create", {"accountId": account["id"], "amount": 50}))["reservation"]
    charge = ok(a.post("/v1/reservations/confirm", {"reservationId": held["id"], "actualAmount": 30}))
    ok(a.post("/v1/usage/record", {"context": "customer", "accountId": account["id"], "transactionId":
                                   charge["transactionId"], "modelId": "iso-model", "usageType": "text",
                                   "inputTokens": 7, "outputTokens": 3}))
    eventually(lambda: usage_projected(a, account["id"]))  # the tenant's summary has it too, for the listing test
    return {"client": a, "account": account["id"], "externalId": external_id, "reservation": pending["id"],
            "credit": added["transactionId"], "charge": charge["transactionId"]}


def usage_projected(a, account_id):
    assert len(ok(a.get("/v1/usage", accountId=account_id))["usage"]) == 1


def a_state(a):
    """Everything B could have changed: A's balance view and A's streams in the log."""
    balance = ok(a["client"].get("/v1/accounts/balance", accountId=a["account"]))
    return ((balance["balance"], balance["reserved"]), len(read_topic(LEDGER_TOPIC, key=a["account"])),
            len(read_topic(USAGE_TOPIC, key=a["account"])))


def commands(a, b_account):
    """Every command, each with A's ids where B could name them."""
    acc, rsv, credit, charge = a["account"], a["reservation"], a["credit"], a["charge"]
    usage = {"context": "customer", "modelId": "m", "usageType": "text", "inputTokens": 1, "outputTokens": 1}
    return [
        ("/v1/accounts/credits/add", {"accountId": acc, "amount": 5}, "account_not_found"),
        ("/v1/accounts/credits/add", {"externalId": a["externalId"], "amount": 5}, "account_not_found"),
        ("/v1/accounts/credits/deduct", {"accountId": acc, "amount": 5}, "account_not_found"),
        ("/v1/reservations/create", {"accountId": acc, "amount": 5}, "account_not_found"),
        ("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 5}, "reservation_not_found"),
        ("/v1/reservations/cancel", {"reservationId": rsv}, "reservation_not_found"),
        ("/v1/usage/record", {**usage, "accountId": acc}, "account_not_found"),
        ("/v1/usage/record", {**usage, "accountId": b_account, "transactionId": charge}, "transaction_not_found"),
        ("/v1/transactions/reverse", {"transactionId": credit, "amount": 1}, "transaction_not_found"),
        ("/v1/transactions/reverse", {"transactionId": charge}, "transaction_not_found"),
    ]


def queries(a):
    acc = a["account"]
    return [
        ("/v1/accounts/get", {"accountId": acc}),
        ("/v1/accounts/get", {"externalId": a["externalId"]}),
        ("/v1/accounts/balance", {"accountId": acc}),
        ("/v1/accounts/balance", {"accountId": acc, "asOf": "2100-01-01T00:00:00Z"}),
        ("/v1/transactions", {"accountId": acc}),
        ("/v1/transactions", {"accountId": acc, "type": "charge"}),
        ("/v1/reservations", {"accountId": acc}),
        ("/v1/reservations", {"accountId": acc, "activeOnly": "true"}),
        ("/v1/usage", {"accountId": acc}),
        ("/v1/usage", {"accountId": acc, "summary": "true"}),
    ]


def test_every_command_with_another_tenants_ids_is_404_and_changes_nothing(tenant_a, other_tenant):
    b_account = ok(other_tenant.post("/v1/accounts/create", {"name": "B", "externalId": "iso_b_" +
                                                             uuid.uuid4().hex[:8]}))["account"]["id"]
    ok(other_tenant.post("/v1/accounts/credits/add", {"accountId": b_account, "amount": 100}))
    before = a_state(tenant_a)
    for path, body, code in commands(tenant_a, b_account):
        for headers in ({}, {"Idempotency-Key": "iso-" + uuid.uuid4().hex}):
            r = other_tenant.post(path, body, headers=headers)
            assert r.status_code == 404, (path, body, r.text)
            assert r.json()["error"]["code"] == code, (path, r.text)
            assert tenant_a["account"] not in r.text, (path, r.text)
    assert a_state(tenant_a) == before
    # The same externalId names a different account for each tenant: no collision, no leak.
    mine = ok(other_tenant.post("/v1/accounts/create", {"name": "B", "externalId": tenant_a["externalId"]}))
    assert mine["account"]["id"] != tenant_a["account"]
    assert a_state(tenant_a) == before


def test_every_query_with_another_tenants_ids_is_404(tenant_a, other_tenant):
    for path, params in queries(tenant_a):
        r = other_tenant.get(path, **params)
        assert r.status_code == 404, (path, params, r.text)
        assert r.json()["error"]["code"] == "account_not_found", (path, r.text)
        assert tenant_a["account"] not in r.text, (path, r.text)
        assert tenant_a["client"].get(path, **params).status_code == 200, (path, params)


def test_listings_and_summaries_never_show_another_tenants_data(tenant_a, other_tenant):
    seen, cursor = [], None
    while True:
        page = ok(other_tenant.get("/v1/accounts", limit=200, **({"cursor": cursor} if cursor else {})))
        seen += [a["id"] for a in page["accounts"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert tenant_a["account"] not in seen
    own = {a["id"] for a in ok(tenant_a["client"].get("/v1/accounts", limit=200))["accounts"]}
    assert not own & set(seen)
    summary = ok(other_tenant.get("/v1/usage", summary="true"))
    assert "iso-model" not in str(summary)
    assert "iso-model" in str(ok(tenant_a["client"].get("/v1/usage", summary="true")))
