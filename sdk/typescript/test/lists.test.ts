// The list and report methods, the balance as of a time, and reversals, against the real stack. Other test files
// run at the same time in the same tenant, and earlier runs left their accounts in it: each test looks at
// accounts (and model ids) of its own, and at the tenant-wide listing only for what it made.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, test } from "node:test";

import {
  InsufficientCreditsError,
  type LedgerTransaction,
  type Page,
  type UsageContext,
  ValidationError,
} from "@credits-dev/sdk";

import { client, freshExternalId, fundedAccount, rejection } from "./env.js";

// Pages one at a time by hand, checking each: every page at most `limit` long, the cursor null on the last.
async function allPages<T, R extends Page>(
  fetch: (cursor: string | undefined) => Promise<R>,
  items: (page: R) => T[],
  limit: number,
  until: (seen: T[]) => boolean = () => false,
): Promise<{ items: T[]; pages: number }> {
  const seen: T[] = [];
  let cursor: string | undefined;
  for (let pages = 1; ; pages++) {
    const page = await fetch(cursor);
    assert.equal(page.success, true);
    assert.ok(items(page).length <= limit, "a page holds at most limit items");
    seen.push(...items(page));
    if (page.nextCursor === null || until(seen)) return { items: seen, pages };
    assert.equal(typeof page.nextCursor, "string");
    cursor = page.nextCursor;
  }
}

function assertNewestFirst(times: string[]): void {
  assert.deepEqual(times, [...times].sort().reverse(), "newest first");
}

function assertNoRepeats(ids: string[]): void {
  assert.equal(new Set(ids).size, ids.length, "no item twice");
}

// Usage has a log of its own that reads do not wait for: poll until `check` passes.
async function eventually<T>(check: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(100);
    }
  }
}

describe("listAccounts", () => {
  test("pages through the tenant's accounts newest first, with balances, without repeats", async () => {
    const c = client();
    const mine: string[] = [];
    for (const credits of [10, 20, 30]) mine.push((await fundedAccount(credits, c)).accountId);
    // A tenant-wide read waits for the client's latest write only: make sure the projection has all three.
    for (const accountId of mine) await c.getAccount({ accountId });

    const { items, pages } = await allPages(
      (cursor) => c.listAccounts({ limit: 2, cursor }),
      (page) => page.accounts,
      2,
      (seen) => mine.every((id) => seen.some((a) => a.id === id)),
    );
    assert.ok(pages >= 2, `paged (${pages} pages)`);
    assertNoRepeats(items.map((a) => a.id));
    assertNewestFirst(items.map((a) => a.createdAt));
    const listed = mine.map((id) => items.find((a) => a.id === id)!);
    assert.deepEqual(listed.map((a) => [a.balance, a.reserved, a.available]), [[10, 0, 10], [20, 0, 20], [30, 0, 30]]);
    assert.ok(listed.every((a) => a.name === "Test" && a.externalId.startsWith("sdk_") && a.email === ""));
    assert.deepEqual(listed[0]!.metadata, {});
  });

  test("an account the client just created is listed right away (read-your-writes)", async () => {
    const c = client();
    const externalId = freshExternalId();
    const { account } = await c.createAccount({ name: "Fresh", externalId });
    const { accounts } = await c.listAccounts({ limit: 200 });
    assert.ok(accounts.some((a) => a.id === account.id && a.externalId === externalId && a.balance === 0));
  });

  test("paginate() walks every page as one sequence", async () => {
    const c = client();
    const { accountId } = await fundedAccount(1, c);
    const seen: string[] = [];
    for await (const a of c.paginate("listAccounts", { limit: 1 })) {
      seen.push(a.id);
      if (a.id === accountId || seen.length >= 20) break;
    }
    assert.ok(seen.includes(accountId));
    assertNoRepeats(seen);
  });
});

describe("listTransactions", () => {
  test("every kind, newest first, in pages, filtered by type and time", async () => {
    const c = client();
    const externalId = freshExternalId();
    const { account } = await c.createAccount({ name: "T", externalId });
    const accountId = account.id;
    const written: string[] = [];
    written.push((await c.addCredits({ externalId, amount: 1000, description: "grant", metadata: { k: "v" } }))
      .transactionId);
    await sleep(5);  // so that the next one's createdAt is later, for the time filters
    written.push((await c.deductCredits({ externalId, amount: 30, description: "fee" })).transactionId);
    const { reservation } = await c.createReservation({ accountId, amount: 500 });
    written.push((await c.confirmReservation(reservation.id, 320)).transactionId);
    written.push((await c.addCredits({ accountId, amount: 5 })).transactionId);
    const last = await c.deductCredits({ externalId, amount: 1 });
    written.push(last.transactionId);

    // Read-your-writes: the last write is on the first page right away.
    const first = await c.listTransactions({ externalId, limit: 2 });
    assert.equal(first.accountId, accountId);
    assert.equal(first.externalId, externalId);
    assert.equal(first.transactions[0]!.id, last.transactionId);

    const { items, pages } = await allPages(
      (cursor) => c.listTransactions({ accountId, limit: 2, cursor }),
      (page) => page.transactions,
      2,
    );
    assert.equal(pages, 3);
    assert.deepEqual(items.map((t) => t.id), [...written].reverse());
    assertNewestFirst(items.map((t) => t.createdAt));
    assert.deepEqual(items.map((t) => [t.type, t.amount, t.balanceAfter]), [
      ["debit", -1, 654], ["credit", 5, 655], ["charge", -320, 650], ["debit", -30, 970], ["credit", 1000, 1000]]);
    const [, , charge, fee, grant] = items as [unknown, unknown, LedgerTransaction, LedgerTransaction,
      LedgerTransaction];
    assert.deepEqual(grant, {
      id: written[0], accountId, type: "credit", amount: 1000, balanceAfter: 1000, description: "grant",
      metadata: { k: "v" }, reservationId: null, reversalOf: null, grantId: `grt${written[0]!.slice(3)}`, reason: null,
      draws: [], createdAt: grant.createdAt,
    });
    assert.equal(charge.reservationId, reservation.id);
    assert.equal(fee.description, "fee");

    const debits = await c.listTransactions({ externalId, type: "debit" });
    assert.deepEqual(debits.transactions.map((t) => t.id), [written[4], written[1]]);
    assert.equal(debits.nextCursor, null);

    // startDate inclusive, endDate exclusive; a Date works as well as a string.
    const since = await c.listTransactions({ externalId, startDate: fee.createdAt });
    assert.deepEqual(since.transactions.map((t) => t.id), written.slice(1).reverse());
    const before = await c.listTransactions({ externalId, endDate: new Date(grant.createdAt) });
    assert.deepEqual(before.transactions, []);

    const paged: string[] = [];
    for await (const t of c.paginate("listTransactions", { accountId, limit: 2 })) paged.push(t.id);
    assert.deepEqual(paged, [...written].reverse());
  });

  test("a bad filter is a ValidationError naming it", async () => {
    const { externalId } = await fundedAccount(0);
    const c = client();
    const badLimit = await rejection(c.listTransactions({ externalId, limit: 0 }));
    assert.ok(badLimit instanceof ValidationError);
    assert.equal(badLimit.field, "limit");
    const badCursor = await rejection(c.listTransactions({ externalId, cursor: "garbage" }));
    assert.equal(badCursor.field, "cursor");
  });
});

describe("listReservations", () => {
  test("newest first in pages, activeOnly keeps the pending ones, with how each ended", async () => {
    const c = client();
    const { accountId, externalId } = await fundedAccount(1000);
    const held = (await c.createReservation({ externalId, amount: 10, operation: "chat", model: "m1" })).reservation;
    const confirmed = (await c.createReservation({ externalId, amount: 20 })).reservation;
    const cancelled = (await c.createReservation({ externalId, amount: 30 })).reservation;
    const charge = await c.confirmReservation(confirmed.id, 15);
    await c.cancelReservation(cancelled.id);

    // Read-your-writes: the cancellation just made shows right away.
    const { items, pages } = await allPages(
      (cursor) => c.listReservations({ accountId, limit: 2, cursor }),
      (page) => page.reservations,
      2,
    );
    assert.equal(pages, 2);
    assert.deepEqual(items.map((r) => [r.id, r.status]),
      [[cancelled.id, "cancelled"], [confirmed.id, "confirmed"], [held.id, "pending"]]);
    assertNewestFirst(items.map((r) => r.createdAt));
    const [c1, c2, h] = items;
    assert.deepEqual([c1!.charged, c1!.released, c1!.transactionId], [0, 30, null]);
    assert.deepEqual([c2!.charged, c2!.released, c2!.transactionId], [15, 5, charge.transactionId]);
    assert.ok(c1!.resolvedAt !== null && c2!.resolvedAt !== null);
    assert.deepEqual({ ...h, createdAt: "", expiresAt: "" }, {
      id: held.id, accountId, externalId, amount: 10, status: "pending", createdAt: "", expiresAt: "",
      operation: "chat", model: "m1", metadata: {}, charged: 0, released: 0, transactionId: null, resolvedAt: null,
    });

    const active = await c.listReservations({ externalId, activeOnly: true });
    assert.deepEqual(active.reservations.map((r) => r.id), [held.id]);
    assert.equal(active.nextCursor, null);
    const all = await c.listReservations({ externalId, activeOnly: false });
    assert.equal(all.reservations.length, 3);
  });
});

describe("listUsage", () => {
  test("records in pages and filtered; summaries equal what was recorded, for the account and the tenant", async () => {
    const c = client();
    const { accountId, externalId } = await fundedAccount(0);
    const run = randomUUID().slice(0, 8);
    const big = `sdk-big-${run}`;
    const small = `sdk-small-${run}`;
    const plan: [string, UsageContext, string, number, number, number][] = [
      [big, "customer", "text", 1000, 320, 0],
      [big, "system", "text", 10, 5, 3],
      [small, "customer", "image", 7, 9, 100],
      [big, "customer", "text", 1, 2, 3],
      [small, "system", "text", 4, 4, 4],
    ];
    const recorded: string[] = [];
    for (const [modelId, context, usageType, inputTokens, outputTokens, cachedTokens] of plan) {
      const { usage } = await c.recordUsage({
        externalId, context, modelId, usageType, inputTokens, outputTokens, cachedTokens,
      });
      recorded.push(usage.id);
    }

    const records = await eventually(async () => {
      const { usage } = await c.listUsage({ accountId, limit: 200 });
      assert.equal(usage.length, plan.length);
      return usage;
    });
    assert.deepEqual(records.map((r) => r.id), [...recorded].reverse());
    assertNewestFirst(records.map((r) => r.createdAt));
    assert.deepEqual(records.map((r) => [r.modelId, r.context, r.usageType, r.totalTokens]),
      [...plan].reverse().map(([m, ctx, t, i, o]) => [m, ctx, t, i + o]));
    assert.ok(records.every((r) => r.accountId === accountId && r.transactionId === null));

    const { items, pages } = await allPages(
      (cursor) => c.listUsage({ externalId, limit: 2, cursor }),
      (page) => page.usage,
      2,
    );
    assert.equal(pages, 3);
    assert.deepEqual(items.map((r) => r.id), [...recorded].reverse());

    const bySmall = await c.listUsage({ accountId, modelId: small });
    assert.deepEqual(bySmall.usage.map((r) => r.id), [recorded[4], recorded[2]]);
    const bySystem = await c.listUsage({ accountId, context: "system" });
    assert.deepEqual(bySystem.usage.map((r) => r.id), [recorded[4], recorded[1]]);
    const images = await c.listUsage({ accountId, usageType: "image" });
    assert.deepEqual(images.usage.map((r) => r.id), [recorded[2]]);

    const totals = (rows: typeof plan) => ({
      inputTokens: rows.reduce((n, r) => n + r[3], 0),
      outputTokens: rows.reduce((n, r) => n + r[4], 0),
      cachedTokens: rows.reduce((n, r) => n + r[5], 0),
      totalTokens: rows.reduce((n, r) => n + r[3] + r[4], 0),
      records: rows.length,
      costCredits: 0, // the test server prices no model
    });
    const today = new Date().toISOString().slice(0, 10);

    const summary = await c.listUsage({ externalId, summary: true });
    assert.equal(summary.accountId, accountId);
    assert.equal(summary.externalId, externalId);
    assert.equal(summary.endDate, today);
    assert.deepEqual(summary.summary.totals, totals(plan));
    assert.deepEqual(summary.summary.byModel, {
      [big]: totals(plan.filter((r) => r[0] === big)),
      [small]: totals(plan.filter((r) => r[0] === small)),
    });
    assert.deepEqual(summary.summary.byContext, {
      customer: totals(plan.filter((r) => r[1] === "customer")),
      system: totals(plan.filter((r) => r[1] === "system")),
    });
    const days = Object.values(summary.summary.byDay).filter((d) => d.records > 0);
    assert.deepEqual(
      days.reduce((n, d) => n + d.totalTokens, 0), totals(plan).totalTokens, "byDay adds up to the totals");

    const filtered = await c.listUsage({ accountId, summary: true, modelId: big, context: "customer" });
    assert.deepEqual(filtered.summary.totals, totals(plan.filter((r) => r[0] === big && r[1] === "customer")));

    // The whole tenant: other accounts have usage too, but none of this run's model ids.
    const tenant = await c.listUsage({ summary: true, modelId: small, startDate: new Date(Date.now() - 86_400_000) });
    assert.equal(tenant.accountId, undefined);
    assert.equal(tenant.endDate, today);
    assert.deepEqual(tenant.summary.totals, totals(plan.filter((r) => r[0] === small)));
    assert.deepEqual(Object.keys(tenant.summary.byModel), [small]);
  });

  test("usage records need an account", async () => {
    const error = await rejection(client().listUsage({ accountId: "" }));
    assert.ok(error instanceof ValidationError);
  });
});

describe("getBalance asOf", () => {
  test("a time before a top-up shows the balance before it; the answer names the time", async () => {
    const c = client();
    const { accountId, externalId } = await fundedAccount(100);
    await sleep(20);
    const middle = new Date();
    await sleep(20);
    await c.addCredits({ externalId, amount: 50 });
    await c.createReservation({ externalId, amount: 30 });

    assert.deepEqual(await c.getBalance({ externalId }),
      { success: true, accountId, externalId, balance: 150, reserved: 30, available: 120 });
    const then = await c.getBalance({ externalId, asOf: middle });
    assert.deepEqual(then, {
      success: true, accountId, externalId, balance: 100, reserved: 0, available: 100, asOf: middle.toISOString(),
    });

    // The server's own times: at a transaction's createdAt, the balance right after it.
    const [topUp, first] = (await c.listTransactions({ accountId })).transactions;
    assert.equal((await c.getBalance({ accountId, asOf: first!.createdAt })).balance, 100);
    assert.equal((await c.getBalance({ accountId, asOf: topUp!.createdAt })).balance, 150);
    const early = new Date(Date.parse(first!.createdAt) - 1);
    assert.equal((await c.getBalance({ accountId, asOf: early })).balance, 0);

    const bad = await rejection(c.getBalance({ accountId, asOf: "yesterday" }));
    assert.ok(bad instanceof ValidationError);
    assert.equal(bad.field, "asOf");
  });
});

describe("reverseTransaction", () => {
  test("a partial refund, a replay, too much, an overdrawing correction; listed as reversals", async () => {
    const c = client();
    const { accountId, externalId } = await fundedAccount(0);
    const grant = await c.addCredits({ accountId, amount: 500 });
    const fee = await c.deductCredits({ accountId, amount: 100 });

    const key = `refund-${randomUUID()}`;
    const refund = await c.reverseTransaction(
      { transactionId: fee.transactionId, amount: 30, description: "goodwill", metadata: { ticket: 7 } },
      { idempotencyKey: key });
    assert.deepEqual({ ...refund, transactionId: "" }, {
      success: true, accountId, externalId, transactionId: "", reversalOf: fee.transactionId, amount: 30,
      balance: 430,
    });
    assert.match(refund.transactionId, /^txn_[0-9a-f]{24}_[0-9a-f]{16}$/);
    const again = await c.reverseTransaction(
      { transactionId: fee.transactionId, amount: 30, description: "goodwill", metadata: { ticket: 7 } },
      { idempotencyKey: key });
    assert.deepEqual(again, refund, "the same key replays the first outcome");

    // Read-your-writes: the reversal is listed and counted right away.
    const [latest] = (await c.listTransactions({ externalId, limit: 1 })).transactions;
    assert.deepEqual(latest, {
      id: refund.transactionId, accountId, type: "reversal", amount: 30, balanceAfter: 430, description: "goodwill",
      metadata: { ticket: 7 }, reservationId: null, reversalOf: fee.transactionId, grantId: null, reason: null,
      draws: [{ grantId: grant.grantId, amount: 30 }], createdAt: latest!.createdAt,
    });
    assert.equal((await c.getBalance({ externalId })).balance, 430);

    const tooMuch = await rejection(c.reverseTransaction({ transactionId: fee.transactionId, amount: 71 }));
    assert.ok(tooMuch instanceof ValidationError);
    assert.equal(tooMuch.status, 400);
    assert.equal(tooMuch.code, "invalid_request");
    assert.equal(tooMuch.field, "amount");
    assert.equal(tooMuch.details?.["remaining"], 70);

    const ofReversal = await rejection(c.reverseTransaction({ transactionId: refund.transactionId }));
    assert.ok(ofReversal instanceof ValidationError);

    // Taking back the whole grant (500) would overdraw: 430 are available.
    const overdraw = await rejection(c.reverseTransaction({ transactionId: grant.transactionId }));
    assert.ok(overdraw instanceof InsufficientCreditsError);
    assert.equal(overdraw.status, 402);
    assert.equal(overdraw.needed, 500);
    assert.equal(overdraw.available, 430);

    const correction = await c.reverseTransaction({ transactionId: grant.transactionId, amount: 400 });
    assert.equal(correction.balance, 30);
    // The rest of the fee: amount omitted reverses all that is left.
    const rest = await c.reverseTransaction({ transactionId: fee.transactionId });
    assert.deepEqual([rest.amount, rest.balance], [70, 100]);

    const listed = await c.listTransactions({ accountId, type: "reversal" });
    assert.deepEqual(listed.transactions.map((t) => [t.amount, t.balanceAfter, t.reversalOf]), [
      [70, 100, fee.transactionId], [-400, 30, grant.transactionId], [30, 430, fee.transactionId]]);
    assert.equal((await c.getBalance({ accountId })).balance, 100);
  });

  test("an unknown transaction is a NotFoundError transaction_not_found", async () => {
    const { accountId } = await fundedAccount(0);
    const error = await rejection(
      client().reverseTransaction({ transactionId: `txn_${accountId.slice(4)}_0123456789abcdef` }));
    assert.equal(error.status, 404);
    assert.equal(error.code, "transaction_not_found");
  });
});
