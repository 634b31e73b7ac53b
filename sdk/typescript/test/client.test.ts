// Every method the server serves today, and every typed error, against the real stack.
import assert from "node:assert/strict";
import net from "node:net";
import { describe, test } from "node:test";

import {
  AuthenticationError,
  ConflictError,
  ConnectionError,
  CreditsClient,
  CreditsError,
  InsufficientCreditsError,
  NotFoundError,
  ValidationError,
} from "@credits-dev/sdk";

import { apiKey, baseUrl, client, freshExternalId, fundedAccount, rejection } from "./env.js";

describe("the methods the server serves", () => {
  test("the guide's flow, plus getAccount and deductCredits, returns the documented shapes", async () => {
    const c = client();
    const externalId = freshExternalId();

    const { account } = await c.createAccount({
      name: "Alice",
      externalId,
      email: "alice@example.com",
      metadata: { plan: "starter" },
    });
    assert.match(account.id, /^acc_[0-9a-f]{24}$/);
    assert.deepEqual(
      { name: account.name, externalId: account.externalId, email: account.email, metadata: account.metadata },
      { name: "Alice", externalId, email: "alice@example.com", metadata: { plan: "starter" } },
    );
    assert.match(account.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const added = await c.addCredits({
      externalId,
      amount: 1000,
      description: "Starter credits",
      metadata: { source: "onboarding" },
    });
    assert.equal(added.success, true);
    assert.equal(added.accountId, account.id);
    assert.equal(added.externalId, externalId);
    assert.equal(added.balance, 1000);
    assert.equal(added.added, 1000);
    assert.match(added.transactionId, /^txn_/);

    // Read-your-writes: right after the write, the read already shows it.
    assert.deepEqual(await c.getBalance({ externalId }), {
      success: true,
      accountId: account.id,
      externalId,
      balance: 1000,
      reserved: 0,
      available: 1000,
    });

    const { reservation } = await c.createReservation({ externalId, amount: 500, operation: "chat", model: "gpt-4o" });
    assert.match(reservation.id, /^rsv_/);
    assert.equal(reservation.status, "pending");
    assert.equal(reservation.amount, 500);
    assert.equal(reservation.accountId, account.id);
    assert.equal(reservation.model, "gpt-4o");
    assert.ok(Date.parse(reservation.expiresAt) > Date.now());
    const held = await c.getBalance({ accountId: account.id });
    assert.deepEqual([held.balance, held.reserved, held.available], [1000, 500, 500]);

    const confirmed = await c.confirmReservation(reservation.id, 320);
    assert.equal(confirmed.reservationId, reservation.id);
    assert.equal(confirmed.accountId, account.id);
    assert.equal(confirmed.amountCharged, 320);
    assert.equal(confirmed.amountReleased, 180);
    assert.equal(confirmed.balance, 680);
    assert.match(confirmed.transactionId, /^txn_/);

    const second = await c.createReservation({ accountId: account.id, amount: 100 });
    const cancelled = await c.cancelReservation(second.reservation.id);
    assert.equal(cancelled.reservation.id, second.reservation.id);
    assert.equal(cancelled.reservation.status, "cancelled");
    assert.equal(cancelled.amountReleased, 100);

    const { usage } = await c.recordUsage({
      context: "customer",
      transactionId: confirmed.transactionId,
      accountId: confirmed.accountId,
      modelId: "gpt-4o",
      usageType: "text",
      inputTokens: 1000,
      outputTokens: 320,
    });
    assert.match(usage.id, /^use_/);
    assert.equal(usage.transactionId, confirmed.transactionId);
    assert.equal(usage.totalTokens, 1320);
    assert.equal(usage.cachedTokens, 0);

    const deducted = await c.deductCredits({ externalId, amount: 80, description: "flat fee" });
    assert.equal(deducted.deducted, 80);
    assert.equal(deducted.balance, 600);
    assert.match(deducted.transactionId, /^txn_/);

    const got = await c.getAccount({ accountId: account.id });
    assert.equal(got.account.id, account.id);
    assert.equal(got.account.name, "Alice");
    assert.deepEqual([got.account.balance, got.account.reserved, got.account.available], [600, 0, 600]);
  });

  test("a caller's idempotency key makes a repeated call a replay of the first", async () => {
    const { externalId } = await fundedAccount(0);
    const c = client();
    const key = `purchase-${freshExternalId()}`;
    const first = await c.addCredits({ externalId, amount: 250 }, { idempotencyKey: key });
    const again = await c.addCredits({ externalId, amount: 250 }, { idempotencyKey: key });
    assert.deepEqual(again, first);
    assert.equal((await c.getBalance({ externalId })).balance, 250);
  });

  test("a usage record without a transaction has a null transactionId", async () => {
    const { accountId } = await fundedAccount(0);
    const { usage } = await client().recordUsage({ context: "system", accountId, modelId: "embed-small" });
    assert.equal(usage.transactionId, null);
    assert.equal(usage.usageType, "text");
  });
});

describe("typed errors", () => {
  test("an unknown account is a NotFoundError 404 account_not_found with the request id", async () => {
    const error = await rejection(client().getBalance({ externalId: freshExternalId() }));
    assert.ok(error instanceof NotFoundError);
    assert.ok(error instanceof CreditsError);
    assert.equal(error.name, "NotFoundError");
    assert.equal(error.status, 404);
    assert.equal(error.code, "account_not_found");
    assert.match(error.requestId ?? "", /^req_[0-9a-f]{16}$/);
  });

  test("an unknown reservation is a NotFoundError 404 reservation_not_found", async () => {
    const { accountId } = await fundedAccount(0);
    const reservationId = `rsv_${accountId.slice(4)}_0123456789abcdef`;
    const error = await rejection(client().confirmReservation(reservationId, 1));
    assert.ok(error instanceof NotFoundError);
    assert.equal(error.code, "reservation_not_found");
  });

  test("the caller's request id comes back on the error", async () => {
    const error = await rejection(client().getBalance({ externalId: freshExternalId() }, { requestId: "my-req-42" }));
    assert.equal(error.requestId, "my-req-42");
  });

  test("an invalid amount is a ValidationError 400 invalid_request naming the field", async () => {
    const { externalId } = await fundedAccount(0);
    const error = await rejection(client().addCredits({ externalId, amount: 0 }));
    assert.ok(error instanceof ValidationError);
    assert.equal(error.status, 400);
    assert.equal(error.code, "invalid_request");
    assert.equal(error.field, "amount");
  });

  test("a fractional amount is a ValidationError too", async () => {
    const { externalId } = await fundedAccount(0);
    const error = await rejection(client().createReservation({ externalId, amount: 1.5 }));
    assert.ok(error instanceof ValidationError);
    assert.equal(error.field, "amount");
  });

  test("more than is available is an InsufficientCreditsError 402 with needed and available", async () => {
    const { externalId } = await fundedAccount(100);
    const c = client();
    await c.createReservation({ externalId, amount: 60 });
    // One call at a time: a second promise made up front would reject before anything awaits it.
    for (const call of [() => c.deductCredits({ externalId, amount: 41 }),
      () => c.createReservation({ externalId, amount: 41 })]) {
      const error = await rejection(call());
      assert.ok(error instanceof InsufficientCreditsError);
      assert.equal(error.status, 402);
      assert.equal(error.code, "insufficient_credits");
      assert.equal(error.needed, 41);
      assert.equal(error.available, 40);
    }
    assert.equal((await c.getBalance({ externalId })).balance, 100);
  });

  test("conflicts are ConflictError 409 with their code", async () => {
    const { accountId, externalId } = await fundedAccount(100);
    const c = client();

    const exists = await rejection(c.createAccount({ name: "Again", externalId }));
    assert.ok(exists instanceof ConflictError);
    assert.equal(exists.status, 409);
    assert.equal(exists.code, "account_exists");
    assert.equal(exists.details?.["accountId"], accountId);

    const { reservation } = await c.createReservation({ externalId, amount: 10 });
    await c.confirmReservation(reservation.id, 10);
    const notPending = await rejection(c.cancelReservation(reservation.id));
    assert.ok(notPending instanceof ConflictError);
    assert.equal(notPending.code, "reservation_not_pending");
    assert.equal(notPending.details?.["status"], "confirmed");

    const key = `k-${freshExternalId()}`;
    await c.addCredits({ externalId, amount: 1 }, { idempotencyKey: key });
    const reused = await rejection(c.addCredits({ externalId, amount: 2 }, { idempotencyKey: key }));
    assert.ok(reused instanceof ConflictError);
    assert.equal(reused.code, "idempotency_key_reused");
  });

  test("a bad API key is an AuthenticationError 401", async () => {
    const bad = new CreditsClient({ apiKey: "ck_not_a_key_at_all", baseUrl });
    for (const call of [() => bad.getBalance({ externalId: "x" }), () => bad.addCredits({ externalId: "x", amount: 1 })]) {
      const error = await rejection(call());
      assert.ok(error instanceof AuthenticationError);
      assert.equal(error.status, 401);
      assert.equal(error.code, "unauthorized");
    }
  });

  test("no server at all is a ConnectionError after the retries", async () => {
    const port = await closedPort();
    const c = new CreditsClient({ apiKey, baseUrl: `http://127.0.0.1:${port}`, maxRetries: 1 });
    const error = await rejection(c.getBalance({ externalId: "x" }));
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.status, 0);
    assert.equal(error.code, "network_error");
  });

  test("a client without an API key is refused before any request", () => {
    assert.throws(() => new CreditsClient({ apiKey: "" }), TypeError);
    assert.throws(() => new CreditsClient({ apiKey, maxRetries: -1 }), RangeError);
  });
});

describe("defaults", () => {
  test("baseUrl comes from CREDITS_BASE_URL, else the local stack's address", () => {
    const saved = process.env["CREDITS_BASE_URL"];
    try {
      process.env["CREDITS_BASE_URL"] = "http://credits.example:9000/";
      assert.equal(new CreditsClient({ apiKey }).baseUrl, "http://credits.example:9000");
      delete process.env["CREDITS_BASE_URL"];
      assert.equal(new CreditsClient({ apiKey }).baseUrl, "http://127.0.0.1:8080");
      assert.equal(new CreditsClient({ apiKey, baseUrl: "http://h:1" }).baseUrl, "http://h:1");
    } finally {
      if (saved === undefined) delete process.env["CREDITS_BASE_URL"];
      else process.env["CREDITS_BASE_URL"] = saved;
    }
  });
});

// A port nothing listens on: bound, then released.
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
