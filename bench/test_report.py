"""Tests of the report's pure logic (pytest bench/test_report.py); not part of CI, which does not run the bench."""
import report


def run(name, conns, accepted, p99_us=1000, lag_p99_us=0, per_op=None):
    lat = {"p50_us": 500, "p90_us": 800, "p99_us": p99_us, "p999_us": p99_us, "max_us": p99_us}
    lag = {"count": 1 if lag_p99_us else 0, "p50_us": lag_p99_us, "p99_us": lag_p99_us}
    return {"name": name, "connections": conns, "mode": "closed", "offered_per_s": accepted, "accepted_per_s": accepted,
            "latency": lat, "lag": lag, "errors": 0, "per_op": per_op or {}, "ok_per_second": [accepted]}


def results():
    return {
        "http": {"add": [run("add-64", 64, 6000), run("add-256", 256, 4000)],
                 "flow_half": run("flow-64-half", 64, 500, lag_p99_us=30_000,
                                  per_op={"reserve": {"p99_us": 20_000}, "confirm": {"p99_us": 50_000}}),
                 "add_half": run("add-64-at-50pct", 64, 3000, lag_p99_us=10_000)},
        "baselines": {"http_ceiling": [run("static-64", 64, 10000), run("static-256", 256, 10000)],
                      "txn_floor": {"p50_us": 5_000, "p99_us": 20_000, "p999_us": 30_000, "writers": 1, "alternate": 1,
                                    "records_per_transaction": 1, "transactions_per_s": 100.0},
                      "kcat_read": {"events_per_s": 100_000, "events": 1000}},
        "projector_catchup": {"events_per_s": 150_000},
        "projector_rebuild": {"events_per_s": 40_000},
    }


def by_name(targets):
    return {t["target"]: t for t in targets}


def test_throughput_targets_are_ratios_to_the_ceiling_at_the_same_connection_count():
    t = by_name(report.targets(results()))
    assert t["durable add-credits >= 50% of HTTP ceiling, 64 connections"]["ratio"] == 0.6
    assert t["durable add-credits >= 50% of HTTP ceiling, 64 connections"]["met"]
    assert not t["durable add-credits >= 50% of HTTP ceiling, 256 connections"]["met"]


def test_latency_targets_compare_p99_with_twice_the_transaction_floor():
    t = by_name(report.targets(results()))
    assert t["reserve p99 at half max load <= 2x bare one-record transaction p99"]["met"]
    confirm = t["confirm p99 at half max load <= 2x bare one-record transaction p99"]
    assert confirm["ratio"] == 2.5 and not confirm["met"]
    assert t["projection lag p99 at half load (add-64-at-50pct) <= 2x transaction floor p99"]["met"]
    assert t["projection lag p99 at half load (flow-64-half) <= 2x transaction floor p99"]["ratio"] == 1.5


def test_projector_targets():
    t = by_name(report.targets(results()))
    assert t["projector catch-up >= 100k events/s"]["met"]
    rebuild = t["rebuild >= 50% of kcat read rate"]
    assert rebuild["ratio"] == 0.4 and not rebuild["met"]


def test_missing_measurements_yield_no_target_rather_than_a_false_one():
    res = results()
    del res["baselines"]["txn_floor"]
    res["projector_catchup"] = None
    names = by_name(report.targets(res))
    assert not any("transaction" in n for n in names)
    assert "projector catch-up >= 100k events/s" not in names


def test_the_markdown_names_every_run_and_every_target():
    res = results()
    res["projector_catchup"] = {"events_per_s": 150_000, "events": 1000, "seconds": 1.0}
    res["projector_rebuild"] = {"events_per_s": 40_000, "events": 1000, "seconds": 1.0}
    res.update(quick=True, started_at="now", machine={"cores": 2, "load_average_at_start": [1.0, 1.0, 1.0]},
               settings={"seconds": 1, "warmup_s": 0, "accounts": 1}, elapsed_s=1.0)
    res["targets"] = report.targets(res)
    md = report.markdown(res)
    for name in ("add-64", "static-256", "flow-64-half", "projector catch-up"):
        assert name in md
