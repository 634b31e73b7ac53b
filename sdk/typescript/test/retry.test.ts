// Retries and read-your-writes, through a fault-injecting proxy in front of the real server: a retry carries the
// first attempt's Idempotency-Key and body, so the server answers it with the first outcome and money moves once.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  ConnectionError,
  CreditsError,
  PermissionError,
  RateLimitError,
  UnavailableError,
  ValidationError,
} from "@credits-dev/sdk";

import { baseUrl, client, fundedAccount } from "./env.js";
import { type Fault, FaultProxy, header, status } from "./proxy.js";

const unavailable = {
  status: 503,
  headers: { "Retry-After": "1" },
  body: { success: false, error: { code: "unavailable", message: "the writer is busy or recovering; retry later" } },
};
const inFlight = {
  status: 409,
  body: {
    success: false,
    error: { code: "idempotency_key_in_flight", message: "a request with this Idempotency-Key is in flight" },
  },
};

// A proxy whose first request gets `first` and every later one passes through.
async function proxyWithFirst(first: Fault): Promise<{ proxy: FaultProxy; url: string }> {
  const proxy = new FaultProxy(new URL(baseUrl), (n) => (n === 0 ? first : "pass"));
  return { proxy, url: await proxy.listen() };
}

describe("retries with the same idempotency key", () => {
  const proxies: FaultProxy[] = [];
  after(async () => {
    for (const p of proxies) await p.close();
  });

  test("a connection lost after the server applied the request: the retry is a replay, credits added once",
    async () => {
      const { externalId } = await fundedAccount(100);
      const { proxy, url } = await proxyWithFirst("drop-after-server-answered");
      proxies.push(proxy);

      const res = await client({ baseUrl: url }).addCredits({ externalId, amount: 50 });

      assert.equal(res.balance, 150);
      assert.equal(proxy.exchanges.length, 2);
      const [first, retry] = proxy.exchanges;
      assert.equal(status(first!.response), 200, "the server applied the first attempt");
      const keys = proxy.requestHeader("idempotency-key");
      assert.ok(keys[0], "the SDK sent an Idempotency-Key");
      assert.equal(keys[1], keys[0], "the retry reuses it");
      assert.equal(first!.request.split("\r\n\r\n")[1], retry!.request.split("\r\n\r\n")[1], "byte-identical body");
      assert.equal(header(retry!.response, "idempotent-replayed"), "true");
      assert.equal((await client().getBalance({ externalId })).balance, 150, "added exactly once");
    });

  test("an answer that comes after timeoutMs: the retry is a replay, the reservation charged once", async () => {
    const { externalId } = await fundedAccount(1000);
    const c = client();
    const { reservation } = await c.createReservation({ externalId, amount: 500 });
    const { proxy, url } = await proxyWithFirst("hold-answer");
    proxies.push(proxy);

    const confirmed = await client({ baseUrl: url, timeoutMs: 2000 }).confirmReservation(reservation.id, 320);

    assert.equal(confirmed.amountCharged, 320);
    assert.equal(confirmed.balance, 680);
    assert.equal(proxy.exchanges.length, 2);
    assert.equal(status(proxy.exchanges[0]!.response), 200, "the server applied the first attempt");
    const keys = proxy.requestHeader("idempotency-key");
    assert.equal(keys[1], keys[0]);
    assert.equal(header(proxy.exchanges[1]!.response, "idempotent-replayed"), "true");
    const balance = await c.getBalance({ externalId });
    assert.deepEqual([balance.balance, balance.reserved, balance.available], [680, 0, 680]);
  });

  test("a reversal whose answer was lost: the retry is a replay, refunded once", async () => {
    const { externalId } = await fundedAccount(100);
    const fee = await client().deductCredits({ externalId, amount: 40 });
    const { proxy, url } = await proxyWithFirst("drop-after-server-answered");
    proxies.push(proxy);

    const refund = await client({ baseUrl: url }).reverseTransaction({ transactionId: fee.transactionId, amount: 15 });

    assert.deepEqual([refund.amount, refund.balance, refund.reversalOf], [15, 75, fee.transactionId]);
    assert.equal(proxy.exchanges.length, 2);
    assert.equal(status(proxy.exchanges[0]!.response), 200, "the server applied the first attempt");
    const keys = proxy.requestHeader("idempotency-key");
    assert.ok(keys[0]);
    assert.equal(keys[1], keys[0]);
    assert.equal(header(proxy.exchanges[1]!.response, "idempotent-replayed"), "true");
    assert.equal((await client().getBalance({ externalId })).balance, 75, "refunded exactly once");
  });

  test("a 503 with Retry-After: retried after the wait it asks for, with the same key", async () => {
    const { externalId } = await fundedAccount(100);
    const { proxy, url } = await proxyWithFirst(unavailable);
    proxies.push(proxy);

    const res = await client({ baseUrl: url }).deductCredits({ externalId, amount: 30 });

    assert.equal(res.balance, 70);
    assert.equal(proxy.exchanges.length, 2);
    const waited = proxy.exchanges[1]!.at - proxy.exchanges[0]!.at;
    assert.ok(waited >= 950, `Retry-After: 1 honoured (waited ${waited} ms)`);
    const keys = proxy.requestHeader("idempotency-key");
    assert.equal(keys[1], keys[0]);
    assert.equal((await client().getBalance({ externalId })).balance, 70);
  });

  test("a 409 idempotency_key_in_flight is retried with the same key", async () => {
    const { externalId } = await fundedAccount(0);
    const { proxy, url } = await proxyWithFirst(inFlight);
    proxies.push(proxy);

    const res = await client({ baseUrl: url }).addCredits({ externalId, amount: 7 });

    assert.equal(res.balance, 7);
    const keys = proxy.requestHeader("idempotency-key");
    assert.equal(keys.length, 2);
    assert.equal(keys[1], keys[0]);
  });

  test("a 503 on a query is retried too", async () => {
    const { externalId } = await fundedAccount(5);
    const { proxy, url } = await proxyWithFirst({ ...unavailable, headers: { "Retry-After": "0" } });
    proxies.push(proxy);
    assert.equal((await client({ baseUrl: url }).getBalance({ externalId })).balance, 5);
    assert.equal(proxy.exchanges.length, 2);
  });

  test("the retries are bounded by maxRetries: then an UnavailableError", async () => {
    const { externalId } = await fundedAccount(10);
    const proxy = new FaultProxy(new URL(baseUrl), () => ({ ...unavailable, headers: { "Retry-After": "0" } }));
    proxies.push(proxy);
    const url = await proxy.listen();

    const error = await client({ baseUrl: url, maxRetries: 2 }).addCredits({ externalId, amount: 1 }).then(
      () => assert.fail("expected an UnavailableError"),
      (e: unknown) => e,
    );

    assert.ok(error instanceof UnavailableError);
    assert.equal(error.status, 503);
    assert.equal(error.retryAfterSeconds, 0);
    assert.equal(proxy.exchanges.length, 3, "the first attempt and 2 retries");
    assert.equal(new Set(proxy.requestHeader("idempotency-key")).size, 1);
    assert.equal((await client().getBalance({ externalId })).balance, 10, "nothing was applied");
  });

  test("a 429 is retried after its Retry-After with the same key; past maxRetries it is a RateLimitError", async () => {
    const rateLimited = {
      status: 429,
      headers: { "Retry-After": "0" },
      body: { success: false, error: { code: "rate_limited", message: "this API key is over its request rate" } },
    };
    const { externalId } = await fundedAccount(0);
    const { proxy, url } = await proxyWithFirst(rateLimited);
    proxies.push(proxy);
    assert.equal((await client({ baseUrl: url }).addCredits({ externalId, amount: 4 })).balance, 4);
    const keys = proxy.requestHeader("idempotency-key");
    assert.equal(keys.length, 2);
    assert.equal(keys[1], keys[0]);

    const always = new FaultProxy(new URL(baseUrl), () => rateLimited);
    proxies.push(always);
    const alwaysUrl = await always.listen();
    const error = await client({ baseUrl: alwaysUrl, maxRetries: 1 })
      .addCredits({ externalId, amount: 1 })
      .then(() => assert.fail("expected a RateLimitError"), (e: unknown) => e);
    assert.ok(error instanceof RateLimitError);
    assert.equal(error.code, "rate_limited");
    assert.equal(error.retryAfterSeconds, 0);
    assert.equal(always.exchanges.length, 2);
    assert.equal((await client().getBalance({ externalId })).balance, 4, "the refused attempts wrote nothing");
  });

  test("a 403 (read-only key) is a PermissionError and is not retried", async () => {
    const { externalId } = await fundedAccount(0);
    const proxy = new FaultProxy(new URL(baseUrl), () => ({
      status: 403,
      body: { success: false, error: { code: "forbidden", message: "this API key is read-only" } },
    }));
    proxies.push(proxy);
    const url = await proxy.listen();
    const error = await client({ baseUrl: url }).addCredits({ externalId, amount: 1 }).catch((e: unknown) => e);
    assert.ok(error instanceof PermissionError);
    assert.equal(proxy.exchanges.length, 1);
  });

  test("a timeout on every attempt is a ConnectionError 'timeout', and the outcome is the server's", async () => {
    const { externalId } = await fundedAccount(0);
    const proxy = new FaultProxy(new URL(baseUrl), () => "hold-answer");
    proxies.push(proxy);
    const url = await proxy.listen();

    const error = await client({ baseUrl: url, timeoutMs: 300, maxRetries: 1 })
      .addCredits({ externalId, amount: 5 })
      .then(() => assert.fail("expected a ConnectionError"), (e: unknown) => e);

    assert.ok(error instanceof ConnectionError);
    assert.equal(error.code, "timeout");
    assert.equal(proxy.exchanges.length, 2);
    // The server did apply it, once: the caller may retry with the same key to learn the outcome.
    assert.equal((await client().getBalance({ externalId })).balance, 5);
  });

  test("a refusal is not retried", async () => {
    const { externalId } = await fundedAccount(0);
    const proxy = new FaultProxy(new URL(baseUrl), () => "pass");
    proxies.push(proxy);
    const url = await proxy.listen();
    const error = await client({ baseUrl: url }).addCredits({ externalId, amount: -1 }).catch((e: unknown) => e);
    assert.ok(error instanceof ValidationError);
    assert.ok(error instanceof CreditsError);
    assert.equal(proxy.exchanges.length, 1);
  });
});

describe("read-your-writes", () => {
  let proxy: FaultProxy;
  let url: string;
  before(async () => {
    proxy = new FaultProxy(new URL(baseUrl), () => "pass");
    url = await proxy.listen();
  });
  after(() => proxy.close());

  test("a read sends the Credits-Position of the client's last write to that account", async () => {
    const { accountId, externalId } = await fundedAccount(0);
    const c = client({ baseUrl: url });
    const before = proxy.exchanges.length;

    await c.addCredits({ accountId, amount: 40 });
    await c.addCredits({ externalId, amount: 2 });
    const balance = await c.getBalance({ externalId });
    const account = await c.getAccount({ accountId });

    assert.equal(balance.balance, 42);
    assert.equal(account.account.balance, 42);
    const [add1, add2, read1, read2] = proxy.exchanges.slice(before);
    const p1 = header(add1!.response, "credits-position");
    const p2 = header(add2!.response, "credits-position");
    assert.match(p2 ?? "", /^.+:\d+:\d+$/);
    assert.notEqual(p1, p2);
    assert.equal(header(read1!.request, "credits-min-position"), p2, "the latest write, found by externalId");
    assert.equal(header(read2!.request, "credits-min-position"), p2, "and by accountId");
    assert.equal(header(read1!.response, "credits-stale"), undefined);
  });

  test("list reads send the account's position too; a reversal's position is remembered for its account",
    async () => {
      const { accountId, externalId } = await fundedAccount(0);
      const c = client({ baseUrl: url });
      const before = proxy.exchanges.length;

      const added = await c.addCredits({ accountId, amount: 10 });
      await c.listTransactions({ externalId });
      await c.listReservations({ accountId });
      const reversed = await c.reverseTransaction({ transactionId: added.transactionId, amount: 4 });
      const listed = await c.listTransactions({ accountId, limit: 1 });
      await c.listAccounts({ limit: 1 });
      const summary = await c.listUsage({ externalId, summary: true });

      assert.equal(listed.transactions[0]!.id, reversed.transactionId);
      assert.equal(summary.summary.totals.records, 0);
      const [add, list1, list2, reverse, list3, accounts, usage] = proxy.exchanges.slice(before);
      const p1 = header(add!.response, "credits-position");
      const p2 = header(reverse!.response, "credits-position");
      assert.match(p2 ?? "", /^.+:\d+:\d+$/);
      assert.equal(header(list1!.request, "credits-min-position"), p1);
      assert.equal(header(list2!.request, "credits-min-position"), p1);
      assert.equal(header(list3!.request, "credits-min-position"), p2, "the reversal's, found by accountId");
      assert.equal(header(accounts!.request, "credits-min-position"), p2, "tenant-wide: the latest write");
      assert.equal(header(usage!.request, "credits-min-position"), p2);
      assert.match(list1!.request.split("\r\n")[0]!, /^GET \/v1\/transactions\?externalId=sdk_\w+ HTTP/);
    });

  test("query strings: booleans as true/false, Dates as RFC 3339 UTC, nothing for undefined", async () => {
    const { externalId } = await fundedAccount(0);
    const c = client({ baseUrl: url });
    const before = proxy.exchanges.length;
    await c.listReservations({ externalId, activeOnly: true });
    await c.listReservations({ externalId, activeOnly: false, limit: undefined });
    await c.getBalance({ externalId, asOf: new Date(Date.UTC(2026, 10, 29, 12, 0, 0)) });
    const lines = proxy.exchanges.slice(before).map((e) => e.request.split("\r\n")[0]);
    assert.deepEqual(lines, [
      `GET /v1/reservations?externalId=${externalId}&activeOnly=true HTTP/1.1`,
      `GET /v1/reservations?externalId=${externalId}&activeOnly=false HTTP/1.1`,
      `GET /v1/accounts/balance?externalId=${externalId}&asOf=2026-11-29T12%3A00%3A00.000Z HTTP/1.1`,
    ]);
  });

  test("a read of an account the client never wrote sends no position; minPosition overrides", async () => {
    const { externalId } = await fundedAccount(3);
    const writer = client();
    const added = await writer.addCredits({ externalId, amount: 1 });
    const c = client({ baseUrl: url });
    const before = proxy.exchanges.length;

    assert.equal((await c.getBalance({ externalId })).balance, added.balance);
    const position = "credits.other:0:0";
    await c.getBalance({ externalId }, { minPosition: position });

    const [plain, explicit] = proxy.exchanges.slice(before);
    assert.equal(header(plain!.request, "credits-min-position"), undefined);
    assert.equal(header(explicit!.request, "credits-min-position"), position);
  });
});
