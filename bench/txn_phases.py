#!/usr/bin/env python3
"""Splits librdkafka transactions into phases, from a `debug=eos,protocol` log on stdin (see bench/README.md).

For each transaction (begin_transaction ... commit_transaction return): time until its partitions are
registered (AddPartitionsToTxn, including retries after CONCURRENT_TRANSACTIONS), the produce round trip, the
EndTxn round trip, and the rest. Prints p50/p90/p99 of each phase in ms, and how many transactions retried.
Usage: credits-bench-txn ... --set debug=eos,protocol 2>log; bench/txn_phases.py < log
"""
import json
import re
import sys

STAMP = re.compile(r"^%7\|([\d.]+)\|")


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def phases(lines):
    out, cur = [], None
    for line in lines:
        m = STAMP.match(line)
        if not m:
            continue
        t = float(m.group(1)) * 1000
        if "Transactional API called: begin_transaction" in line:
            cur = {"begin": t, "retries": 0}
        elif cur is None:
            continue
        elif "another concurrent operation" in line:
            cur["retries"] += 1
        elif "registered with transaction" in line and "registered" not in cur:
            cur["registered"] = t
        elif "Received ProduceResponse" in line:
            cur["produced"] = t
        elif "Sent EndTxnRequest" in line:
            cur["endtxn_sent"] = t
        elif "Received EndTxnResponse" in line:
            cur["endtxn_done"] = t
        elif "commit_transaction return" in line:
            cur["end"] = t
            if all(k in cur for k in ("registered", "produced", "endtxn_sent", "endtxn_done")):
                out.append(cur)
            cur = None
    return out


def main():
    txns = phases(sys.stdin.read().splitlines())
    split = {
        "register_partitions": [x["registered"] - x["begin"] for x in txns],
        "produce": [x["produced"] - x["registered"] for x in txns],
        "end_txn": [x["endtxn_done"] - x["endtxn_sent"] for x in txns],
        "total": [x["end"] - x["begin"] for x in txns],
    }
    split["other"] = [t - a - b - c for t, a, b, c in zip(split["total"], split["register_partitions"], split["produce"],
                                                          split["end_txn"])]
    retried = [x for x in txns if x["retries"]]
    res = {"transactions": len(txns), "retried_after_concurrent_transactions": len(retried),
           "total_ms_retried_p50": percentile([x["end"] - x["begin"] for x in retried], 50),
           "total_ms_not_retried_p50": percentile([x["end"] - x["begin"] for x in txns if not x["retries"]], 50),
           "total_ms_not_retried_p99": percentile([x["end"] - x["begin"] for x in txns if not x["retries"]], 99)}
    for k, v in split.items():
        res[k] = {"p50_ms": percentile(v, 50), "p90_ms": percentile(v, 90), "p99_ms": percentile(v, 99),
                  "mean_ms": sum(v) / len(v) if v else None}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
