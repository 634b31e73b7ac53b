// examples/get-started.ts (the guide's code) run as a script against the real server, checked by its output.
//
// The guide names its account "user_abc123", and a second createAccount of that externalId is 409 account_exists.
// So each test runs the example in a tenant of its own that has no "user_abc123" yet (each checks that first):
// CREDITS_EXAMPLE_API_KEY and CREDITS_EXAMPLE_RERUN_API_KEY. scripts/test-sdk.sh starts the API with two tenants
// made up for each run; by hand, list two fresh tenants in CREDITS_API_KEYS. Neither test depends on the other or
// on their order. The example's own code stays exactly the guide's.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { promisify } from "node:util";

import { CreditsClient, NotFoundError } from "@credits-dev/sdk";

import { apiKey, baseUrl } from "./env.js";

const run = promisify(execFile);
const script = fileURLToPath(new URL("../examples/get-started.js", import.meta.url));
const exampleKey = process.env["CREDITS_EXAMPLE_API_KEY"] ?? apiKey;
const rerunKey = process.env["CREDITS_EXAMPLE_RERUN_API_KEY"] ?? apiKey;

/** Fails unless the tenant of `key` has no user_abc123 yet; the example's first run must create it. */
async function assertFreshTenant(key: string, name: string): Promise<CreditsClient> {
  const c = new CreditsClient({ apiKey: key, baseUrl });
  const before = await c.getBalance({ externalId: "user_abc123" }).catch((e: unknown) => e);
  assert.ok(before instanceof NotFoundError, `user_abc123 already exists in this tenant: set ${name} to a key of a fresh tenant`);
  return c;
}

function runExample(key: string) {
  const env = { ...process.env, CREDITS_BASE_URL: baseUrl, CREDITS_API_KEY: key };
  return run(process.execPath, [script], { env, timeout: 60_000 });
}

test("the guide's example prints the guide's numbers: 1000 added, 500 held, 320 charged, 680 left", async () => {
  const c = await assertFreshTenant(exampleKey, "CREDITS_EXAMPLE_API_KEY");
  const { stdout } = await runExample(exampleKey);

  const lines = stdout.trimEnd().split("\n");
  assert.equal(lines.length, 7, stdout);
  assert.match(lines[0]!, /^Account id: acc_[0-9a-f]{24}$/);
  assert.deepEqual(lines.slice(1, 5), ["New balance: 1000", "Total: 1000", "Reserved: 0", "Available to use: 1000"]);
  assert.match(lines[5]!, /^Transaction id for usage: txn_[0-9a-f]{24}_[0-9a-f]{16}$/);
  assert.equal(lines[6], "Balance after usage: 680");

  const after = await c.getBalance({ externalId: "user_abc123" });
  assert.deepEqual([after.balance, after.reserved, after.available], [680, 0, 680]);
  assert.equal(`Account id: ${after.accountId}`, lines[0]);
});

test("the guide's example run twice in one tenant stops at step 2 with account_exists", async () => {
  const c = await assertFreshTenant(rerunKey, "CREDITS_EXAMPLE_RERUN_API_KEY");
  const first = await runExample(rerunKey);
  assert.equal(first.stdout.trimEnd().split("\n").at(-1), "Balance after usage: 680", "the first run completes");
  const failed = await runExample(rerunKey).then(
    () => assert.fail("a second run must fail"),
    (e: { code?: number; stdout?: string; stderr?: string }) => e,
  );
  assert.notEqual(failed.code, 0);
  assert.equal(failed.stdout, "");
  assert.match(failed.stderr ?? "", /ConflictError/);
  assert.match(failed.stderr ?? "", /account_exists/);
  assert.equal((await c.getBalance({ externalId: "user_abc123" })).balance, 680, "nothing more was added");
});
