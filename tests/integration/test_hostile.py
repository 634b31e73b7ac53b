"""Hostile input against the HTTP API: a corpus of malformed, truncated, mistyped, out-of-range, deeply nested,
oversized, badly encoded, unauthorised, cross-tenant, wrongly routed and slow requests, most of it generated.

Every case must get the error docs/openapi.yaml states for it: the status, `error.code` and, where the document
names one, `error.field`, with the whole response checked against the document (test_openapi's checker). After
every case the target account's view (GET /v1/accounts/get) is unchanged, and after every family of cases the log
(both topics, read with kcat through conftest.read_topic) holds no new event at all, except reservation expiries
that the server writes by itself for other tests' accounts. Each request carries an X-Request-Id naming its case,
so an event written by mistake names the case that wrote it.

The target account has 1000 credits and one pending hold of 100 (available 900). Valid-looking bodies aim at it,
so anything accepted by mistake would change its view or its stream. Where a case needs a body that passes
validation (a size or depth limit from the accepting side), it creates the target account again, which the ledger
refuses with 409 account_exists: accepted by the parser, and still nothing written.

Unknown fields are ignored (the document says so): test_unknown_fields_are_ignored_and_write_only_the_command
checks that exactly the valid command is written and none of the unknown fields reaches the event.

The slow-drip cases restart the stack under test with short CREDITS_IDLE_TIMEOUT_MS and
CREDITS_REQUEST_TIMEOUT_MS (both SLOW_TIMEOUT_MS) and restore it afterwards.
"""
import json
import select
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field as dc_field

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from conftest import API_KEY, LEDGER_TOPIC, OTHER_TENANT_KEY, USAGE_TOPIC, Client, read_topic
from test_openapi import MUTATIONS, QUERIES, assert_valid, check, check_as

MAX = 2**53 - 1
BODY_BYTES_MAX = 65536
HEADER_BYTES_MAX = 16384
JSON_DEPTH_MAX = 16
STRING_BYTES_MAX = 256
METADATA_BYTES_MAX = 4096
UNREAD_DRAIN_BYTES_MAX = 8 * 1024 * 1024  # what the server reads and drops of a request it refused unread
LARGE_BODY_BYTES = 2 * 1000 * 1000       # a body above the limit that a client sends whole before it reads
ANSWER_WAIT_S = 0.5                      # urllib's pause within the body: the server answers the headers meanwhile
NONCE = uuid.uuid4().hex[:8]  # names this run's requests in the events they might write
SLOW_TIMEOUT_MS = 3000        # idle and request timeout of the server during the slow-drip cases
# The server closes a stalled connection within this many times its timeout: generous, so that a loaded machine
# running the ASan build meets it, and still below the defaults that would apply instead (request 10 s, idle 30 s).
TIMEOUT_SLACK = 3
STALLED_CONNECTIONS = 100     # slow clients holding connections open while another one is served

CREATE, ADD, DEDUCT = "/v1/accounts/create", "/v1/accounts/credits/add", "/v1/accounts/credits/deduct"
RESERVE, CONFIRM, CANCEL = "/v1/reservations/create", "/v1/reservations/confirm", "/v1/reservations/cancel"
USAGE, GET, BALANCE = "/v1/usage/record", "/v1/accounts/get", "/v1/accounts/balance"


# ---- the target and the checks after each case ----------------------------------------------------------------

@dataclass
class Target:
    url: str
    port: int
    account_id: str
    external_id: str
    reservation_id: str
    transaction_id: str
    other_account_id: str  # tenant_b's account with the same externalId
    view: dict


@pytest.fixture(scope="module")
def target(stack):
    c = Client(stack.url)
    ext = f"hostile_{NONCE}"
    account_id = c.post(CREATE, {"name": "Hostile", "externalId": ext, "metadata": {"k": "v"}}).json()["account"]["id"]
    txn = c.post(ADD, {"externalId": ext, "amount": 1000}).json()["transactionId"]
    rsv = c.post(RESERVE, {"externalId": ext, "amount": 100, "expiresInSeconds": 7200}).json()["reservation"]["id"]
    other = Client(stack.url, OTHER_TENANT_KEY).post(CREATE, {"name": "B", "externalId": ext}).json()["account"]["id"]
    view = c.get(GET, accountId=account_id).json()
    assert (view["account"]["balance"], view["account"]["reserved"], view["account"]["available"]) == (1000, 100, 900)
    return Target(stack.url, stack.port, account_id, ext, rsv, txn, other, view)


class LogCursor:
    """Both topics as kcat last saw them; `assert_nothing_new` fails on any event written since."""

    def __init__(self):
        self.seen = set()
        self.new_events()

    def new_events(self):
        new = []
        for topic in (LEDGER_TOPIC, USAGE_TOPIC):
            for e in read_topic(topic):
                where = (topic, e["_partition"], e["_offset"])
                if where not in self.seen:
                    self.seen.add(where)
                    new.append(e)
        return new

    def assert_nothing_new(self, what):
        # Expiries of other tests' holds and grants (and what a hold's expiry returns to an expired grant) are
        # written by the server's own scan, at any time, under the key id "system".
        written = [e for e in self.new_events() if e["apiKeyId"] != "system"]
        assert not written, f"{what} wrote {len(written)} event(s): " + "; ".join(
            f"{e['type']} for {e['accountId']} by request {e['requestId']}" for e in written[:20])


@pytest.fixture(scope="module")
def log(target):
    return LogCursor()


@pytest.fixture(scope="module")
def http():
    return requests.Session()


def assert_view_unchanged(t, http):
    r = http.get(t.url + GET, params={"accountId": t.account_id}, headers={"X-API-Key": API_KEY}, timeout=30)
    assert r.status_code == 200 and r.json() == t.view, f"the target's view changed: {r.status_code} {r.text}"


# ---- cases ------------------------------------------------------------------------------------------------------

ABSENT = object()  # `field`: the error must not name a field
ANY = object()     # `field`: not checked


@dataclass
class Case:
    name: str
    path: str
    body: bytes = None               # raw body; None sends none
    status: int = 400
    code: str = "invalid_request"
    field: object = ANY
    method: str = None               # default: POST for mutations, GET for queries
    params: dict = None
    headers: dict = dc_field(default_factory=dict)
    key: object = API_KEY            # None: no X-API-Key header
    doc_path: str = None             # the operation the answer is checked against (default: path)


def dumps(body):
    return json.dumps(body, ensure_ascii=False).encode()


def valid_bodies(t):
    """One valid body per mutation, aimed at the target: each of these, sent as is, would write."""
    return {
        CREATE: {"name": "Hostile", "externalId": t.external_id, "email": "h@example.com", "metadata": {"k": "v"}},
        ADD: {"externalId": t.external_id, "amount": 5, "description": "d", "paymentMethod": "card",
              "metadata": {"k": "v"}},
        DEDUCT: {"accountId": t.account_id, "amount": 5, "description": "d", "metadata": {}},
        RESERVE: {"externalId": t.external_id, "amount": 5, "expiresInSeconds": 60, "operation": "chat",
                  "model": "m", "metadata": {}},
        CONFIRM: {"reservationId": t.reservation_id, "actualAmount": 5},
        CANCEL: {"reservationId": t.reservation_id},
        USAGE: {"context": "customer", "accountId": t.account_id, "transactionId": t.transaction_id,
                "modelId": "gpt-4o", "usageType": "text", "inputTokens": 1, "outputTokens": 2, "cachedTokens": 0,
                "metadata": {}},
    }


# Field kinds of each mutation's body (docs/openapi.yaml, components/schemas/*Request).
FIELDS = {
    CREATE: {"name": "req_text", "externalId": "text", "email": "text", "metadata": "meta"},
    ADD: {"externalId": "selector", "amount": "amount", "description": "text", "paymentMethod": "text",
          "metadata": "meta"},
    DEDUCT: {"accountId": "selector", "amount": "amount", "description": "text", "metadata": "meta"},
    RESERVE: {"externalId": "selector", "amount": "amount", "expiresInSeconds": "expires", "operation": "text",
              "model": "text", "metadata": "meta"},
    CONFIRM: {"reservationId": "req_text", "actualAmount": "actual"},
    CANCEL: {"reservationId": "req_text"},
    USAGE: {"context": "req_text", "accountId": "selector", "transactionId": "text", "modelId": "req_text",
            "usageType": "text", "inputTokens": "count", "outputTokens": "count", "cachedTokens": "count",
            "metadata": "meta"},
}
STRING_KINDS = {"req_text", "text", "selector"}
INTEGER_KINDS = {"amount", "actual", "expires", "count"}
REQUIRED_KINDS = {"req_text", "selector", "amount", "actual"}
WRONG_TYPES = {
    "string": [True, False, 0, 7, 1.5, [], ["x"], {}, {"a": "b"}],
    "integer": [True, False, "5", "", 1.5, [], [5], {}, {"n": 5}],
    "meta": [True, 0, 1.5, "x", "{}", [], [{}]],
}


def wrong_type_cases(t):
    cases = []
    for path, fields in FIELDS.items():
        for name, kind in fields.items():
            group = "string" if kind in STRING_KINDS else "integer" if kind in INTEGER_KINDS else "meta"
            for value in WRONG_TYPES[group]:
                body = dict(valid_bodies(t)[path], **{name: value})
                cases.append(Case(f"{path} {name}={json.dumps(value)}", path, dumps(body), field=name))
        # The selector the body does not use, of a wrong type, is refused too.
        if "externalId" in fields and fields["externalId"] == "selector":
            for value in (True, 5, []):
                body = dict(valid_bodies(t)[path], accountId=value)
                cases.append(Case(f"{path} accountId={json.dumps(value)} beside externalId", path, dumps(body),
                                  field="accountId"))
    return cases


def missing_and_null_cases(t):
    cases = []
    for path, fields in FIELDS.items():
        for name, kind in fields.items():
            if kind not in REQUIRED_KINDS:
                continue
            expected = "accountId" if kind == "selector" else name  # "accountId or externalId is required"
            body = {k: v for k, v in valid_bodies(t)[path].items() if k != name}
            cases.append(Case(f"{path} without {name}", path, dumps(body), field=expected))
            cases.append(Case(f"{path} {name}=null", path, dumps(dict(body, **{name: None})), field=expected))
    return cases


def bad_value_cases(t):
    b = valid_bodies(t)
    long_text = "x" * (STRING_BYTES_MAX + 1)
    long_utf8 = "é" * (STRING_BYTES_MAX // 2 + 1)  # 129 characters, 258 bytes: the limit is in bytes
    big_metadata = {"k": "v" * METADATA_BYTES_MAX}
    other_rsv = "rsv_" + "0" * 24 + "_" + "0" * 16
    cases = [
        Case("create name empty", CREATE, dumps(dict(b[CREATE], name="")), field="name"),
        Case("create email without @", CREATE, dumps(dict(b[CREATE], email="not-an-address")), field="email"),
        Case("add externalId empty", ADD, dumps(dict(b[ADD], externalId="")), field="externalId"),
        Case("deduct accountId empty", DEDUCT, dumps(dict(b[DEDUCT], accountId="")), field="accountId"),
        Case("add accountId and externalId disagree", ADD,
             dumps(dict(b[ADD], accountId=t.other_account_id)), field="externalId"),
        Case("confirm reservationId empty", CONFIRM, dumps(dict(b[CONFIRM], reservationId="")), field="reservationId"),
        Case("cancel reservationId empty", CANCEL, dumps(dict(b[CANCEL], reservationId="")), field="reservationId"),
        Case("usage modelId empty", USAGE, dumps(dict(b[USAGE], modelId="")), field="modelId"),
        Case("usage context empty", USAGE, dumps(dict(b[USAGE], context="")), field="context"),
        Case("usage context robot", USAGE, dumps(dict(b[USAGE], context="robot")), field="context"),
        Case("usage context upper case", USAGE, dumps(dict(b[USAGE], context="CUSTOMER")), field="context"),
        Case("reserve expiresInSeconds 0", RESERVE, dumps(dict(b[RESERVE], expiresInSeconds=0)),
             field="expiresInSeconds"),
        Case("reserve expiresInSeconds 7 days + 1 s", RESERVE, dumps(dict(b[RESERVE], expiresInSeconds=604801)),
             field="expiresInSeconds"),
        Case("add Idempotency-Key of 257 bytes", ADD, dumps(b[ADD]), headers={"Idempotency-Key": "k" * 257},
             field="Idempotency-Key"),
        Case("balance without an account", BALANCE, params={}, field="accountId"),
        Case("balance accountId empty", BALANCE, params={"accountId": ""}, field="accountId"),
        Case("get accountId and externalId disagree", GET,
             params={"accountId": t.other_account_id, "externalId": t.external_id}, field="externalId"),
        Case("balance malformed Credits-Min-Position", BALANCE, params={"accountId": t.account_id},
             headers={"Credits-Min-Position": "credits-test.ledger:x:1"}, field="Credits-Min-Position"),
        Case("balance negative Credits-Min-Position", BALANCE, params={"accountId": t.account_id},
             headers={"Credits-Min-Position": "credits-test.ledger:0:-1"}, field="Credits-Min-Position"),
    ]
    for path, fields in FIELDS.items():
        for name, kind in fields.items():
            if kind == "selector":  # no such account can exist (externalId is limited at creation): 404
                for text in (long_text, long_utf8):
                    cases.append(Case(f"{path} {name} of {len(text.encode())} bytes", path,
                                      dumps(dict(b[path], **{name: text})), status=404, code="account_not_found"))
            elif kind in STRING_KINDS:
                cases.append(Case(f"{path} {name} of 257 bytes", path, dumps(dict(b[path], **{name: long_text})),
                                  field=name))
                cases.append(Case(f"{path} {name} of 129 two-byte characters", path,
                                  dumps(dict(b[path], **{name: long_utf8})), field=name))
            if kind == "meta":
                cases.append(Case(f"{path} metadata above 4096 bytes", path,
                                  dumps(dict(b[path], metadata=big_metadata)), field="metadata"))
    # Malformed or unknown ids are answered like missing ones.
    for bad in ("acc_nope", "acc_" + "g" * 24, "ACC_" + "0" * 24, "acc_" + "0" * 23, "acc_" + "A" * 24,
                t.account_id + "0", " " + t.account_id, t.account_id.replace("acc_", "rsv_")):
        cases.append(Case(f"deduct accountId {bad!r}", DEDUCT, dumps(dict(b[DEDUCT], accountId=bad)), status=404,
                          code="account_not_found"))
        cases.append(Case(f"balance accountId {bad!r}", BALANCE, params={"accountId": bad}, status=404,
                          code="account_not_found"))
    for bad in ("rsv_nope", other_rsv, t.reservation_id.replace("rsv_", "txn_"), t.reservation_id[:-1],
                t.reservation_id.upper(), t.reservation_id + " "):
        cases.append(Case(f"confirm reservationId {bad!r}", CONFIRM, dumps(dict(b[CONFIRM], reservationId=bad)),
                          status=404, code="reservation_not_found"))
        cases.append(Case(f"cancel reservationId {bad!r}", CANCEL, dumps(dict(b[CANCEL], reservationId=bad)),
                          status=404, code="reservation_not_found"))
    for bad in ("txn_nope", t.transaction_id[:-1] + ("1" if t.transaction_id[-1] == "0" else "0"),
                t.reservation_id):
        cases.append(Case(f"usage transactionId {bad!r}", USAGE, dumps(dict(b[USAGE], transactionId=bad)),
                          status=404, code="transaction_not_found"))
    return cases


# Number literals that are not an integer in range, written as raw JSON text (Python cannot write -0 or 1e2).
OUT_OF_RANGE = ["9007199254740992", "9007199254740993", "9223372036854775807", "9223372036854775808",
                "18446744073709551615", "18446744073709551616", "1e308", "-1", "-9223372036854775808",
                "-9223372036854775809", "1e2", "1E2", "1e+2", "1.0", "0.5", "5.000000000000001", "-0.0", "1e-5",
                "-1e308"]
NOT_JSON_NUMBERS = ["1e309", "-1e309", "01", "+1", ".5", "5.", "0x10", "1_000", "NaN", "Infinity", "-Infinity"]


def number_cases(t):
    cases = []
    for path, fields in FIELDS.items():
        for name, kind in fields.items():
            if kind not in INTEGER_KINDS:
                continue
            extra = {"amount": ["0", "-0"], "expires": ["0", "-0", "604801"], "actual": [], "count": []}[kind]
            template = dumps(dict(valid_bodies(t)[path], **{name: "__NUMBER__"}))
            for literal in OUT_OF_RANGE + extra:
                cases.append(Case(f"{path} {name}={literal}", path,
                                  template.replace(b'"__NUMBER__"', literal.encode()), field=name))
            for literal in NOT_JSON_NUMBERS:
                cases.append(Case(f"{path} {name}={literal} (not JSON)", path,
                                  template.replace(b'"__NUMBER__"', literal.encode()), field=ABSENT))
    return cases


def ledger_refusal_cases(t):
    b = valid_bodies(t)
    return [
        Case("deduct more than available", DEDUCT, dumps(dict(b[DEDUCT], amount=901)), status=402,
             code="insufficient_credits"),
        Case("deduct 2^53-1", DEDUCT, dumps(dict(b[DEDUCT], amount=MAX)), status=402, code="insufficient_credits"),
        Case("reserve more than available", RESERVE, dumps(dict(b[RESERVE], amount=901)), status=402,
             code="insufficient_credits"),
        Case("reserve 2^53-1", RESERVE, dumps(dict(b[RESERVE], amount=MAX)), status=402, code="insufficient_credits"),
        Case("add up to above 2^53-1", ADD, dumps(dict(b[ADD], amount=MAX)), field="amount"),
        Case("add 2^53-1 - balance + 1", ADD, dumps(dict(b[ADD], amount=MAX - 1000 + 1)), field="amount"),
        Case("confirm above the hold", CONFIRM, dumps(dict(b[CONFIRM], actualAmount=101)), field="actualAmount"),
        Case("confirm 2^53-1", CONFIRM, dumps(dict(b[CONFIRM], actualAmount=MAX)), field="actualAmount"),
        Case("create the target again", CREATE, dumps(b[CREATE]), status=409, code="account_exists"),
        Case("create the target again by externalId only", CREATE,
             dumps({"name": "x", "externalId": t.external_id}), status=409, code="account_exists"),
    ]


def malformed_json_cases(t):
    ext = t.external_id
    texts = [
        b"", b" ", b"\r\n", b"null", b"true", b"0", b"1000", b'"text"', b"[]", b"[{}]",
        b'{"externalId":"%s","amount":5} x' % ext.encode(), b'{"externalId":"%s","amount":5}{}' % ext.encode(),
        b"{'externalId':'%s','amount':5}" % ext.encode(), b'{externalId:"%s",amount:5}' % ext.encode(),
        b'{"externalId":"%s","amount":5,}' % ext.encode(), b'{"externalId":"%s",,"amount":5}' % ext.encode(),
        b'{"externalId":"%s" "amount":5}' % ext.encode(), b'{"externalId"="%s","amount":5}' % ext.encode(),
        b'/* c */{"externalId":"%s","amount":5}' % ext.encode(), b'{"externalId":"%s","amount":5} // c' % ext.encode(),
        b'{"externalId":"%s","amount":5' % ext.encode(), b'{"externalId":"%s","amount":5]' % ext.encode(),
        b'{"externalId":"%s\x00","amount":5}' % ext.encode(), b'{"externalId":"%s\n","amount":5}' % ext.encode(),
        b'{"externalId":"%s\t","amount":5}' % ext.encode(), b'{"externalId":"\\x41%s","amount":5}' % ext.encode(),
        b'{"externalId":"\\u12","amount":5}', b'{"externalId":"\\uZZZZ","amount":5}',
        b'{"externalId":"%s","amount":5}\x00' % ext.encode(), b'\x00{"externalId":"%s","amount":5}' % ext.encode(),
        b'{"externalId":"%s","amount":True}' % ext.encode(), b'{"externalId":"%s","amount":nul}' % ext.encode(),
        b'{"externalId":"%s","amount":undefined}' % ext.encode(), b'{"externalId":"%s","amount":-}' % ext.encode(),
        b'{"externalId":"%s","amount":5e}' % ext.encode(), b"\xff\xfe{\x00}\x00",
    ]
    return [Case(f"add body {text[:60]!r}", ADD, text, field=ANY if text[:1] in (b"[", b"n", b"t", b"0", b"1", b'"')
                 else ABSENT) for text in texts]


def truncation_cases(t):
    cases = []
    for path, body in valid_bodies(t).items():
        text = dumps(body)
        for n in range(len(text)):
            cases.append(Case(f"{path} truncated to {n} bytes", path, text[:n], field=ABSENT))
    return cases


def nesting(depth, inner=b"1"):
    """A JSON value `depth` levels deep: arrays around `inner`."""
    return b"[" * depth + inner + b"]" * depth


def deep_cases(t):
    def create_with_metadata(meta_text):  # the body object is level 1, metadata level 2
        return b'{"name":"x","externalId":"%s","metadata":%s}' % (t.external_id.encode(), meta_text)

    def objects(depth):
        return b'{"a":' * depth + b"1" + b"}" * depth

    cases = [Case(f"create metadata nested to level {d}", CREATE,
                  create_with_metadata(b"{" + b'"a":' + nesting(d - 2) + b"}"), field=ABSENT)
             for d in (JSON_DEPTH_MAX + 1, JSON_DEPTH_MAX + 2, 64, 1000, 30000)]
    cases += [Case(f"create metadata objects nested to level {d}", CREATE, create_with_metadata(objects(d - 1)),
                   field=ABSENT) for d in (JSON_DEPTH_MAX + 1, 5000)]
    cases += [Case(f"top-level arrays nested {d} deep", ADD, nesting(d), field=ABSENT)
              for d in (JSON_DEPTH_MAX + 1, 32000)]
    cases.append(Case("deep unknown field", ADD, dumps(valid_bodies(t)[ADD])[:-1] + b',"junk":' + nesting(20000)
                      + b"}", field=ABSENT))
    cases.append(Case("unclosed nesting", ADD, b"[" * 60000, field=ABSENT))
    # At the limit the body passes the parser: the ledger refuses the duplicate account, nothing is written.
    cases.append(Case(f"create metadata nested to level {JSON_DEPTH_MAX}", CREATE,
                      create_with_metadata(b"{" + b'"a":' + nesting(JSON_DEPTH_MAX - 2) + b"}"), status=409,
                      code="account_exists"))
    return cases


# Byte sequences that are not UTF-8 (RFC 3629): stray bytes, overlong forms, surrogates, beyond U+10FFFF.
BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",
            b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
            b"\xe2\x82", b"\xc3", b"\xc3\x28", b"\xe2\x28\xa1"]
BAD_ESCAPES = [b"\\ud800", b"\\udc00", b"\\udfff", b"\\ud800\\u0041", b"\\udc00\\ud800", b"\\ud83d"]


def utf8_cases(t):
    cases = []
    targets = [(CREATE, "name"), (ADD, "description"), (RESERVE, "model"), (CONFIRM, "reservationId"),
               (USAGE, "modelId"), (DEDUCT, "accountId")]
    for seq in BAD_UTF8:
        for path, name in targets:
            body = dumps(dict(valid_bodies(t)[path], **{name: "__S__"})).replace(b"__S__", b"ok" + seq + b"ok")
            cases.append(Case(f"{path} {name} with {seq!r}", path, body, field=ABSENT))
        key_body = dumps(valid_bodies(t)[ADD])[:-1] + b',"k' + seq + b'":1}'
        cases.append(Case(f"add key with {seq!r}", ADD, key_body, field=ABSENT))
    for esc in BAD_ESCAPES:
        for path, name in targets[:3]:
            body = dumps(dict(valid_bodies(t)[path], **{name: "__S__"})).replace(b"__S__", esc)
            cases.append(Case(f"{path} {name} with {esc.decode()}", path, body, field=ABSENT))
    return cases


def auth_cases(t):
    cases = []
    bodies = valid_bodies(t)
    keys = [("no key", None, {}, None), ("empty key", "", {}, None), ("unknown key", "ck_nope_nope_nope", {}, None),
            ("key in upper case", API_KEY.upper(), {}, None),
            ("key with a Bearer prefix", "Bearer " + API_KEY, {}, None),
            ("key only in Authorization", None, {"Authorization": "Bearer " + API_KEY}, None),
            ("key only in the query", None, {}, {"apiKey": API_KEY}),
            ("key one byte short", API_KEY[:-1], {}, None)]
    for path in MUTATIONS + QUERIES:
        for name, key, headers, query in keys:
            params = dict(query or {})
            if path in QUERIES:
                params["accountId"] = t.account_id
            cases.append(Case(f"{path} {name}", path, dumps(bodies[path]) if path in bodies else None, status=401,
                              code="unauthorized", key=key, headers=headers, params=params or None))
    return cases


def tenant_cases(t):
    b = valid_bodies(t)
    other = OTHER_TENANT_KEY
    by_id = {"accountId": t.account_id}
    return [
        Case("other tenant adds by accountId", ADD, dumps(dict(by_id, amount=5)), status=404,
             code="account_not_found", key=other),
        Case("other tenant deducts by accountId", DEDUCT, dumps(dict(by_id, amount=5)), status=404,
             code="account_not_found", key=other),
        Case("other tenant reserves by accountId", RESERVE, dumps(dict(by_id, amount=5)), status=404,
             code="account_not_found", key=other),
        Case("other tenant confirms the hold", CONFIRM, dumps(b[CONFIRM]), status=404, code="reservation_not_found",
             key=other),
        Case("other tenant confirms the hold for 0", CONFIRM, dumps(dict(b[CONFIRM], actualAmount=0)), status=404,
             code="reservation_not_found", key=other),
        Case("other tenant cancels the hold", CANCEL, dumps(b[CANCEL]), status=404, code="reservation_not_found",
             key=other),
        Case("other tenant records usage on the account", USAGE, dumps(b[USAGE]), status=404,
             code="account_not_found", key=other),
        Case("other tenant links the account's transaction", USAGE,
             dumps(dict(b[USAGE], accountId=t.other_account_id)), status=404, code="transaction_not_found",
             key=other),
        Case("other tenant names both ids", ADD, dumps({"accountId": t.account_id, "externalId": t.external_id,
                                                        "amount": 5}), field="externalId", key=other),
        Case("other tenant reads the balance", BALANCE, params=by_id, status=404, code="account_not_found",
             key=other),
        Case("other tenant reads the account", GET, params=by_id, status=404, code="account_not_found", key=other),
        Case("other tenant's account, our key", BALANCE, params={"accountId": t.other_account_id}, status=404,
             code="account_not_found"),
        Case("other tenant's account, our key, deduct", DEDUCT,
             dumps({"accountId": t.other_account_id, "amount": 1}), status=404, code="account_not_found"),
    ]


def method_cases(t):
    cases = []
    bodies = valid_bodies(t)
    for path in MUTATIONS + QUERIES:
        right = "POST" if path in MUTATIONS else "GET"
        for method in ("GET" if right == "POST" else "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            cases.append(Case(f"{method} {path}", path, dumps(bodies.get(path, {"accountId": t.account_id})),
                              status=405, code="method_not_allowed", method=method, doc_path=path))
        # Unknown path comes before authentication, authentication before the method.
        cases.append(Case(f"PUT {path} without a key", path, dumps(bodies.get(path, {})), status=401,
                          code="unauthorized", method="PUT", key=None))
    return cases


FAMILIES = {
    "wrong types": wrong_type_cases,
    "missing and null": missing_and_null_cases,
    "bad values": bad_value_cases,
    "numbers": number_cases,
    "ledger refusals": ledger_refusal_cases,
    "malformed JSON": malformed_json_cases,
    "truncated bodies": truncation_cases,
    "deep nesting": deep_cases,
    "invalid UTF-8": utf8_cases,
    "authentication": auth_cases,
    "other tenant": tenant_cases,
    "methods": method_cases,
}


# ---- sending and judging ----------------------------------------------------------------------------------------

def send(t, http, case, i):
    method = case.method or ("POST" if case.path in MUTATIONS or case.path not in QUERIES else "GET")
    headers = {"X-Request-Id": f"hostile-{NONCE}-{i}"}
    if case.body is not None:
        headers["Content-Type"] = "application/json"
    if case.key is not None:
        headers["X-API-Key"] = case.key
    headers.update(case.headers)
    return http.request(method, t.url + case.path, data=case.body, headers=headers, params=case.params, timeout=30)


def judge(r, case):
    """The answer must be the case's documented error."""
    assert r.status_code == case.status, f"expected {case.status} {case.code}, got {r.status_code}: {r.text[:300]}"
    doc_path = case.doc_path or case.path
    if case.code == "not_found":
        assert_valid(r.json(), "/components/schemas/Error", f"{case.name} body")
    elif case.status == 405:
        check_as(r, doc_path, "post" if doc_path in MUTATIONS else "get", 405, "method_not_allowed")
        assert r.headers["Allow"] == ("POST" if doc_path in MUTATIONS else "GET")
    else:
        check(r, doc_path, "post" if doc_path in MUTATIONS else "get")
    error = r.json()["error"]
    assert error["code"] == case.code, f"expected code {case.code}, got {error}"
    if case.field is ABSENT:
        assert "field" not in error, f"expected no field, got {error}"
    elif case.field is not ANY:
        assert error.get("field") == case.field, f"expected field {case.field}, got {error}"


def run_family(t, http, log, name, cases):
    failures = []
    for i, case in enumerate(cases):
        try:
            judge(send(t, http, case, f"{name}-{i}".replace(" ", "_")), case)
            assert_view_unchanged(t, http)
        except (AssertionError, requests.RequestException, ValueError, KeyError) as e:
            failures.append(f"  {case.name}: {type(e).__name__}: {str(e)[:400]}")
    log.assert_nothing_new(f"the {name} cases")
    assert not failures, f"{len(failures)} of {len(cases)} {name} cases failed:\n" + "\n".join(failures[:60])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hostile_requests_get_their_documented_error_and_write_nothing(target, http, log, family):
    run_family(target, http, log, family, FAMILIES[family](target))


def test_the_corpus_has_at_least_200_cases(target):
    counts = {name: len(make(target)) for name, make in FAMILIES.items()}
    counts["raw HTTP"] = len(raw_cases(target))
    assert sum(counts.values()) >= 200, counts
    print(f"\nhostile corpus: {sum(counts.values())} cases: {counts}")


# ---- raw HTTP: framing, limits, paths and bytes that an HTTP library would not send ------------------------------

def http_request(method, path, headers=(), body=b"", *, length=True):
    """The bytes of one HTTP/1.1 request; `headers` as (name, value) byte pairs."""
    lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [b"%s: %s" % (k, v) for k, v in headers]
    if length and body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def read_response(sock):
    """One HTTP response from `sock`, or None if the server closed or reset the connection without one."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            assert not buf, f"the connection closed in the middle of a response: {buf[:200]!r}"
            return None
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = CaseInsensitiveDict(line.split(": ", 1) for line in header_lines)
    length = int(headers.get("Content-Length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the middle of a response body"
        body += chunk
    r = requests.Response()
    r.status_code, r.headers, r._content = int(status_line.split(" ")[1]), headers, body[:length]
    return r


def exchange(port, data, timeout_s=30):
    """Sends `data` (all of it, as far as the server reads it) and returns the response, or None."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and stopped reading; its answer is still to be read
        return read_response(sock)


@dataclass
class RawCase:
    name: str
    request: bytes
    status: int = 400
    code: str = "invalid_request"
    doc_path: str = ADD    # the operation whose responses the answer is checked against; None: the Error schema


def raw_cases(t):
    key = (b"X-API-Key", API_KEY.encode())
    json_type = (b"Content-Type", b"application/json")
    add = ADD.encode()
    ok_body = dumps(valid_bodies(t)[ADD])
    # A create of the target, padded with JSON whitespace: the parser accepts it, the ledger refuses (409).
    recreate = dumps({"name": "x", "externalId": t.external_id})
    padded = recreate[:-1] + b" " * (BODY_BYTES_MAX - len(recreate)) + b"}"
    over = ok_body[:-1] + b" " * (BODY_BYTES_MAX + 1 - len(ok_body)) + b"}"
    chunked_over = b"".join(b"%x\r\n%s\r\n" % (4096, b" " * 4096) for _ in range(BODY_BYTES_MAX // 4096 + 2))
    big_header = (b"X-Padding", b"p" * (HEADER_BYTES_MAX + 1))
    many_headers = [(b"X-Pad-%d" % i, b"q" * 40) for i in range(HEADER_BYTES_MAX // 40 + 10)]
    cases = [
        RawCase("body of 64 KiB + 1", http_request(b"POST", add, [key, json_type], over), 413, "payload_too_large"),
        RawCase("Content-Length 64 KiB + 1, body not sent",
                http_request(b"POST", add, [key, json_type, (b"Content-Length", b"65537")], length=False),
                413, "payload_too_large"),
        RawCase("Content-Length 10^14", http_request(b"POST", add, [key, (b"Content-Length", b"100000000000000")],
                                                     length=False), 413, "payload_too_large"),
        RawCase("chunked body above 64 KiB",
                http_request(b"POST", add, [key, json_type, (b"Transfer-Encoding", b"chunked")],
                             chunked_over + b"0\r\n\r\n", length=False), 413, "payload_too_large"),
        RawCase("body of exactly 64 KiB is read", http_request(b"POST", CREATE.encode(), [key, json_type], padded),
                409, "account_exists", CREATE),
        RawCase("one header above 16 KiB", http_request(b"POST", add, [key, json_type, big_header], ok_body), 431),
        RawCase("many headers above 16 KiB", http_request(b"POST", add, [key, json_type] + many_headers, ok_body),
                431),
        RawCase("request target above 16 KiB",
                http_request(b"GET", BALANCE.encode() + b"?externalId=" + b"e" * (HEADER_BYTES_MAX + 1), [key]),
                431, doc_path=BALANCE),
        RawCase("not HTTP", b"GARBAGE\r\n\r\n"),
        RawCase("binary junk", bytes(range(256)) + b"\r\n\r\n"),
        RawCase("TLS client hello", bytes.fromhex("16030100a5010000a10303") + b"\x00" * 40 + b"\r\n\r\n"),
        RawCase("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        RawCase("header without a colon", http_request(b"POST", add, [key, (b"Broken", b"")], ok_body)
                .replace(b"Broken: ", b"Broken")),
        RawCase("space before the colon", http_request(b"POST", add, [key, (b"X-Junk ", b"1")], ok_body)),
        RawCase("NUL in a header value", http_request(b"POST", add, [key, (b"X-Junk", b"a\x00b")], ok_body)),
        RawCase("Content-Length not a number",
                http_request(b"POST", add, [key, (b"Content-Length", b"abc")], ok_body, length=False)),
        RawCase("Content-Length negative",
                http_request(b"POST", add, [key, (b"Content-Length", b"-1")], ok_body, length=False)),
        RawCase("Content-Length above 2^64",
                http_request(b"POST", add, [key, (b"Content-Length", b"18446744073709551617")], ok_body,
                             length=False)),
        RawCase("two different Content-Lengths",
                http_request(b"POST", add, [key, (b"Content-Length", b"%d" % len(ok_body)), (b"Content-Length", b"5")],
                             ok_body, length=False)),
        RawCase("Content-Length and chunked",
                http_request(b"POST", add, [key, (b"Content-Length", b"%d" % len(ok_body)),
                                            (b"Transfer-Encoding", b"chunked")],
                             b"%x\r\n%s\r\n0\r\n\r\n" % (len(ok_body), ok_body), length=False)),
        RawCase("chunk size not hex",
                http_request(b"POST", add, [key, (b"Transfer-Encoding", b"chunked")], b"zz\r\n{}\r\n0\r\n\r\n",
                             length=False)),
        RawCase("chunk size overflowing",
                http_request(b"POST", add, [key, (b"Transfer-Encoding", b"chunked")],
                             b"fffffffffffffffffff\r\n{}\r\n0\r\n\r\n", length=False)),
        RawCase("HTTP version 9.9", http_request(b"POST", add, [key], ok_body).replace(b"HTTP/1.1", b"HTTP/9.9", 1)),
        # Methods are case-sensitive (RFC 9110): "post" is not POST.
        RawCase("method in lower case", http_request(b"post", add, [key, json_type], ok_body), 405,
                "method_not_allowed"),
        RawCase("unknown method", http_request(b"BREW", add, [key, json_type], ok_body), 405, "method_not_allowed"),
    ]
    routes = [b"/v1/account", b"/v1/reservation", b"/v1/usages", b"/v1/transaction", b"/v1/accounts/create/",
              b"/v1/Accounts/create", b"//v1/accounts/create", b"/v1/accounts/credits/add/../deduct",
              b"/v1/accounts/credits", b"/v1/accounts/create%00", b"/v1/accounts/create.json", b"/v2/accounts/create",
              b"/V1/ACCOUNTS/CREATE", b"/v1/accounts/create;x", b"/v1/accounts/%63reate",
              b"/v1/accounts/create#x", b"*", b"http://127.0.0.1/v1/accounts/create"]
    for path in routes:
        cases.append(RawCase(f"POST {path!r}", http_request(b"POST", path, [key, json_type], ok_body), 404,
                             "not_found", None))
        cases.append(RawCase(f"POST {path!r} without a key", http_request(b"POST", path, [json_type], ok_body), 404,
                             "not_found", None))
    return cases


def test_raw_http_gets_its_documented_error_and_writes_nothing(target, http, log):
    failures = []
    cases = raw_cases(target)
    for case in cases:
        try:
            r = exchange(target.port, case.request)
            assert r is not None, "closed without an answer"
            assert r.status_code == case.status, f"expected {case.status}, got {r.status_code}: {r.text[:300]}"
            if case.doc_path is None:
                assert_valid(r.json(), "/components/schemas/Error", f"{case.name} body")
            elif case.status == 405:
                check_as(r, case.doc_path, "post", 405, case.code)
            else:
                check(r, case.doc_path, "get" if case.doc_path in QUERIES else "post")
            assert r.json()["error"]["code"] == case.code, r.text
            assert_view_unchanged(target, http)
        except (AssertionError, OSError, ValueError, KeyError) as e:
            failures.append(f"  {case.name}: {type(e).__name__}: {str(e)[:400]}")
    log.assert_nothing_new("the raw HTTP cases")
    assert not failures, f"{len(failures)} of {len(cases)} raw HTTP cases failed:\n" + "\n".join(failures)


def test_a_client_that_sends_a_large_body_before_reading_gets_the_413(target, http, log):
    """A client that writes all of a 2 MB body before it reads (Python's urllib does) reads the 413: the server
    reads and drops the rest of the body (up to UNREAD_DRAIN_BYTES_MAX) before it closes, instead of resetting the
    connection under the client's feet. The body's bulk is sent after the 413 has arrived, which is when a close
    that does not drain resets the connection."""
    body = dumps(valid_bodies(target)[ADD])
    big = body[:-1] + b" " * (LARGE_BODY_BYTES - len(body)) + b"}"
    key = (b"X-API-Key", API_KEY.encode())
    request = http_request(b"POST", ADD.encode(), [key, (b"Content-Type", b"application/json")], big)
    first = request.index(b"\r\n\r\n") + 4 + 65536
    with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
        sock.sendall(request[:first])
        readable, _, _ = select.select([sock], [], [], 30)
        assert readable, "no answer to a request whose Content-Length is above the limit"
        sock.sendall(request[first:])
        r = read_response(sock)
        assert r is not None and r.status_code == 413, r and r.text
        check(r, ADD, "post")
        assert sock.recv(1) == b"", "the connection stays open after the 413"

    def body_after_a_pause():  # urllib itself: headers, then the body, then it reads
        yield big[:65536]
        time.sleep(ANSWER_WAIT_S)
        yield big[65536:]
    request = urllib.request.Request(target.url + ADD, data=body_after_a_pause(), method="POST",
                                     headers={"X-API-Key": API_KEY, "Content-Type": "application/json",
                                              "Content-Length": str(len(big))})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == "payload_too_large"
    assert_view_unchanged(target, http)
    log.assert_nothing_new("the large bodies")


def test_the_drain_after_a_413_is_bounded(target):
    """A client that keeps sending past UNREAD_DRAIN_BYTES_MAX has its connection closed: the server does not read
    an endless body. One that keeps sending slowly has it closed too, at the drain's time limit."""
    endless = 8 * UNREAD_DRAIN_BYTES_MAX
    head = http_request(b"POST", ADD.encode(), [(b"X-API-Key", API_KEY.encode()),
                                                (b"Content-Length", b"%d" % endless)], length=False)
    with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
        sock.sendall(head)
        chunk = b" " * 65536
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(endless // len(chunk)):
                sock.sendall(chunk)
    with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
        sock.sendall(head)
        r = read_response(sock)
        assert r is not None and r.status_code == 413, r and r.text
        deadline = time.monotonic() + 30  # far beyond the drain's time limit (2 s)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while time.monotonic() < deadline:
                sock.sendall(b" ")
                time.sleep(0.1)


def test_pipelined_requests_are_answered_in_order(target, log):
    """A refused request does not poison the connection: the next one on it is answered as usual."""
    key = (b"X-API-Key", API_KEY.encode())
    bad = http_request(b"POST", ADD.encode(), [key], b'{"externalId":"%s","amount":0}' % target.external_id.encode())
    good = http_request(b"GET", GET.encode() + b"?accountId=" + target.account_id.encode(), [key])
    with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
        sock.sendall(bad.replace(b"Connection: close", b"Connection: keep-alive") + good)
        first, second = read_response(sock), read_response(sock)
    assert first.status_code == 400 and first.json()["error"]["field"] == "amount", first.text
    assert second.status_code == 200 and second.json() == target.view, second.text
    log.assert_nothing_new("the pipelined requests")


def test_unknown_fields_are_ignored_and_write_only_the_command(stack, log):
    """docs/openapi.yaml: unknown fields are ignored. Fields named like the event's own (tenant, balanceAfter,
    transactionId, type, payload) change nothing: exactly the valid command is written, with none of them."""
    c = Client(stack.url)
    ext = f"hostile_unknown_{NONCE}"
    fake_txn = "txn_" + "0" * 24 + "_" + "0" * 16
    created = c.post(CREATE, {"name": "U", "externalId": ext, "id": "acc_" + "0" * 24, "tenant": "tenant_b",
                              "balance": 10**6, "createdAt": "1970-01-01T00:00:00.000Z", "isAdmin": True})
    assert created.status_code == 200, created.text
    account = created.json()["account"]
    added = c.post(ADD, {"externalId": ext, "amount": 7, "balance": 10**9, "balanceAfter": 10**9, "tenant": "tenant_b",
                         "transactionId": fake_txn, "type": "CreditsDeducted", "payload": {"amount": 1},
                         "__proto__": {"admin": True}, "Amount": 1000, "amount ": 1000, "eventId": str(uuid.uuid4())})
    assert added.status_code == 200, added.text
    assert (added.json()["added"], added.json()["balance"]) == (7, 7)
    assert added.json()["transactionId"] != fake_txn

    written = [e for e in log.new_events() if e["accountId"] == account["id"]]
    assert [e["type"] for e in written] == ["AccountCreated", "CreditsAdded"], written
    assert account["id"] != "acc_" + "0" * 24 and all(e["tenant"] == "tenant_a" for e in written)
    assert set(written[0]["payload"]) == {"name", "externalId", "email", "metadata"}
    # grantId, priority and category: the grant every CreditsAdded creates, with its default terms (issue 21).
    assert set(written[1]["payload"]) == {"transactionId", "amount", "balanceAfter", "description", "paymentMethod",
                                          "metadata", "grantId", "priority", "category"}
    assert written[1]["payload"]["grantId"] == "grt" + added.json()["transactionId"][3:]
    assert (written[1]["payload"]["priority"], written[1]["payload"]["category"]) == (50, "paid")
    assert (written[1]["payload"]["amount"], written[1]["payload"]["balanceAfter"]) == (7, 7)
    assert written[1]["payload"]["transactionId"] == added.json()["transactionId"]
    balance = c.get(BALANCE, externalId=ext).json()
    assert (balance["balance"], balance["reserved"], balance["available"]) == (7, 0, 7)
    log.assert_nothing_new("the unknown-field requests")


def test_nul_and_astral_characters_are_stored_as_sent(stack, log):
    """Valid but unusual text (NUL, U+FFFF, an astral emoji, a right-to-left mark) passes validation and comes
    back byte for byte from the log and the view."""
    c = Client(stack.url)
    name = "a\u0000b \uffff \U0001f600 \u200f end"
    ext = f"hostile_text_{NONCE}\u0000x"
    r = c.post(CREATE, {"name": name, "externalId": ext, "metadata": {"k\u0000": "\U0001f600"}})
    assert r.status_code == 200, r.text
    account_id = r.json()["account"]["id"]
    view = c.get(GET, accountId=account_id).json()["account"]
    assert (view["name"], view["externalId"], view["metadata"]) == (name, ext, {"k\u0000": "\U0001f600"})
    assert c.get(BALANCE, externalId=ext).json()["accountId"] == account_id
    written = [e for e in log.new_events() if e["accountId"] == account_id]
    assert [(e["type"], e["payload"]["name"], e["payload"]["externalId"]) for e in written] == [
        ("AccountCreated", name, ext)]


# ---- bytes that are not UTF-8 outside the body (these once dropped the connection or killed the writer) ------

def test_a_path_that_is_not_utf8_is_answered_404(target, log):
    key = (b"X-API-Key", API_KEY.encode())
    for path in (b"/v1/accounts/credits/add\xff", b"/v1/\xc3\x28"):
        r = exchange(target.port, http_request(b"POST", path, [key], dumps(valid_bodies(target)[ADD])))
        assert r is not None, f"POST {path!r}: closed without an answer"
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    log.assert_nothing_new("paths that are not UTF-8")


@pytest.mark.parametrize("header", [b"X-Request-Id", b"Idempotency-Key"])
def test_a_header_that_is_not_utf8_is_refused_and_writes_nothing(target, log, http, header):
    key = (b"X-API-Key", API_KEY.encode())
    r = exchange(target.port, http_request(b"POST", ADD.encode(), [key, (header, b"h\xff\xfe")],
                                           dumps(valid_bodies(target)[ADD])))
    assert r is not None, "closed without an answer"
    assert r.status_code == 400 and r.json()["error"] == {"code": "invalid_request", "field": header.decode(),
                                                          "message": r.json()["error"]["message"]}, r.text
    assert_view_unchanged(target, http)
    log.assert_nothing_new(f"a {header.decode()} that is not UTF-8")


# ---- slow clients -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_timeouts(stack, target):
    """The stack under test with idle and request timeouts of SLOW_TIMEOUT_MS; the defaults again afterwards."""
    saved = dict(stack.api.env)
    stack.api.env.update({"CREDITS_IDLE_TIMEOUT_MS": str(SLOW_TIMEOUT_MS),
                          "CREDITS_REQUEST_TIMEOUT_MS": str(SLOW_TIMEOUT_MS)})
    stack.restart()
    yield stack
    stack.api.env.clear()
    stack.api.env.update(saved)
    stack.restart()


def drip(port, data, pause_s):
    """Sends `data` one byte at a time, `pause_s` apart, then reads the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            sock.sendall(data[i:i + 1])
            time.sleep(pause_s)
        return read_response(sock)


def time_to_close(sock, started):
    """Seconds from `started` (a time.monotonic() taken before the connection was opened, so before the server's
    timer started) until the server closes `sock`; asserts it sends nothing before."""
    sock.settimeout(SLOW_TIMEOUT_MS / 1000 * TIMEOUT_SLACK + 5)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        data = b""
    assert data == b"", f"the server answered a stalled request: {data[:200]!r}"
    return time.monotonic() - started


def test_a_request_dripped_byte_by_byte_within_the_timeout_is_answered(short_timeouts, target, http, log):
    key = (b"X-API-Key", API_KEY.encode())
    refused = http_request(b"POST", ADD.encode(), [key],
                           b'{"externalId":"%s","amount":0}' % target.external_id.encode())
    query = http_request(b"GET", GET.encode() + b"?accountId=" + target.account_id.encode(), [key])
    for request, check_answer in (
            (refused, lambda r: r.status_code == 400 and r.json()["error"]["field"] == "amount"),
            (query, lambda r: r.status_code == 200 and r.json() == target.view)):
        # The whole request within 40% of the timeout, in as many pauses as it has bytes.
        r = drip(target.port, request, SLOW_TIMEOUT_MS / 1000 * 0.4 / len(request))
        assert r is not None and check_answer(r), r and r.text
    assert_view_unchanged(target, http)
    log.assert_nothing_new("the dripped requests")


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(short_timeouts, target):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
        elapsed = time_to_close(sock, started)
    assert SLOW_TIMEOUT_MS / 1000 * 0.9 <= elapsed <= SLOW_TIMEOUT_MS / 1000 * TIMEOUT_SLACK, elapsed


@pytest.mark.parametrize("sent", ["half the request line", "the headers but their end", "all but the body's last byte"])
def test_a_stalled_request_is_closed_unanswered_and_writes_nothing(short_timeouts, target, http, log, sent):
    key = (b"X-API-Key", API_KEY.encode())
    request = http_request(b"POST", ADD.encode(), [key, (b"Content-Type", b"application/json")],
                           dumps(valid_bodies(target)[ADD]))  # valid: sent whole, it would add 5 credits
    cut = {"half the request line": 12, "the headers but their end": request.index(b"\r\n\r\n"),
           "all but the body's last byte": len(request) - 1}[sent]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
        sock.sendall(request[:cut])
        elapsed = time_to_close(sock, started)
    assert elapsed <= SLOW_TIMEOUT_MS / 1000 * TIMEOUT_SLACK, elapsed
    assert_view_unchanged(target, http)
    log.assert_nothing_new(f"a request stalled after {sent}")


def test_stalled_connections_do_not_hold_up_others(short_timeouts, target, http):
    stalled = []
    try:
        for _ in range(STALLED_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=30)
            sock.sendall(b"POST /v1/accounts/credits/add HTTP/1.1\r\nHost: x\r\n")
            stalled.append(sock)
        started = time.monotonic()
        r = requests.get(target.url + GET, params={"accountId": target.account_id}, headers={"X-API-Key": API_KEY},
                         timeout=30)
        assert r.status_code == 200 and r.json() == target.view, r.text
        # The bound is the claim: served one after another, the request would wait for the stalled connections'
        # request timeout. SLOW_TIMEOUT_MS is long enough that a loaded machine answers well within it.
        assert time.monotonic() - started < SLOW_TIMEOUT_MS / 1000, "a request waited behind stalled connections"
    finally:
        for sock in stalled:
            sock.close()
