"""docs/openapi.yaml against the server, by a third-party fuzzer: Schemathesis (PyPI, pinned in
scripts/install-deps.sh) generates requests from the document, the valid ones and the invalid ones, in all its
phases (examples, coverage of boundaries, random fuzzing, and stateful sequences that follow the document's links),
sends them to a credits-api of this test's own, and runs every check it has (`--checks all`): a valid request must
not be refused, an invalid one must not be accepted, every response must be one the document declares (status,
headers, body), no 5xx, 405 with `Allow` for an undeclared method, and so on.

The exclusions, each with its reason, are in schemathesis_hooks.py: refusals for the rules the document states in
words because JSON Schema cannot (across fields, the ledger's state, bytes rather than characters). Nothing else is
excluded: every check runs on every operation.

The run is bounded by EXAMPLES_PER_OPERATION (and RUN_TIMEOUT_S); CREDITS_TEST_SCHEMATHESIS_EXAMPLES and
CREDITS_TEST_SCHEMATHESIS_SEED change the budget and the seed for a longer or different run by hand, e.g.
`CREDITS_TEST_SCHEMATHESIS_EXAMPLES=500 CREDITS_TEST_SCHEMATHESIS_SEED=7 python3 -m pytest -q
tests/integration/test_schemathesis.py`.
"""
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import schemathesis_hooks as hooks
from conftest import API_KEY, REDIS_DBS, REPO, Client, private_stack

DOC_PATH = REPO / "docs" / "openapi.yaml"
HERE = Path(__file__).resolve().parent
EXAMPLES_PER_OPERATION = int(os.environ.get("CREDITS_TEST_SCHEMATHESIS_EXAMPLES", "150"))
SEED = os.environ.get("CREDITS_TEST_SCHEMATHESIS_SEED", "20261205")  # fixed: a fresh clone runs what CI ran
RUN_TIMEOUT_S = 600          # the default budget takes about a minute on 2 cores (ASan build)
OUTPUT_TAIL_CHARS = 30000    # of Schemathesis's report, shown when the run fails


@pytest.fixture(scope="module")
def fuzzed():
    """A stack on topics and a Redis database of its own: the fuzzer's thousands of accounts, holds and usage
    records stay out of the other tests' views."""
    s = private_stack("schemathesis", REDIS_DBS["test_schemathesis"])
    s.start()
    yield s
    s.stop()


def operations():
    spec = yaml.safe_load(DOC_PATH.read_text())
    return sum(1 for item in spec["paths"].values() for method in item if method in ("get", "post"))


def schemathesis(url, workdir, doc=DOC_PATH, *args):
    """Runs the Schemathesis CLI (the test's own Python) against `url`, with the hooks; its exit code and report.
    It runs in `workdir`, where it keeps its cache."""
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "schemathesis.cli", "run", str(doc), "--url", url,
               "--header", f"X-API-Key: {API_KEY}", "--checks", "all", "--seed", SEED,
               "--generation-database", "none", "--no-color", *args]
    run = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return run.returncode, run.stdout + run.stderr


def test_the_server_keeps_the_published_contract(fuzzed, tmp_path):
    code, report = schemathesis(fuzzed.url, tmp_path, DOC_PATH, "--max-examples", str(EXAMPLES_PER_OPERATION))
    print(report[-3000:])
    assert code == 0, f"Schemathesis found the contract and the server disagreeing:\n{report[-OUTPUT_TAIL_CHARS:]}"
    total = operations()
    assert re.search(rf"Selected: {total}/{total}\s+Tested: {total}\b", report), \
        f"Schemathesis did not test all {total} operations:\n{report[-OUTPUT_TAIL_CHARS:]}"
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}\b", report), f"the {phase} phase did not run and pass:\n{report[-3000:]}"


def test_a_contract_the_server_does_not_keep_fails_the_run(fuzzed, tmp_path):
    """The run can fail: with a copy of the document that promises what the server refuses (a page of up to 500
    entries, where the server takes 200), Schemathesis reports the disagreement."""
    text = DOC_PATH.read_text()
    promise = "anyOf: [{type: integer, minimum: 1, maximum: 200}, {const: ''}]"
    assert text.count(promise) == 1, "the Limit parameter changed: update this test"
    broken = tmp_path / "openapi-broken.yaml"
    broken.write_text(text.replace(promise, promise.replace("maximum: 200", "maximum: 500")))
    code, report = schemathesis(fuzzed.url, tmp_path, broken, "--include-operation-id", "listAccounts",
                                "--phases", "coverage", "--max-examples", "20")
    assert code != 0, f"Schemathesis accepted a contract the server does not keep:\n{report[-3000:]}"
    assert "ST202" in report and "limit must be an integer from 1 to 200" in report, report[-3000:]


# ---- the exclusions themselves: each drops its own rule's refusal and nothing else ------------------------------

def case(method="POST", body=None, query=None, path="/v1/accounts/credits/add"):
    return SimpleNamespace(method=method, body=body if body is not None else {}, query=query or {}, path=path)


def test_each_exclusion_drops_only_the_refusal_of_its_own_rule():
    twice = {"code": "invalid_request", "field": "externalId"}
    assert hooks.account_named_twice(case(body={"accountId": "acc_1", "externalId": "u"}), 400, twice)
    assert not hooks.account_named_twice(case(body={"externalId": "u"}), 400, twice)
    assert not hooks.account_named_twice(case(body={"accountId": "acc_1", "externalId": "u"}), 404, twice)

    missing = {"code": "invalid_request", "field": "accountId"}
    assert hooks.account_not_named(case("GET", query={"limit": 5}), 400, missing)
    assert not hooks.account_not_named(case("GET", query={"externalId": "u"}), 400, missing)

    over = {"field": "amount", "details": {"original": 5, "reversed": 5, "remaining": 0}}
    assert hooks.ledger_state_details(case(), 400, over)
    assert not hooks.ledger_state_details(case(), 400, {"field": "amount", "details": {"original": 5}})
    assert not hooks.ledger_state_details(case(), 400, {"field": "amount"})

    dates = {"field": "endDate"}
    assert hooks.dates_out_of_order(case("GET", query={"startDate": "2026-01-02T00:00:00Z",
                                                       "endDate": "2026-01-01T00:00:00.5z"}), 400, dates)
    assert not hooks.dates_out_of_order(case("GET", query={"startDate": "2026-01-01T00:00:00Z",
                                                           "endDate": "2026-01-02T00:00:00Z"}), 400, dates)

    summary = {"field": "startDate"}
    assert hooks.summary_range(case("GET", query={"summary": "true", "startDate": "2000-01-01T00:00:00Z"}), 400,
                               summary)
    assert not hooks.summary_range(case("GET", query={"summary": "true", "startDate": "2000-01-01T00:00:00Z",
                                                      "endDate": "2000-02-01T00:00:00Z"}), 400, summary)
    assert hooks.summary_range(case("GET", query={"startDate": "2000-01-01T00:00:00Z"}, path="/v1/reports/credits"),
                               400, summary)
    assert not hooks.summary_range(case("GET", query={"startDate": "2000-01-01T00:00:00Z"}, path="/v1/usage"), 400,
                                   summary)

    fraction = {"field": "amount"}
    assert hooks.integer_with_a_fraction(case(body={"amount": 5.0}), 400, fraction)
    assert not hooks.integer_with_a_fraction(case(body={"amount": 5}), 400, fraction)
    assert not hooks.integer_with_a_fraction(case(body={"amount": 5.5}), 400, fraction)

    long_text = {"field": "description"}
    assert hooks.string_bytes(case(body={"description": "é" * 200}), 400, long_text)
    assert not hooks.string_bytes(case(body={"description": "e" * 200}), 400, long_text)

    assert hooks.ledger_available_credits(case(), 402, {"code": "insufficient_credits"})
    assert not hooks.ledger_available_credits(case(), 400, {"code": "invalid_request"})


def test_the_hooks_derive_the_account_id_the_server_derives(fuzzed):
    """map_case gives positive cases a matching accountId: it must be the server's, or they would all be refused."""
    created = Client(fuzzed.url).post("/v1/accounts/create", {"name": "S", "externalId": "st_naming_ü"})
    assert created.status_code in (200, 409), created.text
    account = created.json()["account"]["id"] if created.status_code == 200 else \
        created.json()["error"]["details"]["accountId"]
    assert hooks.derived_account_id(hooks.TENANT, "st_naming_ü") == account
    assert f"{hooks.TENANT}:{API_KEY}" in fuzzed.env["CREDITS_API_KEYS"]
