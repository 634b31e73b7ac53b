"""Schemathesis hooks for test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS): the exclusions.

Schemathesis sends requests that docs/openapi.yaml allows and expects them accepted (check ST202,
positive_data_acceptance), and requests it forbids and expects them refused (ST201). JSON Schema says what one
value may be; some rules of the ledger span fields, depend on the ledger's state, or count what JSON Schema
cannot count. The document states each of them in words (its "Rules across fields" convention and the field
descriptions), and the server answers each with its own status, field and details. A refusal for one of these
rules is not a disagreement between the contract and the server, so the failure it causes is dropped here; each
rule checks that the request really breaks it, so a refusal for any other reason still fails the run.

Everything else Schemathesis finds fails the test. The drops are counted in its summary ("dropped by
filter_failure").

Two of the rules would refuse nearly every generated request (a random accountId never names the account of a
random externalId; a random endDate is before a random startDate half the time), so map_case makes positive
cases keep them, and the requests get past them to the ledger. Negative cases are sent as generated.
"""
import hashlib
import json
import os
import re
import time

import schemathesis

# The tenant of the key the run uses: conftest.API_KEY's by default.
TENANT = os.environ.get("CREDITS_TEST_SCHEMATHESIS_TENANT", "tenant_a")
STRING_BYTES_MAX = 256      # CREDITS_STRING_BYTES_MAX's default; the schema's maxLength counts characters
METADATA_BYTES_MAX = 4096   # CREDITS_METADATA_BYTES_MAX's default
JSON_DEPTH_MAX = 16         # CREDITS_JSON_DEPTH_MAX's default
SUMMARY_DAYS_MAX = 366      # a usage summary's longest range
SUMMARY_DAYS_DEFAULT = 30   # without startDate, the summary covers this many days up to endDate (or now)
DAY_MS = 86_400_000


def error_of(response):
    try:
        body = json.loads(response.content)
    except (TypeError, ValueError):
        return {}
    return body.get("error", {}) if isinstance(body, dict) else {}


def named(params, name):
    """A non-empty string parameter (body field or query parameter) of the request, or None."""
    value = params.get(name) if isinstance(params, dict) else None
    return value if isinstance(value, str) and value else None


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date, year 0 included (as the server counts them)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def query_time_ms(query, name):
    """A QueryTime parameter in ms since the epoch (the schema's pattern: YYYY-MM-DDTHH:MM:SS[.f]Z), or None."""
    text = named(query, name)
    match = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?[Zz]", text or "")
    if not match:
        return None
    y, mo, d, h, mi, sec = (int(g) for g in match.groups()[:6])
    ms = int((match.group(7) or "0")[:3].ljust(3, "0"))
    return ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms


def depth(value):
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# ---- the rules: each takes (case, status, error) and says whether the refusal is that rule's --------------------

def ledger_available_credits(case, status, error):
    """A debit, hold or reversal needs that many available credits: the ledger's state, not the request's form."""
    return status == 402 and error.get("code") == "insufficient_credits"


def account_not_named(case, status, error):
    """A query about one account needs accountId or externalId; each is optional on its own, and OpenAPI
    parameters cannot say "one of these two"."""
    return (case.method == "GET" and status == 400 and error.get("field") == "accountId"
            and named(case.query, "accountId") is None and named(case.query, "externalId") is None)


def account_named_twice(case, status, error):
    """accountId and externalId, both given, must name the same account (the id is derived from the externalId
    by a hash): generated pairs practically never do."""
    params = case.body if case.method == "POST" else case.query
    return (status == 400 and error.get("field") == "externalId" and named(params, "accountId") is not None
            and named(params, "externalId") is not None)


def ledger_state_details(case, status, error):
    """Refusals that depend on the ledger's state, each with its documented details: the balance would exceed
    2^53-1 (addCredits, reversing a debit); actualAmount above the hold; a reversal above what is left to
    reverse; a reversal of a reversal or of a grant's expiry or void; a grant's expiresAt not after the server's
    clock."""
    shapes = {("amount", frozenset({"balance", "max"})),
              ("expiresAt", frozenset({"expiresAt", "now"})),
              ("actualAmount", frozenset({"reserved", "actualAmount"})),
              ("amount", frozenset({"original", "reversed", "remaining"})),
              ("transactionId", frozenset({"type"})),
              ("transactionId", frozenset({"type", "reason"}))}
    details = error.get("details")
    return (status == 400 and isinstance(details, dict)
            and (error.get("field"), frozenset(details)) in shapes)


def dates_out_of_order(case, status, error):
    """endDate must be later than startDate."""
    start, end = query_time_ms(case.query, "startDate"), query_time_ms(case.query, "endDate")
    return (status == 400 and error.get("field") == "endDate" and start is not None and end is not None
            and end <= start)


def summary_range(case, status, error):
    """A usage summary and the credits report cover whole UTC days, at most 366 of them, and must not start after
    endDate (or now)."""
    by_days = named(case.query, "summary") in ("true", "1") or getattr(case, "path", "") == "/v1/reports/credits"
    if status != 400 or error.get("field") != "startDate" or not by_days:
        return False
    end = query_time_ms(case.query, "endDate")
    last = end - 1 if end is not None else int(time.time() * 1000)
    start = query_time_ms(case.query, "startDate")
    first = start if start is not None else last - (SUMMARY_DAYS_DEFAULT - 1) * DAY_MS
    days = last // DAY_MS - first // DAY_MS + 1
    # The server's clock and ours differ by the request's flight: a day boundary crossed meanwhile is allowed.
    return days > SUMMARY_DAYS_MAX - 1 or days < 2


def integer_with_a_fraction(case, status, error):
    """The server refuses 1000.0 for an integer (docs: "Integers must be written as JSON integers"); JSON Schema
    counts 1000.0 as an integer and cannot say otherwise."""
    value = case.body
    for part in (error.get("field") or "").split("."):  # a nested field is named "costBasis.amount"
        value = value.get(part) if isinstance(value, dict) else None
    return status == 400 and isinstance(value, float) and value.is_integer()


def string_bytes(case, status, error):
    """Strings are limited in UTF-8 bytes; the schema's maxLength counts characters, an upper bound."""
    value = case.body.get(error.get("field")) if isinstance(case.body, dict) else None
    return (status == 400 and isinstance(value, str) and len(value) <= STRING_BYTES_MAX
            and len(value.encode("utf-8", "surrogatepass")) > STRING_BYTES_MAX)


def metadata_bytes(case, status, error):
    """metadata is limited to 4096 bytes as serialised, which JSON Schema cannot count."""
    value = case.body.get("metadata") if isinstance(case.body, dict) else None
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return status == 400 and error.get("field") == "metadata" and size > METADATA_BYTES_MAX - 64


def nesting_depth(case, status, error):
    """A body nested deeper than 16 levels is refused (bodies, unknown fields included), which JSON Schema cannot
    say about fields it does not name."""
    return status == 400 and "field" not in error and depth(case.body) > JSON_DEPTH_MAX - 1


POSITIVE_DATA_RULES = (ledger_available_credits, account_not_named, account_named_twice, ledger_state_details, dates_out_of_order,
                       summary_range, integer_with_a_fraction, string_bytes, metadata_bytes, nesting_depth)


def projection_behind(case, status, error):
    """A query for an account the projection has not seen yet, with a Credits-Min-Position it has not reached in
    CREDITS_READ_WAIT_MS, is answered 503 (never a false 404): the projector's pace, not the contract."""
    return status == 503 and error.get("code") == "unavailable" and "behind the log" in error.get("message", "")


SERVER_ERROR_RULES = (projection_behind,)

RULES_BY_FAILURE_CODE = {
    "ST202": POSITIVE_DATA_RULES,   # positive_data_acceptance: a schema-valid request refused
    "ST101": SERVER_ERROR_RULES,    # not_a_server_error
}


# ---- positive cases made to keep two of the rules, so that they get past them and reach the ledger ---------------

def derived_account_id(tenant, external_id):
    """The account id the server derives from (tenant, externalId) (common/src/ids.cpp, derive_account_id)."""
    material = b"credits/account/" + tenant.encode() + b"\0" + external_id.encode("utf-8", "surrogatepass")
    return "acc_" + hashlib.sha256(material).hexdigest()[:24]


@schemathesis.hook
def map_case(context, case):
    """A positive case that names both accountId and externalId gets the accountId the externalId names, and one
    whose endDate is not later than its startDate gets them swapped (or no endDate, if they are equal): random
    values would break these rules nearly always, and the request would never reach the ledger. Negative cases
    are sent as generated."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    params = case.body if case.method == "POST" else case.query
    if named(params, "accountId") is not None and named(params, "externalId") is not None:
        params["accountId"] = derived_account_id(TENANT, params["externalId"])
    start, end = query_time_ms(case.query, "startDate"), query_time_ms(case.query, "endDate")
    if start is not None and end is not None and end <= start:
        if end == start:
            del case.query["endDate"]
        else:
            case.query["startDate"], case.query["endDate"] = case.query["endDate"], case.query["startDate"]
    return case


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure except a refusal for one of the rules above (False drops it)."""
    rules = RULES_BY_FAILURE_CODE.get(failure.code, ())
    error = error_of(response)
    return not any(rule(case, response.status_code, error) for rule in rules)
