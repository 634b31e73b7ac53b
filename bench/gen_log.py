"""Writes a synthetic but valid account history straight to Kafka, for start-up and rebuild measurements.

Each account gets AccountCreated and then CreditsAdded events whose balanceAfter is the running fold, keyed
by account id with the same murmur2 partitioning as the command API. Usage: gen_log.py TOPIC EVENTS ACCOUNTS
"""
import hashlib
import json
import sys
import time
import uuid

from confluent_kafka import Producer


def account_id(tenant, external_id):
    digest = hashlib.sha256(b"credits/account/" + tenant.encode() + b"\0" + external_id.encode()).hexdigest()
    return "acc_" + digest[:24]


def stamp(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)


def envelope(kind, tenant, acc, payload, now):
    return json.dumps({"eventId": str(uuid.uuid4()), "type": kind, "schemaVersion": 1, "tenant": tenant,
                       "accountId": acc, "apiKeyId": "key_bench", "requestId": "", "idempotencyKey": "",
                       "requestHash": "", "occurredAt": stamp(now), "payload": payload})


def main():
    topic, events, accounts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    brokers = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1:9092"
    p = Producer({"bootstrap.servers": brokers, "partitioner": "murmur2_random", "linger.ms": 20,
                  "enable.idempotence": True, "queue.buffering.max.messages": 1000000})
    now = int(time.time() * 1000)
    ids = [account_id("demo", f"bench_{i}") for i in range(accounts)]
    balance = [0] * accounts
    started = time.monotonic()
    for i, acc in enumerate(ids):
        p.produce(topic, key=acc, value=envelope("AccountCreated", "demo", acc,
                                                 {"name": "B", "externalId": f"bench_{i}", "email": "", "metadata": {}}, now))
    for n in range(events - accounts):
        i = n % accounts
        balance[i] += 1
        p.produce(topic, key=ids[i], value=envelope("CreditsAdded", "demo", ids[i], {
            "transactionId": f"txn_{ids[i][4:]}_{n:016x}", "amount": 1, "balanceAfter": balance[i], "description": "",
            "paymentMethod": "", "metadata": {}}, now))
        if n % 10000 == 0:
            p.poll(0)
    p.flush()
    print(f"{events} events for {accounts} accounts in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
