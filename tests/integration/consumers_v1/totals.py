#!/usr/bin/env python3
"""Per-account totals kept by a downstream consumer of the credits ledger, with any Kafka client.

Reads the ledger topic (and optionally the usage topic) with confluent-kafka and folds the events into its
own totals: balance, reserved, available, credits added and spent per account; tokens per account and model.
It relies only on the published contract (docs/events/): the JSON envelope and the CloudEvents headers.

    pip install confluent-kafka
    python3 totals.py --brokers 127.0.0.1:9092 --until-end            # fold everything, print, exit
    python3 totals.py --since 2026-11-29T00:00:00Z --until-end        # only events from that time on
    python3 totals.py                                                 # follow the topics, print every 5 s

Totals are a fold of the whole stream, so this consumer assigns every partition itself and starts from the
beginning (or --since) on each run instead of committing group offsets: its state lives in memory. A consumer
that keeps state elsewhere would commit offsets in the same transaction as that state (see alerts.py for a
consumer group).
"""
import argparse
import json
import sys
import time
from collections import defaultdict
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

KNOWN_VERSION = 1       # the schemaVersion this consumer understands (per type, all 1 today)
AMOUNT_MAX = 2**53 - 1  # no balance may exceed it
POLL_TIMEOUT_S = 1.0
REPORT_INTERVAL_S = 5.0


class Totals:
    def __init__(self, judge=True):
        # Judging each event by the ledger's rules needs the whole stream: from --since, an account's earlier
        # events are missing, so the rules cannot be checked and every event is applied as it is.
        self.judge = judge
        self.accounts = defaultdict(lambda: {"externalId": "", "balance": 0, "reserved": 0, "added": 0, "spent": 0,
                                             "balanceLowSignals": 0})
        self.holds = {}  # reservationId -> amount still held
        self.tokens = defaultdict(lambda: defaultdict(lambda: {"inputTokens": 0, "outputTokens": 0,
                                                                "cachedTokens": 0, "records": 0}))
        self.skipped = defaultdict(int)  # type -> events this consumer does not know (newer versions or types)
        # account -> {position: why}: records the ledger could not fold either; the account is blocked until an
        # EventVoided names each of them
        self.quarantined = defaultdict(dict)

    def apply(self, event, position=""):
        kind, payload = event.get("type"), event.get("payload", {})
        if event.get("schemaVersion") != KNOWN_VERSION:
            self.skipped[f"{kind} v{event.get('schemaVersion')}"] += 1
            return
        if kind == "EventVoided":  # the ledger never applied the voided record, and neither did this fold
            self.quarantined.get(event["accountId"], {}).pop(payload["voidedPosition"], None)
            return
        a = self.accounts[event["accountId"]]
        why = self.violation(a, kind, payload) if self.judge else None
        if why:  # the ledger refuses it too (docs/events/README.md, "Folding"): set aside until it is voided
            self.quarantined[event["accountId"]][position] = why
            return
        if kind == "AccountCreated":
            a["externalId"] = payload["externalId"]
        elif kind == "CreditsAdded":
            a["balance"] += payload["amount"]
            a["added"] += payload["amount"]
        elif kind == "CreditsDeducted":
            a["balance"] -= payload["amount"]
            a["spent"] += payload["amount"]
        elif kind == "CreditsReserved":
            a["reserved"] += payload["amount"]
            self.holds[payload["reservationId"]] = payload["amount"]
        elif kind == "ReservationConfirmed":
            a["reserved"] -= self.holds.pop(payload["reservationId"], payload["charged"] + payload["released"])
            a["balance"] -= payload["charged"]
            a["spent"] += payload["charged"]
        elif kind in ("ReservationCancelled", "ReservationExpired"):
            a["reserved"] -= self.holds.pop(payload["reservationId"], payload["released"])
        elif kind == "TransactionReversed":  # a refund raises the balance, a correction of added credits lowers it
            sign = -1 if payload["originalType"] == "CreditsAdded" else 1
            a["balance"] += sign * payload["amount"]
            a["added" if sign < 0 else "spent"] -= payload["amount"]
        elif kind == "BalanceLow":
            a["balanceLowSignals"] += 1
        elif kind == "UsageRecorded":
            t = self.tokens[event["accountId"]][payload["modelId"]]
            for field in ("inputTokens", "outputTokens", "cachedTokens"):
                t[field] += payload[field]
            t["records"] += 1
        else:  # a type added after this consumer was written: ignore it, as the compatibility policy asks
            self.skipped[kind] += 1

    def violation(self, a, kind, payload):
        """Why the ledger's fold refuses this event (the money rules of docs/events/README.md), or None."""
        balance, reserved = a["balance"], a["reserved"]
        if kind == "CreditsAdded":
            balance += payload["amount"]
        elif kind == "CreditsDeducted":
            balance -= payload["amount"]
        elif kind == "CreditsReserved":
            if payload["reservationId"] in self.holds:
                return "reservation created twice"
            reserved += payload["amount"]
        elif kind in ("ReservationConfirmed", "ReservationCancelled", "ReservationExpired"):
            held = self.holds.get(payload["reservationId"])
            accounted = payload.get("charged", 0) + payload["released"]
            if held is None or held != accounted:
                return "unknown hold, or one resolved for another amount"
            reserved -= held
            balance -= payload.get("charged", 0)
        elif kind == "TransactionReversed":
            balance += (-1 if payload["originalType"] == "CreditsAdded" else 1) * payload["amount"]
        if not 0 <= reserved <= balance <= AMOUNT_MAX:
            return "overdraft or balance out of range"
        if "balanceAfter" in payload and payload["balanceAfter"] != balance:
            return "balanceAfter disagrees with the fold"
        return None

    def undecodable(self, key, position):
        if key:
            self.quarantined[key][position] = "undecodable"
        else:
            self.skipped["undecodable record without a key"] += 1

    def report(self):
        accounts = {}
        for account_id, a in sorted(self.accounts.items()):
            accounts[account_id] = dict(a, available=a["balance"] - a["reserved"],
                                        tokens={m: dict(t) for m, t in self.tokens.get(account_id, {}).items()})
        blocked = {a: q for a, q in sorted(self.quarantined.items()) if q}
        return {"accounts": accounts, "skipped": dict(self.skipped), "quarantined": blocked}


def start_offsets(consumer, topics, since_ms):
    """Every partition of `topics`, from the beginning or from the first offset at or after `since_ms`."""
    partitions = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        partitions += [TopicPartition(topic, p, since_ms if since_ms is not None else OFFSET_BEGINNING)
                       for p in meta.partitions]
    if since_ms is not None:
        partitions = consumer.offsets_for_times(partitions, timeout=10)
    return partitions


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--ledger-topic", default="credits.ledger")
    ap.add_argument("--usage-topic", default="credits.usage", help="'' to skip usage")
    ap.add_argument("--since", help="RFC 3339 time: start from the first event at or after it")
    ap.add_argument("--until-end", action="store_true", help="stop at the end of every partition and print")
    args = ap.parse_args()

    since_ms = None
    if args.since:
        since_ms = int(datetime.fromisoformat(args.since.replace("Z", "+00:00")).timestamp() * 1000)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "unused-offsets-are-not-committed",  # required by the client; assign() needs no group
        "enable.auto.commit": False,
        "isolation.level": "read_committed",  # only events of committed ledger transactions
        "enable.partition.eof": True,
    })
    topics = [t for t in (args.ledger_topic, args.usage_topic) if t]
    partitions = start_offsets(consumer, topics, since_ms)
    consumer.assign(partitions)
    open_partitions = {(p.topic, p.partition) for p in partitions}

    totals = Totals(judge=since_ms is None)
    last_report = time.monotonic()
    try:
        while True:
            msg = consumer.poll(POLL_TIMEOUT_S)
            if msg is not None and msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard((msg.topic(), msg.partition()))
                else:
                    raise KafkaException(msg.error())
            elif msg is not None:
                headers = dict(msg.headers() or [])
                if headers.get("content-type", b"application/json") != b"application/json":
                    totals.skipped["non-JSON record"] += 1
                else:
                    position = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
                    key = msg.key().decode("utf-8", "replace") if msg.key() else ""
                    try:
                        event = json.loads(msg.value())
                    except ValueError:
                        totals.undecodable(key, position)
                    else:
                        totals.apply(event, position)
            if args.until_end and not open_partitions:
                break
            if not args.until_end and time.monotonic() - last_report >= REPORT_INTERVAL_S:
                print(json.dumps(totals.report()), flush=True)
                last_report = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    json.dump(totals.report(), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
