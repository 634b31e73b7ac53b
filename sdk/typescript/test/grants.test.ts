// Credit grants through the SDK against the real stack: typed terms, burn order, over-capture, voids.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ConflictError, InsufficientCreditsError, NotFoundError, ValidationError } from "@credits-dev/sdk";

import { client, freshExternalId, rejection } from "./env.js";

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
