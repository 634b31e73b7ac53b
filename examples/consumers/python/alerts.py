#!/usr/bin/env python3
"""A low-balance alerter: a consumer group on the ledger topic that reacts to BalanceLow events.

Several copies with the same --group share the partitions (Kafka's consumer group protocol). Offsets are
committed after each event is handled, so a restart resumes where the group left off: delivery is
at-least-once, and handlers deduplicate by the event's ce_id header (the envelope's eventId).

    pip install confluent-kafka
    python3 alerts.py --brokers 127.0.0.1:9092 --group low-balance-alerts
    python3 alerts.py --group low-balance-alerts --max-events 1   # handle one event and exit (tests)

The API emits BalanceLow only when CREDITS_BALANCE_LOW_THRESHOLD is set (see the README).
"""
import argparse
import json

from confluent_kafka import Consumer, KafkaException

POLL_TIMEOUT_S = 1.0
BALANCE_LOW = b"dev.credits.BalanceLow.v1"  # the ce_type header: filter without parsing the value


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="credits.ledger")
    ap.add_argument("--group", default="low-balance-alerts")
    ap.add_argument("--from-beginning", action="store_true",
                    help="a new group starts at the oldest event instead of only new ones")
    ap.add_argument("--max-events", type=int, default=0, help="exit after this many alerts (0: run forever)")
    args = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
    })
    consumer.subscribe([args.topic])
    seen, alerts = set(), 0
    try:
        while args.max_events == 0 or alerts < args.max_events:
            msg = consumer.poll(POLL_TIMEOUT_S)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            headers = dict(msg.headers() or [])
            if headers.get("ce_type") == BALANCE_LOW and headers.get("ce_id") not in seen:
                seen.add(headers.get("ce_id"))
                event = json.loads(msg.value())
                p = event["payload"]
                print(json.dumps({"alert": "balance_low", "accountId": event["accountId"], "available": p["available"],
                                  "threshold": p["threshold"], "at": event["occurredAt"]}), flush=True)
                alerts += 1
            consumer.commit(message=msg, asynchronous=False)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
