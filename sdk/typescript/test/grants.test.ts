// Credit grants through the SDK against the real stack: typed terms, burn order, over-capture, voids; and the
// reads of them: the grants listing, the balance by category and what expires soon, the tenant's credits report.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, test } from "node:test";

import {
  ConflictError,
  type CreditsClient,
  type Grant,
  type GrantStatus,
  InsufficientCreditsError,
  type ListGrantsResult,
  NotFoundError,
  ValidationError,
} from "@credits-dev/sdk";

import { client, freshExternalId, rejection } from "./env.js";

const daySeconds = 86_400;

// The counters of a grant always account for what it granted.
function assertConserved(g: Grant): void {
  assert.equal(g.amount - g.corrected, g.remaining + g.held + g.charged - g.refunded + g.expired + g.voided,
    `grant ${g.id} conserves its credits: ${JSON.stringify(g)}`);
}

// Pages by hand with `limit`, checking each page, until nextCursor is null.
async function allGrants(
  c: CreditsClient,
  externalId: string,
  limit: number,
  status?: GrantStatus,
): Promise<{ grants: Grant[]; pages: number }> {
  const grants: Grant[] = [];
  let cursor: string | undefined;
  for (let pages = 1; pages <= 20; pages++) {
    const page: ListGrantsResult = await c.listGrants({ externalId, limit, cursor, ...(status ? { status } : {}) });
    assert.equal(page.externalId, externalId);
    assert.ok(page.grants.length <= limit, "a page holds at most limit grants");
    grants.push(...page.grants);
    if (page.nextCursor === null) return { grants, pages };
    cursor = page.nextCursor;
  }
  assert.fail("more pages than grants");
}

const utcDay = (time: string): string => time.slice(0, 10);

describe("credit grants", () => {
  test("a trial and a top-up, a hold across both, an over-capture and a void", async () => {
    const c = client();
    const externalId = freshExternalId();
    await c.createAccount({ name: "Grants", externalId });

    const trial = await c.addCredits({
      externalId,
      amount: 500,
      category: "promotional",
      priority: 10,
      expiresAt: new Date(Date.now() + 14 * 86_400_000),
    });
    assert.match(trial.grantId, /^grt_[0-9a-f]{24}_[0-9a-f]{16}$/);
    assert.deepEqual([trial.category, trial.priority, trial.costBasis], ["promotional", 10, null]);
    assert.ok(trial.expiresAt !== null && Date.parse(trial.expiresAt) > Date.now());
    const topUp = await c.addCredits({ externalId, amount: 1000, costBasis: { amount: 999, currency: "USD" } });
    assert.deepEqual([topUp.category, topUp.priority, topUp.expiresAt], ["paid", 50, null]);
    assert.deepEqual(topUp.costBasis, { amount: 999, currency: "USD" });

    // The hold takes the trial first (priority 10), then the top-up.
    const { reservation } = await c.createReservation({ externalId, amount: 800 });
    const tooMuch = await rejection(c.confirmReservation(reservation.id, 900));
    assert.ok(tooMuch instanceof ValidationError);
    const confirmed = await c.confirmReservation(reservation.id, 950, { allowOvercapture: true });
    assert.deepEqual([confirmed.amountCharged, confirmed.amountReleased, confirmed.overcaptured, confirmed.balance],
      [950, 0, 150, 550]);
    assert.match(confirmed.overcaptureTransactionId ?? "", /^txn_/);
    assert.deepEqual(confirmed.draws, [{ grantId: trial.grantId, amount: 500 }, { grantId: topUp.grantId, amount: 300 }]);

    const second = await c.createReservation({ externalId, amount: 500 });
    const short = await rejection(c.confirmReservation(second.reservation.id, 700, { allowOvercapture: true }));
    assert.ok(short instanceof InsufficientCreditsError);
    assert.deepEqual(short.details, { needed: 200, available: 50 });
    await c.cancelReservation(second.reservation.id);  // the refused over-capture left the hold pending

    const voided = await c.voidGrant(topUp.grantId);
    assert.deepEqual([voided.grantId, voided.voided, voided.balance], [topUp.grantId, 550, 0]);
    const again = await rejection(c.voidGrant(topUp.grantId));
    assert.ok(again instanceof ConflictError);
    assert.equal(again.code, "grant_not_active");
    const unknown = await rejection(c.voidGrant("grt_000000000000000000000000_0000000000000000"));
    assert.ok(unknown instanceof NotFoundError);
  });
});

describe("reading grants", () => {
  test("listGrants, the balance by category and what expires soon, status filters, the credits report", async () => {
    const c = client();
    const externalId = freshExternalId();
    const { account } = await c.createAccount({ name: "Grant reads", externalId });
    const trial = await c.addCredits({
      externalId, amount: 500, category: "promotional", priority: 10, expiresInSeconds: 3 * daySeconds,
    });
    const topUp = await c.addCredits({ externalId, amount: 1000, costBasis: { amount: 999, currency: "USD" } });

    // Newest first, with the terms addCredits answered and nothing used yet.
    const fresh = await c.listGrants({ externalId });
    assert.deepEqual([fresh.accountId, fresh.externalId, fresh.nextCursor], [account.id, externalId, null]);
    assert.deepEqual(fresh.grants.map((g) => g.id), [topUp.grantId, trial.grantId]);
    const [top, tri] = fresh.grants as [Grant, Grant];
    assert.deepEqual(
      [top.accountId, top.transactionId, top.amount, top.remaining, top.expiresAt, top.priority, top.category,
        top.status],
      [account.id, topUp.transactionId, 1000, 1000, null, 50, "paid", "active"]);
    assert.deepEqual(top.costBasis, { amount: 999, currency: "USD" });
    assert.deepEqual(
      [tri.transactionId, tri.amount, tri.remaining, tri.expiresAt, tri.priority, tri.category, tri.costBasis,
        tri.status],
      [trial.transactionId, 500, 500, trial.expiresAt, 10, "promotional", null, "active"]);
    for (const g of fresh.grants) {
      assert.deepEqual([g.held, g.charged, g.refunded, g.expired, g.voided, g.corrected], [0, 0, 0, 0, 0, 0]);
      assert.match(g.createdAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      assertConserved(g);
    }

    // A deduction and a hold take the trial first (priority 10); a refund returns to it.
    const fee = await c.deductCredits({ externalId, amount: 100 });
    await c.reverseTransaction({ transactionId: fee.transactionId, amount: 20 });
    const { reservation } = await c.createReservation({ externalId, amount: 50 });
    const used = await c.listGrants({ externalId });
    const usedTrial = used.grants.find((g) => g.id === trial.grantId)!;
    assert.deepEqual([usedTrial.remaining, usedTrial.held, usedTrial.charged, usedTrial.refunded], [370, 50, 100, 20]);
    used.grants.forEach(assertConserved);

    // The balance split by category, held credits included, and the grants' sums match the balance.
    const plain = await c.getBalance({ externalId });
    assert.deepEqual([plain.byCategory, plain.expiringSoon], [undefined, undefined], "the upstream shape by default");
    const balance = await c.getBalance({ externalId, includeGrants: true });
    assert.deepEqual([balance.balance, balance.reserved], [1420, 50]);
    assert.deepEqual(balance.byCategory, { paid: 1000, promotional: 420 });
    assert.equal(balance.byCategory!.paid + balance.byCategory!.promotional, balance.balance);
    assert.equal(used.grants.reduce((sum, g) => sum + g.remaining + g.held, 0), balance.balance);
    assert.equal(used.grants.reduce((sum, g) => sum + g.held, 0), balance.reserved);
    await c.cancelReservation(reservation.id);

    // The trial expires in 3 days: within 7 (the default), not within 1. A past balance has no outlook.
    const week = await c.getBalance({ externalId, includeGrants: true });
    assert.deepEqual([week.expiringSoon, week.expiringWithinDays], [420, 7]);
    const explicitWeek = await c.getBalance({ externalId, expiringWithinDays: 7 });
    assert.deepEqual([explicitWeek.expiringSoon, explicitWeek.expiringWithinDays], [420, 7]);
    const oneDay = await c.getBalance({ externalId, expiringWithinDays: 1 });
    assert.deepEqual([oneDay.expiringSoon, oneDay.expiringWithinDays], [0, 1]);
    const past = await c.getBalance({ externalId, asOf: new Date(), includeGrants: true });
    assert.deepEqual([past.byCategory, past.expiringSoon, past.expiringWithinDays], [undefined, undefined, undefined]);
    const tooFar = await rejection(c.getBalance({ externalId, expiringWithinDays: 3651 }));
    assert.ok(tooFar instanceof ValidationError);
    assert.equal(tooFar.field, "expiringWithinDays");

    // One grant a page: the same grants in the same order, the cursor null on the last page; paginate() agrees.
    const paged = await allGrants(c, externalId, 1);
    assert.deepEqual(paged.grants.map((g) => g.id), [topUp.grantId, trial.grantId]);
    assert.ok(paged.pages >= 2, `paged (${paged.pages} pages)`);
    const walked: string[] = [];
    for await (const g of c.paginate("listGrants", { externalId, limit: 1 })) walked.push(g.id);
    assert.deepEqual(walked, [topUp.grantId, trial.grantId]);

    // Status: a void, and a grant whose time has passed (expired at once, whether or not the writer wrote it yet).
    await c.voidGrant(topUp.grantId);
    const flash = await c.addCredits({ externalId, amount: 10, category: "promotional", expiresInSeconds: 1 });
    await sleep(Math.max(0, Date.parse(flash.expiresAt!) - Date.now()) + 200);
    const byStatus = async (status: GrantStatus): Promise<string[]> =>
      (await allGrants(c, externalId, 50, status)).grants.map((g) => g.id);
    assert.deepEqual(await byStatus("active"), [trial.grantId]);
    assert.deepEqual(await byStatus("voided"), [topUp.grantId]);
    assert.deepEqual(await byStatus("expired"), [flash.grantId]);
    const after = await c.listGrants({ externalId });
    assert.deepEqual(after.grants.map((g) => [g.id, g.status]),
      [[flash.grantId, "expired"], [topUp.grantId, "voided"], [trial.grantId, "active"]]);
    const voidedTopUp = after.grants.find((g) => g.id === topUp.grantId)!;
    assert.deepEqual([voidedTopUp.remaining, voidedTopUp.voided], [0, 1000]);
    after.grants.forEach(assertConserved);
    const invalid = await rejection(c.listGrants({ externalId, status: "spent" as GrantStatus }));
    assert.ok(invalid instanceof ValidationError);
    assert.equal(invalid.field, "status");

    // The tenant-wide report: other tests and runs add to it, so it holds at least what this test did, on the
    // UTC day each of it happened.
    const report = await c.getCreditsReport({ startDate: new Date(Date.now() - daySeconds * 1000) });
    assert.equal(report.endDate, new Date().toISOString().slice(0, 10));
    const day = (time: string) => report.byDay[utcDay(time)];
    assert.ok(day(tri.createdAt)!.granted.promotional >= 500, JSON.stringify(report.byDay));
    assert.ok(day(top.createdAt)!.granted.paid >= 1000, JSON.stringify(report.byDay));
    assert.ok(report.totals.consumed.promotional >= 100 && report.totals.refunded.promotional >= 20);
    assert.ok(report.totals.voided.paid >= 1000);
    assert.ok(report.totals.granted.promotional >= 510);
    for (const [metric, split] of Object.entries(report.totals)) {
      for (const category of ["paid", "promotional"] as const) {
        const sum = Object.values(report.byDay).reduce(
          (total, figures) => total + figures[metric as keyof typeof figures][category], 0);
        assert.equal(split[category], sum, `totals.${metric}.${category} is the sum of the days`);
      }
    }
  });
});
