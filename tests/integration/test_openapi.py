"""docs/openapi.yaml against the server: the document is valid OpenAPI 3.1, it names every route and error code
the code has, and every response the server gives in the guide's flow and in the error cases is one the document
lists for that operation, with a body valid against the declared schema and the declared headers.

The schemas are JSON Schema 2020-12 (OpenAPI 3.1's dialect); `$ref`s are resolved against the whole document
through a `referencing` registry, so a response schema is checked exactly as the document states it.
"""
import json
import re
import time
import uuid

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conftest import API_KEY, LEDGER_TOPIC, REPO

DOC_PATH = REPO / "docs" / "openapi.yaml"
DOC_URI = "urn:credits:openapi"
MAX = 2**53 - 1

SPEC = yaml.safe_load(DOC_PATH.read_text())
REGISTRY = Registry().with_resource(DOC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012))

MUTATIONS = ["/v1/accounts/create", "/v1/accounts/credits/add", "/v1/accounts/credits/deduct",
             "/v1/reservations/create", "/v1/reservations/confirm", "/v1/reservations/cancel", "/v1/usage/record",
             "/v1/transactions/reverse", "/v1/grants/void", "/v1/admin/events/void"]
QUERIES = ["/v1/accounts/get", "/v1/accounts/balance", "/v1/accounts", "/v1/transactions", "/v1/reservations",
           "/v1/usage", "/v1/accounts/grants", "/v1/reports/credits"]


# ---- the document as a validator ------------------------------------------------------------------------------

def pointer(*parts):
    """A JSON pointer (RFC 6901) to parts of the document."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def at(ptr):
    node = SPEC
    for part in ptr.split("/")[1:]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def follow(obj, where):
    """Follows OpenAPI Reference Objects (`$ref` to #/components/...); returns the object and its pointer."""
    seen = set()
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/") and ref not in seen, f"unresolvable or circular reference {ref} at {where}"
        seen.add(ref)
        where = ref[1:]
        obj = at(where)
    return obj, where


def validator(schema_pointer):
    """A Draft 2020-12 validator for the schema at `schema_pointer`, its references resolved in the document."""
    return Draft202012Validator({"$ref": DOC_URI + "#" + schema_pointer}, registry=REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(instance, schema_pointer, what):
    errors = sorted(validator(schema_pointer).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{what} does not match {schema_pointer}:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors) + f"\nbody: {instance}"


def check(r, path, method):
    """The response `r` to `method path` must be one the document lists, with a body valid against the declared
    schema and every required header present and valid. Returns `r`."""
    op_ptr = pointer("paths", path, method.lower())
    operation = SPEC["paths"].get(path, {}).get(method.lower())
    assert operation is not None, f"the document has no operation {method.upper()} {path}"
    status = str(r.status_code)
    responses = operation["responses"]
    assert status in responses, (f"{method.upper()} {path} answered {status}, a status the document does not list "
                                 f"for it (it lists {sorted(responses)}): {r.text}")
    response, where = follow(responses[status], op_ptr + pointer("responses", status))
    what = f"{method.upper()} {path} {status}"

    media = r.headers.get("Content-Type", "").split(";")[0].strip()
    assert media in response.get("content", {}), f"{what}: Content-Type {media!r} is not documented"
    assert_valid(r.json(), where + pointer("content", media, "schema"), f"{what} body")

    for name, header in response.get("headers", {}).items():
        header, header_ptr = follow(header, where + pointer("headers", name))
        value = r.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{what}: required header {name} is missing ({dict(r.headers)})"
            continue
        schema, _ = follow(header["schema"], header_ptr + "/schema")
        instance = int(value) if schema.get("type") == "integer" and re.fullmatch(r"[0-9]+", value) else value
        assert_valid(instance, header_ptr + "/schema", f"{what} header {name}")
    return r


def expect(r, path, method, status, code=None):
    """check(), then the status (and for errors the code) this case must give."""
    check(r, path, method)
    assert r.status_code == status, f"{method.upper()} {path}: expected {status}, got {r.status_code}: {r.text}"
    if code is not None:
        assert r.json()["error"]["code"] == code, r.text
    if status == 200 and method.lower() == "post" and path in MUTATIONS:
        assert r.headers.get("Credits-Position"), f"successful {path} without Credits-Position"
    return r.json()


def fake_response(status, body, headers=None):
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode()
    r.headers.update({"Content-Type": "application/json", "X-Request-Id": "req_0000000000000000", **(headers or {})})
    return r


# ---- the document itself --------------------------------------------------------------------------------------

def test_document_is_valid_openapi_3_1():
    assert SPEC["openapi"].startswith("3.1")
    validate_openapi(SPEC)


def test_every_route_of_the_server_is_documented_with_its_method():
    # The HTTP server is split by concern (http_server.cpp, http_commands.cpp, http_queries.cpp, ...).
    source = "".join(p.read_text() for p in sorted((REPO / "command-api" / "src").glob("*.cpp")))
    routes = set(re.findall(r'"(/v1/[a-z/]+)"', source))
    assert routes == set(MUTATIONS) | set(QUERIES), "update MUTATIONS/QUERIES and the document"
    assert set(SPEC["paths"]) == routes | {"/healthz", "/readyz"}
    for path in MUTATIONS:
        assert set(SPEC["paths"][path]) == {"post"}, path
    for path in QUERIES:
        assert set(SPEC["paths"][path]) == {"get"}, path


def test_error_codes_and_statuses_match_the_code():
    domain = (REPO / "common" / "src" / "domain.cpp").read_text()
    to_string = domain[domain.index("to_string(error_code code)"):]
    to_string = to_string[:to_string.index("\n}\n")]
    names = dict(re.findall(r'case error_code::(\w+):\s*return "(\w+)";', to_string))
    assert names, "no error_code cases found in to_string(error_code)"

    # Every (code, status) pair of http_status() is a response the document declares for that status.
    responses_cpp = (REPO / "command-api" / "src" / "responses.cpp").read_text()
    table = responses_cpp[responses_cpp.index("unsigned http_status(error_code code)"):]
    table = table[:table.index("\n}\n")]
    status_of, pending = {}, []
    for name, status in re.findall(r"case error_code::(\w+):(?:\s*return (\d+);)?", table):
        pending.append(name)
        if status:
            status_of.update({n: status for n in pending})
            pending = []
    assert set(status_of) == set(names), "http_status() and to_string() disagree on the codes"
    # The codes only the HTTP side gives (http_error: authentication, routing, limits), with their statuses.
    rows = responses_cpp[responses_cpp.index("http_errors[] = {"):]
    rows = rows[:rows.index("};")]
    http_rows = re.findall(r'\{(\d{3}), "(\w+)"\}', rows)
    assert http_rows, "no rows found in the http_errors table"
    for status, code in http_rows:
        names["http_error::" + code] = code
        status_of["http_error::" + code] = status
    assert set(SPEC["components"]["schemas"]["ErrorCode"]["enum"]) == set(names.values())
    declared = {}
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                _, where = follow(response, pointer("paths", path, method, "responses", status))
                declared.setdefault(status, set()).add(where + pointer("content", "application/json", "schema"))
    for name, status in status_of.items():
        body = {"success": False, "error": {"code": names[name], "message": "m"}}
        assert any(validator(p).is_valid(body) for p in declared.get(status, ())), \
            f"no {status} response in the document admits code {names[name]}"


def test_headers_are_declared_where_the_server_sends_them():
    scheme = SPEC["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert SPEC["security"] == [{"apiKey": []}]
    assert SPEC["paths"]["/healthz"]["get"]["security"] == []
    for path in MUTATIONS + QUERIES:
        method = "post" if path in MUTATIONS else "get"
        op = SPEC["paths"][path][method]
        params = {follow(p, "")[0]["name"] for p in op["parameters"]}
        ok, _ = follow(op["responses"]["200"], "")
        headers = {name: follow(h, "")[0] for name, h in ok["headers"].items()}
        assert headers["X-Request-Id"]["required"] is True
        if method == "post":
            assert {"Idempotency-Key", "X-Request-Id"} <= params, path
            assert headers["Credits-Position"]["required"] is True, path
            assert "Idempotent-Replayed" in headers, path
        else:
            tenant_wide = {"/v1/accounts", "/v1/reports/credits"}  # the tenant's accounts, its credits: no account
            assert {"Credits-Min-Position", "X-Request-Id"} <= params, path
            assert path in tenant_wide or {"accountId", "externalId"} <= params, path
            assert "Credits-Stale" in headers, path
        unavailable, _ = follow(op["responses"]["503"], "")
        assert follow(unavailable["headers"]["Retry-After"], "")[0]["required"] is True
        not_allowed, _ = follow(op["responses"]["405"], "")
        assert follow(not_allowed["headers"]["Allow"], "")[0]["required"] is True


def test_the_checker_rejects_undocumented_statuses_bodies_and_headers():
    """The checker itself: drift in status, body or headers fails."""
    good = {"success": True, "accountId": "acc_" + "0" * 24, "externalId": "", "balance": 1, "reserved": 0,
            "available": 1}
    check(fake_response(200, good), "/v1/accounts/balance", "get")
    with pytest.raises(AssertionError, match="does not list"):
        check(fake_response(402, {"success": False, "error": {"code": "insufficient_credits", "message": "m"}}),
              "/v1/accounts/balance", "get")
    with pytest.raises(AssertionError, match="does not list"):
        check(fake_response(500, {"success": False, "error": {"code": "internal", "message": "m"}}),
              "/v1/accounts/credits/add", "post")
    with pytest.raises(AssertionError, match="does not match"):
        check(fake_response(200, dict(good, surprise=1)), "/v1/accounts/balance", "get")
    with pytest.raises(AssertionError, match="does not match"):
        check(fake_response(200, {k: v for k, v in good.items() if k != "reserved"}), "/v1/accounts/balance", "get")
    with pytest.raises(AssertionError, match="does not match"):  # the code must fit the status
        check(fake_response(404, {"success": False, "error": {"code": "unauthorized", "message": "m"}}),
              "/v1/accounts/balance", "get")
    add = {"success": True, "accountId": "acc_" + "0" * 24, "externalId": "", "balance": 1, "added": 1,
           "transactionId": "txn_" + "0" * 24 + "_" + "0" * 16, "grantId": "grt_" + "0" * 24 + "_" + "0" * 16,
           "expiresAt": None, "priority": 50, "category": "paid", "costBasis": None}
    with pytest.raises(AssertionError, match="Credits-Position is missing"):
        check(fake_response(200, add), "/v1/accounts/credits/add", "post")
    check(fake_response(200, add, {"Credits-Position": "credits.ledger:0:5"}), "/v1/accounts/credits/add", "post")
    with pytest.raises(AssertionError, match="header Credits-Position"):
        check(fake_response(200, add, {"Credits-Position": "nonsense"}), "/v1/accounts/credits/add", "post")


# ---- the server against the document --------------------------------------------------------------------------

def test_the_guide_flow_matches_the_document(client, stack, external_id):
    expect(requests.get(stack.url + "/healthz", timeout=30), "/healthz", "get", 200)

    # Step 2: create an account with the app's own user id.
    request_id = "openapi-" + uuid.uuid4().hex
    r = client.post("/v1/accounts/create", {"name": "Alice", "externalId": external_id, "email": "alice@example.com",
                                            "metadata": {"plan": "pro"}}, headers={"X-Request-Id": request_id})
    account = expect(r, "/v1/accounts/create", "post", 200)["account"]
    assert r.headers["X-Request-Id"] == request_id
    assert r.headers["Credits-Position"].startswith(LEDGER_TOPIC + ":")

    # Step 3: add credits by externalId, once, with an Idempotency-Key, and its replay.
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"externalId": external_id, "amount": 1000, "description": "Starter credits",
            "metadata": {"source": "onboarding"}}
    first = client.post("/v1/accounts/credits/add", body, headers=key)
    added = expect(first, "/v1/accounts/credits/add", "post", 200)
    assert "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/accounts/credits/add", body, headers=key)
    assert expect(again, "/v1/accounts/credits/add", "post", 200) == added
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Credits-Position"] == first.headers["Credits-Position"]

    # Step 4: the balance, read-your-writes by this instance and by the client's position.
    r = client.get("/v1/accounts/balance", externalId=external_id)
    assert expect(r, "/v1/accounts/balance", "get", 200)["available"] == 1000
    assert "Credits-Stale" not in r.headers
    r = client.get("/v1/accounts/balance", headers={"Credits-Min-Position": first.headers["Credits-Position"]},
                   accountId=account["id"], externalId=external_id)
    expect(r, "/v1/accounts/balance", "get", 200)
    r = client.get("/v1/accounts/balance", headers={"Credits-Min-Position": LEDGER_TOPIC + ":0:999999999999"},
                   externalId=external_id)
    expect(r, "/v1/accounts/balance", "get", 200)
    assert r.headers["Credits-Stale"] == "true"

    # Step 5: reserve, confirm with the actual amount; a second one cancelled; a third confirmed at zero.
    reservation = expect(client.post("/v1/reservations/create", {"externalId": external_id, "amount": 500,
                                                                 "operation": "chat", "model": "gpt-4o"}),
                         "/v1/reservations/create", "post", 200)["reservation"]
    confirmed = expect(client.post("/v1/reservations/confirm", {"reservationId": reservation["id"],
                                                                "actualAmount": 320}),
                       "/v1/reservations/confirm", "post", 200)
    assert (confirmed["amountCharged"], confirmed["amountReleased"], confirmed["balance"]) == (320, 180, 680)
    second = expect(client.post("/v1/reservations/create", {"accountId": account["id"], "amount": 100,
                                                            "expiresInSeconds": 60, "metadata": {"job": 7}}),
                    "/v1/reservations/create", "post", 200)["reservation"]
    cancelled = expect(client.post("/v1/reservations/cancel", {"reservationId": second["id"]}),
                       "/v1/reservations/cancel", "post", 200)
    assert cancelled["reservation"]["status"] == "cancelled" and cancelled["amountReleased"] == 100
    third = expect(client.post("/v1/reservations/create", {"externalId": external_id, "amount": 10}),
                   "/v1/reservations/create", "post", 200)["reservation"]
    free = expect(client.post("/v1/reservations/confirm", {"reservationId": third["id"], "actualAmount": 0}),
                  "/v1/reservations/confirm", "post", 200)
    assert (free["amountCharged"], free["amountReleased"]) == (0, 10)

    # Step 6: usage linked to the confirmed transaction, and usage with none (transactionId null).
    usage = expect(client.post("/v1/usage/record", {"context": "customer", "transactionId": confirmed["transactionId"],
                                                    "accountId": confirmed["accountId"], "modelId": "gpt-4o",
                                                    "usageType": "text", "inputTokens": 1000, "outputTokens": 320}),
                   "/v1/usage/record", "post", 200)["usage"]
    assert usage["transactionId"] == confirmed["transactionId"] and usage["totalTokens"] == 1320
    usage = expect(client.post("/v1/usage/record", {"context": "system", "externalId": external_id,
                                                    "modelId": "embed", "cachedTokens": 5}),
                   "/v1/usage/record", "post", 200)["usage"]
    assert usage["transactionId"] is None and usage["usageType"] == "text" and usage["metadata"] == {}

    # Deduct, then the account as a whole.
    deducted = expect(client.post("/v1/accounts/credits/deduct", {"externalId": external_id, "amount": 80}),
                      "/v1/accounts/credits/deduct", "post", 200)
    assert deducted["balance"] == 600
    got = expect(client.get("/v1/accounts/get", externalId=external_id), "/v1/accounts/get", "get", 200)["account"]
    assert (got["id"], got["metadata"], got["balance"], got["reserved"], got["available"]) == (
        account["id"], {"plan": "pro"}, 600, 0, 600)

    # An account without externalId or email: a random id, and empty strings in the responses.
    plain = expect(client.post("/v1/accounts/create", {"name": "No external id"}),
                   "/v1/accounts/create", "post", 200)["account"]
    assert (plain["externalId"], plain["email"], plain["metadata"]) == ("", "", {})
    expect(client.get("/v1/accounts/get", accountId=plain["id"]), "/v1/accounts/get", "get", 200)

    # An over-long X-Request-Id is replaced by a generated one.
    r = client.get("/v1/accounts/balance", headers={"X-Request-Id": "x" * 129}, accountId=plain["id"])
    expect(r, "/v1/accounts/balance", "get", 200)
    assert re.fullmatch(r"req_[0-9a-f]{16}", r.headers["X-Request-Id"])


@pytest.fixture()
def funded(client, external_id):
    expect(client.post("/v1/accounts/create", {"name": "E", "externalId": external_id}), "/v1/accounts/create",
           "post", 200)
    expect(client.post("/v1/accounts/credits/add", {"externalId": external_id, "amount": 100}),
           "/v1/accounts/credits/add", "post", 200)
    return external_id


def test_authentication_and_method_errors_match_the_document(client, stack):
    no_key = requests.get(stack.url + "/v1/accounts/balance", params={"externalId": "x"}, timeout=30)
    expect(no_key, "/v1/accounts/balance", "get", 401, "unauthorized")
    bad_key = requests.post(stack.url + "/v1/accounts/create", json={"name": "x"},
                            headers={"X-API-Key": "ck_nope_nope"}, timeout=30)
    expect(bad_key, "/v1/accounts/create", "post", 401, "unauthorized")

    r = client.get("/v1/accounts/create")
    # A 405 is answered for the path's other method, which the document does not list as an operation; its body
    # and headers are checked against the shared 405 response of the path's real operation.
    check_as(r, "/v1/accounts/create", "post", 405, "method_not_allowed")
    assert r.headers["Allow"] == "POST"
    r = client.post("/v1/accounts/balance", {"externalId": "x"})
    check_as(r, "/v1/accounts/balance", "get", 405, "method_not_allowed")
    assert r.headers["Allow"] == "GET"

    # An unknown path is not an operation: its body is an Error with code not_found.
    r = client.get("/v1/accountz")
    assert r.status_code == 404
    assert_valid(r.json(), "/components/schemas/Error", "GET /v1/accounts 404 body")
    assert r.json()["error"]["code"] == "not_found"


def check_as(r, path, method, status, code):
    """A response to a method the path does not have, checked as that path's documented `status` response."""
    assert r.status_code == status, r.text
    fake = requests.Response()
    fake.status_code, fake._content, fake.headers = r.status_code, r.content, r.headers
    expect(fake, path, method, status, code)


def test_invalid_requests_match_the_document(client, funded):
    add, balance = "/v1/accounts/credits/add", "/v1/accounts/balance"
    e = expect(client.post("/v1/accounts/create", None, raw="{not json"), "/v1/accounts/create", "post", 400,
               "invalid_request")["error"]
    assert "field" not in e
    e = expect(client.post("/v1/accounts/create", {"name": "x", "email": "nope"}), "/v1/accounts/create", "post",
               400, "invalid_request")["error"]
    assert e["field"] == "email"
    for amount in (0, 1.5, "100", MAX + 1):
        e = expect(client.post(add, {"externalId": funded, "amount": amount}), add, "post", 400,
                   "invalid_request")["error"]
        assert e["field"] == "amount"
    e = expect(client.post(add, {"amount": 1}), add, "post", 400, "invalid_request")["error"]
    assert e["field"] == "accountId"
    e = expect(client.post(add, {"accountId": "acc_" + "0" * 24, "externalId": funded, "amount": 1}), add, "post",
               400, "invalid_request")["error"]
    assert e["field"] == "externalId"
    e = expect(client.post(add, {"externalId": funded, "amount": MAX}), add, "post", 400,
               "invalid_request")["error"]
    assert e["details"] == {"balance": 100, "max": MAX}
    e = expect(client.post(add, {"externalId": funded, "amount": 1}, headers={"Idempotency-Key": "k" * 257}),
               add, "post", 400, "invalid_request")["error"]
    assert e["field"] == "Idempotency-Key"
    e = expect(client.post("/v1/reservations/create", {"externalId": funded, "amount": 1, "expiresInSeconds": 604801}),
               "/v1/reservations/create", "post", 400, "invalid_request")["error"]
    assert e["field"] == "expiresInSeconds"
    rsv = expect(client.post("/v1/reservations/create", {"externalId": funded, "amount": 10}),
                 "/v1/reservations/create", "post", 200)["reservation"]["id"]
    e = expect(client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 11}),
               "/v1/reservations/confirm", "post", 400, "invalid_request")["error"]
    assert e["field"] == "actualAmount" and e["details"] == {"reserved": 10, "actualAmount": 11}
    e = expect(client.post("/v1/reservations/cancel", {"reservationId": ""}), "/v1/reservations/cancel", "post",
               400, "invalid_request")["error"]
    assert e["field"] == "reservationId"
    e = expect(client.post("/v1/usage/record", {"context": "robot", "externalId": funded, "modelId": "m"}),
               "/v1/usage/record", "post", 400, "invalid_request")["error"]
    assert e["field"] == "context"

    e = expect(client.get(balance, externalId=""), balance, "get", 400, "invalid_request")["error"]
    assert e["field"] == "externalId"
    e = expect(client.get("/v1/accounts/get"), "/v1/accounts/get", "get", 400, "invalid_request")["error"]
    assert e["field"] == "accountId"
    e = expect(client.get(balance, headers={"Credits-Min-Position": "nonsense"}, externalId=funded), balance, "get",
               400, "invalid_request")["error"]
    assert e["field"] == "Credits-Min-Position"


def test_refusals_by_the_ledger_match_the_document(client, other_tenant, funded, external_id):
    e = expect(client.post("/v1/reservations/create", {"externalId": funded, "amount": 101}),
               "/v1/reservations/create", "post", 402, "insufficient_credits")["error"]
    assert e["details"] == {"needed": 101, "available": 100}
    expect(client.post("/v1/accounts/credits/deduct", {"externalId": funded, "amount": 500}),
           "/v1/accounts/credits/deduct", "post", 402, "insufficient_credits")

    nobody = "nobody_" + funded
    expect(client.post("/v1/accounts/credits/add", {"externalId": nobody, "amount": 1}),
           "/v1/accounts/credits/add", "post", 404, "account_not_found")
    expect(client.post("/v1/accounts/credits/deduct", {"accountId": "acc_malformed", "amount": 1}),
           "/v1/accounts/credits/deduct", "post", 404, "account_not_found")
    expect(client.get("/v1/accounts/balance", externalId=nobody), "/v1/accounts/balance", "get", 404,
           "account_not_found")
    expect(other_tenant.get("/v1/accounts/get", externalId=funded), "/v1/accounts/get", "get", 404,
           "account_not_found")
    expect(client.post("/v1/reservations/confirm", {"reservationId": "rsv_nope", "actualAmount": 1}),
           "/v1/reservations/confirm", "post", 404, "reservation_not_found")
    expect(client.post("/v1/reservations/cancel", {"reservationId": "rsv_" + "0" * 24 + "_" + "0" * 16}),
           "/v1/reservations/cancel", "post", 404, "reservation_not_found")

    e = expect(client.post("/v1/accounts/create", {"name": "again", "externalId": funded}),
               "/v1/accounts/create", "post", 409, "account_exists")["error"]
    assert e["details"]["accountId"].startswith("acc_")
    rsv = expect(client.post("/v1/reservations/create", {"externalId": funded, "amount": 10}),
                 "/v1/reservations/create", "post", 200)["reservation"]["id"]
    expect(client.post("/v1/reservations/cancel", {"reservationId": rsv}), "/v1/reservations/cancel", "post", 200)
    e = expect(client.post("/v1/reservations/confirm", {"reservationId": rsv, "actualAmount": 5}),
               "/v1/reservations/confirm", "post", 409, "reservation_not_pending")["error"]
    assert e["details"] == {"status": "cancelled"}
    expect(client.post("/v1/reservations/cancel", {"reservationId": rsv}), "/v1/reservations/cancel", "post", 409,
           "reservation_not_pending")

    key = {"Idempotency-Key": uuid.uuid4().hex}
    expect(client.post("/v1/accounts/credits/deduct", {"externalId": funded, "amount": 1}, headers=key),
           "/v1/accounts/credits/deduct", "post", 200)
    expect(client.post("/v1/accounts/credits/deduct", {"externalId": funded, "amount": 2}, headers=key),
           "/v1/accounts/credits/deduct", "post", 409, "idempotency_key_reused")

    other = "other_" + external_id
    expect(client.post("/v1/accounts/create", {"name": "O", "externalId": other}), "/v1/accounts/create", "post", 200)
    txn = expect(client.post("/v1/accounts/credits/add", {"externalId": other, "amount": 5}),
                 "/v1/accounts/credits/add", "post", 200)["transactionId"]
    usage = {"context": "customer", "externalId": funded, "modelId": "m", "inputTokens": 1, "outputTokens": 1}
    expect(client.post("/v1/usage/record", dict(usage, transactionId=txn)), "/v1/usage/record", "post", 409,
           "transaction_account_mismatch")
    expect(client.post("/v1/usage/record", dict(usage, transactionId=txn[:-1] + ("1" if txn[-1] == "0" else "0"))),
           "/v1/usage/record", "post", 404, "transaction_not_found")
    expect(client.post("/v1/usage/record", dict(usage, externalId=nobody)), "/v1/usage/record", "post", 404,
           "account_not_found")


def test_expired_reservation_matches_the_document(client, funded):
    rsv = expect(client.post("/v1/reservations/create", {"externalId": funded, "amount": 60, "expiresInSeconds": 1}),
                 "/v1/reservations/create", "post", 200)["reservation"]
    time.sleep(1.1)
    e = expect(client.post("/v1/reservations/confirm", {"reservationId": rsv["id"], "actualAmount": 10}),
               "/v1/reservations/confirm", "post", 409, "reservation_expired")["error"]
    assert e["details"] == {"status": "expired", "expiresAt": rsv["expiresAt"]}
    expect(client.post("/v1/reservations/cancel", {"reservationId": rsv["id"]}), "/v1/reservations/cancel", "post",
           409, "reservation_expired")


def test_oversized_requests_match_the_document(stack, funded):
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    r = requests.post(stack.url + "/v1/accounts/credits/add", headers=headers, timeout=30,
                      data='{"externalId":"' + funded + '","amount":1,"description":"' + "x" * (70 * 1024) + '"}')
    expect(r, "/v1/accounts/credits/add", "post", 413, "payload_too_large")
    r = requests.get(stack.url + "/v1/accounts/balance", params={"externalId": funded}, timeout=30,
                     headers={"X-API-Key": API_KEY, "X-Padding": "p" * (20 * 1024)})
    expect(r, "/v1/accounts/balance", "get", 431, "invalid_request")
