// What the tests run against: a real credits stack, named by the environment (sdk/typescript/test.sh).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { CreditsClient, CreditsError, type CreditsClientOptions } from "@credits-dev/sdk";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set: the SDK tests run against a real credits-api (see test.sh)`);
  return value;
}

export const baseUrl = required("CREDITS_BASE_URL");
export const apiKey = required("CREDITS_API_KEY");

export function client(options: Partial<CreditsClientOptions> = {}): CreditsClient {
  return new CreditsClient({ apiKey, baseUrl, ...options });
}

/** An externalId no earlier run used, so runs against a persistent stack never collide. */
export function freshExternalId(): string {
  return "sdk_" + randomUUID().replaceAll("-", "").slice(0, 16);
}

/** A new account with `credits` credits, by externalId, made through `c` (default: a client of its own). */
export async function fundedAccount(
  credits: number,
  c: CreditsClient = client(),
): Promise<{ accountId: string; externalId: string }> {
  const externalId = freshExternalId();
  const { account } = await c.createAccount({ name: "Test", externalId });
  if (credits > 0) await c.addCredits({ externalId, amount: credits });
  return { accountId: account.id, externalId };
}

// The CreditsError a call fails with; fails the test if it succeeds or fails otherwise.
export async function rejection(p: Promise<unknown>): Promise<CreditsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof CreditsError, `expected a CreditsError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected the call to fail");
}
