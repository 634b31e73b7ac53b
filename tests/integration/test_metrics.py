"""/metrics on the API and the projector, read with the reference parser (prometheus_client), and the JSON log
lines both processes write."""
import uuid

import requests
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import BROKERS, LEDGER_TOPIC, USAGE_TOPIC, eventually, log_records

ADD = "/v1/accounts/credits/add"


def scrape(url):
    """{(sample name, sorted labels): value} of one scrape, parsed by prometheus_client."""
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")  # the API adds version=0.0.4, civetweb does not
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels):
    """The sample's value; a sample the scrape does not have fails (a renamed or dropped metric is not a 0)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels or ''} in the scrape"
    return samples[key]


def moved(before, after, name, **labels):
    """How far a counter moved between two scrapes. It must be in the later one; a labelled series that first
    counted in between is absent from the earlier one, and started at 0."""
    key = (name, tuple(sorted(labels.items())))
    return value(after, name, **labels) - before.get(key, 0.0)


def partitions(topic):
    return sorted(AdminClient({"bootstrap.servers": BROKERS}).list_topics(topic, timeout=30).topics[topic].partitions)


def test_api_metrics_count_requests_commands_and_kafka_transactions(stack, client, external_id):
    r = client.post("/v1/accounts/create", {"name": "Metered", "externalId": external_id})
    assert r.status_code == 200, r.text
    account_id = r.json()["account"]["id"]
    api = stack.url + "/metrics"
    before = scrape(api)

    key = "metrics-" + uuid.uuid4().hex
    for i in range(5):
        headers = {"Idempotency-Key": key} if i == 4 else None
        r = client.post(ADD, {"accountId": account_id, "amount": 10}, headers=headers)
        assert r.status_code == 200, r.text
    r = client.post(ADD, {"accountId": account_id, "amount": 10}, headers={"Idempotency-Key": key})
    assert r.status_code == 200 and r.headers.get("Idempotent-Replayed") == "true", r.text
    r = client.post(ADD, {"accountId": account_id, "amount": -1})
    assert r.status_code == 400, r.text
    r = client.get("/v1/accounts/" + account_id, secret="x")
    assert r.status_code == 404, r.text

    after = scrape(api)
    assert moved(before, after, "credits_api_http_requests_total", route=ADD, status="200") == 6
    assert moved(before, after, "credits_api_http_requests_total", route=ADD, status="400") == 1
    assert moved(before, after, "credits_api_http_requests_total", route="other", status="404") == 1
    assert moved(before, after, "credits_api_http_request_duration_seconds_count", route=ADD) == 7
    assert moved(before, after, "credits_api_http_request_duration_seconds_bucket", route=ADD, le="+Inf") == 7
    assert moved(before, after, "credits_api_http_request_duration_seconds_sum", route=ADD) > 0
    # The replay is answered from the idempotency store: five commands reached the log, one was replayed.
    assert moved(before, after, "credits_api_commands_committed_total") == 5
    assert moved(before, after, "credits_api_idempotent_replays_total") == 1
    assert moved(before, after, "credits_api_events_appended_total") >= 5  # expiries may join a transaction
    assert moved(before, after, "credits_api_kafka_transaction_commands_sum") == 5
    assert 1 <= moved(before, after, "credits_api_kafka_transaction_commands_count") <= 5
    assert moved(before, after, "credits_api_kafka_transaction_duration_seconds_count") >= 1
    assert moved(before, after, "credits_api_kafka_transactions_failed_total", outcome="aborted") == 0
    assert moved(before, after, "credits_api_kafka_transactions_failed_total", outcome="unknown") == 0
    assert value(after, "credits_api_open_connections") >= 1  # the scrape's own
    assert value(after, "credits_api_writer_queue_commands") >= 0
    assert ("credits_api_redis_errors_total", ()) in after
    # The idempotency keys: the one above is among them, and none was forgotten for lack of room.
    assert value(after, "credits_idempotency_keys") >= 1
    assert value(after, "credits_idempotency_keys_max") == 16_000_000
    assert value(after, "credits_idempotency_bytes") > 0
    assert value(after, "credits_idempotency_window_seconds") == 86400
    # Labels are route templates: no account id, no query string, whatever the client sent.
    for name, labels in after:
        for _, v in labels:
            assert account_id not in v and "?" not in v, (name, labels)


def test_projector_metrics_count_applied_events_and_report_lag_per_partition(stack, client, external_id):
    url = stack.projector_metrics_url
    before = scrape(url)
    r = client.post("/v1/accounts/create", {"name": "Projected", "externalId": external_id})
    assert r.status_code == 200, r.text
    for _ in range(3):
        assert client.post(ADD, {"externalId": external_id, "amount": 5}).status_code == 200

    def applied():
        after = scrape(url)
        assert moved(before, after, "credits_projector_events_applied_total") >= 4
        return after

    after = eventually(applied)
    assert moved(before, after, "credits_projector_batch_duration_seconds_count") >= 1
    assert ("credits_projector_poison_events_total", ()) in after
    assert ("credits_projector_redis_errors_total", ()) in after
    for name in ("credits_projector_view_losses_total", "credits_projector_view_rebuilds_total",
                 "credits_projector_view_rebuilding"):  # test_view_loss.py makes them move
        assert (name, ()) in after, name
    assert value(after, "credits_projector_view_rebuilding") == 0  # it folds: the view is there
    for topic in (LEDGER_TOPIC, USAGE_TOPIC):
        for p in partitions(topic):
            labels = dict(topic=topic, partition=str(p))
            key = tuple(sorted(labels.items()))
            assert ("credits_projector_lag_events", key) in after, (topic, p)
            assert ("credits_projector_lag_seconds", key) in after, (topic, p)
            assert value(after, "credits_projector_lag_events", **labels) >= 0
            assert value(after, "credits_projector_lag_seconds", **labels) >= 0


def test_log_lines_are_json_objects(stack):
    # Every line the running processes wrote, from their start on: one that is not a JSON object fails.
    for process in (stack.api, stack.projector):
        records = log_records(process.log_path, process.log_from)
        assert records, f"no JSON lines in {process.log_path}"
        for rec in records:
            assert set(rec) >= {"ts", "level", "component", "msg"}, rec
            assert rec["level"] in ("debug", "info", "warn", "error"), rec
            assert rec["ts"].endswith("Z"), rec
    assert any(r["component"] == "credits-api" and r["msg"].startswith("listening on")
               for r in log_records(stack.api.log_path, stack.api.log_from))
    assert any(r["component"] == "credits-projector" and r["msg"].startswith("metrics at")
               for r in log_records(stack.projector.log_path, stack.projector.log_from))


def restart_api(stack, env):
    stack.api.stop()
    stack.api.env = env
    stack.api.start()
    stack.wait_healthy()


def test_access_log_is_opt_in_and_names_request_route_status_and_account(stack, client, external_id):
    r = client.post("/v1/accounts/create", {"name": "Logged", "externalId": external_id})
    account_id = r.json()["account"]["id"]
    quiet_from = stack.api.log_path.stat().st_size
    quiet_id = "req-quiet-" + uuid.uuid4().hex
    assert client.get("/v1/accounts/balance", headers={"X-Request-Id": quiet_id}, accountId=account_id).ok
    saved = stack.api.env
    try:
        restart_api(stack, {**saved, "CREDITS_ACCESS_LOG": "1"})
        loud_id = "req-loud-" + uuid.uuid4().hex
        r = client.post(ADD, {"accountId": account_id, "amount": 7}, headers={"X-Request-Id": loud_id})
        assert r.status_code == 200, r.text
        position = r.headers["Credits-Position"]

        def logged():
            records = [rec for rec in log_records(stack.api.log_path, stack.api.log_from)
                       if rec.get("requestId") == loud_id]
            assert records, f"no access log line names {loud_id}"
            return records

        records = eventually(logged, timeout_s=10, poll_s=0.1)
    finally:
        restart_api(stack, saved)
    assert len(records) == 1, records
    rec = records[0]
    assert rec["route"] == ADD and rec["status"] == 200 and rec["method"] == "POST", rec
    assert rec["accountId"] == account_id and rec["position"] == position, rec
    assert rec["durationMs"] >= 0 and rec["level"] == "info", rec
    assert not [rec for rec in log_records(stack.api.log_path, quiet_from) if rec.get("requestId") == quiet_id]
