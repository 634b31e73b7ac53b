"""The benchmark's report: the issue's targets as ratios to same-run baselines, the Markdown summary and the chart.
Pure functions of the results dict that bench/run writes (tested in bench/test_report.py)."""


def ms(us):
    return us / 1000.0


def ratio(a, b):
    return a / b if b else None


def targets(res):
    """Each target of issue 12: measured value, baseline, ratio, limit, met (None when not measured)."""
    out = []
    h, b = res["http"], res["baselines"]
    for add, ceiling in zip(h.get("add", []), b.get("http_ceiling", [])):
        r = ratio(add["accepted_per_s"], ceiling["accepted_per_s"])
        out.append({"target": f"durable add-credits >= 50% of HTTP ceiling, {add['connections']} connections",
                    "value": add["accepted_per_s"], "baseline": ceiling["accepted_per_s"], "unit": "cmd/s",
                    "ratio": r, "limit": 0.5, "met": r is not None and r >= 0.5})
    floor = b.get("txn_floor")
    half = h.get("flow_half")
    if floor and half:
        for op in ("reserve", "confirm"):
            p99 = half["per_op"].get(op, {}).get("p99_us")
            if p99 is None:
                continue
            r = ratio(p99, floor["p99_us"])
            out.append({"target": f"{op} p99 at half max load <= 2x bare one-record transaction p99",
                        "value": ms(p99), "baseline": ms(floor["p99_us"]), "unit": "ms", "ratio": r, "limit": 2.0,
                        "met": r is not None and r <= 2.0})
    if floor:
        for name in ("add_half", "flow_half"):
            run = h.get(name)
            if run and run["lag"]["count"]:
                r = ratio(run["lag"]["p99_us"], floor["p99_us"])
                out.append({"target": f"projection lag p99 at half load ({run['name']}) <= 2x transaction floor p99",
                            "value": ms(run["lag"]["p99_us"]), "baseline": ms(floor["p99_us"]), "unit": "ms",
                            "ratio": r, "limit": 2.0, "met": r is not None and r <= 2.0})
    if res.get("projector_catchup"):
        v = res["projector_catchup"]["events_per_s"]
        out.append({"target": "projector catch-up >= 100k events/s", "value": v, "baseline": 100_000,
                    "unit": "events/s", "ratio": v / 100_000, "limit": 1.0, "met": v >= 100_000})
    if res.get("projector_rebuild") and b.get("kcat_read"):
        v, k = res["projector_rebuild"]["events_per_s"], b["kcat_read"]["events_per_s"]
        r = ratio(v, k)
        out.append({"target": "rebuild >= 50% of kcat read rate", "value": v, "baseline": k, "unit": "events/s",
                    "ratio": r, "limit": 0.5, "met": r is not None and r >= 0.5})
    return out


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and v < 100:
        return f"{v:.2f}{unit}"
    return f"{v:,.0f}{unit}"


def load_rows(res):
    h, b = res["http"], res["baselines"]
    ceiling = {r["connections"]: r["accepted_per_s"] for r in b.get("http_ceiling", [])}
    runs = list(b.get("http_ceiling", []))
    for key in ("add", "add_hot", "flow", "flow_half", "balance", "mix", "add_curve"):
        v = h.get(key)
        if v is None:
            continue
        runs += v if isinstance(v, list) else [v]
    rows = []
    for r in runs:
        lat, lag = r["latency"], r["lag"]
        c = ceiling.get(r["connections"])
        rows.append([r["name"], r["connections"], r.get("mode", ""), fmt(r["offered_per_s"]), fmt(r["accepted_per_s"]),
                     fmt(ms(lat["p50_us"])), fmt(ms(lat["p90_us"])), fmt(ms(lat["p99_us"])), fmt(ms(lat["p999_us"])),
                     fmt(ms(lat["max_us"])), r["errors"],
                     fmt(ms(lag["p50_us"])) if lag["count"] else "-", fmt(ms(lag["p99_us"])) if lag["count"] else "-",
                     f"{lag['count']}/{lag.get('timeouts', 0)}/{lag.get('skipped', 0)}" if lag.get("every") else "-",
                     f"{r['accepted_per_s'] / c:.1%}" if c else "-"])
    return rows


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(res):
    b = res["baselines"]
    parts = [f"# Benchmark results ({'quick' if res['quick'] else 'full'} run, {res['started_at']})", "",
             f"Machine: {res['machine']['cores']} cores, load average at start "
             f"{', '.join(f'{x:.1f}' for x in res['machine']['load_average_at_start'])} (shared with other builds: "
             "absolute numbers are noisy; the ratios to baselines of the same run are what to compare). "
             f"Each load run: {res['settings']['seconds']} s measured after {res['settings']['warmup_s']} s warm-up, "
             f"{res['settings']['accounts']} accounts. Latencies in ms; open-loop latencies are measured from each "
             "request's due time. Lag: command answer -> balance query (no Credits-Min-Position) reflects it.", "",
             "## Targets", "",
             table(["target", "value", "baseline", "ratio", "limit", "met"],
                   [[t["target"], fmt(t["value"]) + " " + t["unit"], fmt(t["baseline"]) + " " + t["unit"],
                     fmt(t["ratio"]), t["limit"], "yes" if t["met"] else "**no**"] for t in res["targets"]]), "",
             "## Load runs", "",
             table(["run", "conns", "loop", "offered/s", "accepted/s", "p50", "p90", "p99", "p99.9", "max", "errors",
                    "lag p50", "lag p99", "lag samples/timeouts/skipped", "vs HTTP ceiling"], load_rows(res)), "",
             "## Baselines", ""]
    rows = []
    if "txn_floor" in b:
        for key in ("txn_floor", "txn_floor_alternate_2", "txn_batch_64", "txn_batch_64_alternate_2", "txn_floor_4_writers"):
            if key in b:
                f = b[key]
                how = f"{f['writers']} writer thread(s), {f.get('alternate', 1)} transactional id(s) per writer in turn"
                rows.append([f"Kafka transaction of {f['records_per_transaction']} record(s) ({how}; event-store adapter)",
                             f"p50 {fmt(ms(f['p50_us']))} ms, p99 {fmt(ms(f['p99_us']))} ms, p99.9 {fmt(ms(f['p999_us']))} ms, "
                             f"{fmt(f['transactions_per_s'])} txn/s"])
    for key, label in (("producer_idempotent", "ProducerPerformance acks=all idempotent"),
                       ("producer_transactional", "ProducerPerformance transactional (commit every 100 ms)")):
        if key in b:
            p = b[key]
            rows.append([f"{label}, {p['record_bytes']} B records",
                         f"{fmt(p['records_per_s'])} records/s, p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms"])
    if "kcat_read" in b:
        k = b["kcat_read"]
        rows.append(["kcat read of both topics (replay ceiling)", f"{fmt(k['events_per_s'])} events/s ({k['events']} events)"])
    if "redis" in b:
        rows.append(["redis-benchmark", ", ".join(f"{k} {fmt(v)}" for k, v in b["redis"].items())])
    for key, label in (("projector_catchup", "projector catch-up (whole log into a scratch db)"),
                       ("projector_rebuild", "credits-projector rebuild")):
        if res.get(key):
            p = res[key]
            rows.append([label, f"{fmt(p['events_per_s'])} events/s ({p['events']} events in {p['seconds']:.1f} s)"])
    parts += [table(["baseline", "result"], rows), "", f"Whole run: {res['elapsed_s']:.0f} s.", "",
              "![chart](chart.png)", ""]
    return "\n".join(parts)


def chart(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, t) = plt.subplots(1, 2, figsize=(13, 4.8))
    curve = sorted(res["http"].get("add_curve", []), key=lambda r: r["offered_per_s"])
    x = [r["offered_per_s"] for r in curve]
    for key, label in (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9")):
        a.plot(x, [ms(r["latency"][key]) for r in curve], marker="o", label=label)
    a.plot(x, [ms(r["lag"]["p99_us"]) for r in curve], marker="x", linestyle="--", label="lag p99")
    floor = res["baselines"].get("txn_floor")
    if floor:
        a.axhline(ms(floor["p99_us"]), color="grey", linestyle=":", label="1-record txn p99")
    a.set_yscale("log")
    a.set_xlabel("offered add-credits/s (open loop, 64 connections)")
    a.set_ylabel("latency ms (log)")
    a.set_title("add-credits latency vs offered load")
    a.legend(fontsize=8)
    runs = list(res["baselines"].get("http_ceiling", [])) + list(res["http"].get("add", []))
    for key in ("flow", "mix", "balance", "add_hot"):
        if key in res["http"]:
            runs.append(res["http"][key])
    whole = int(res["settings"]["seconds"])  # the last entry is a partial second: answers after the window closed
    for r in runs:
        t.plot(range(1, whole + 1), r["ok_per_second"][:whole], label=r["name"])
    t.set_yscale("log")
    t.set_xlabel("second of the measured window")
    t.set_ylabel("answered 200 per second (log)")
    t.set_title("throughput over time")
    t.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
