// examples/get-started.ts (the guide's code) run as a script against the real server, checked by its output.
//
// The guide names its account "user_abc123", and a second createAccount of that externalId is 409 account_exists.
// So the example runs with CREDITS_EXAMPLE_API_KEY: a key of a tenant that has no "user_abc123" yet (the test
// checks that first). scripts/test.sh starts the API with a tenant made up for each run; by hand, list a fresh
// tenant in CREDITS_API_KEYS. The example's own code stays exactly the guide's.
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

test("the guide's example prints the guide's numbers: 1000 added, 500 held, 320 charged, 680 left", async () => {
  const c = new CreditsClient({ apiKey: exampleKey, baseUrl });
  const before = await c.getBalance({ externalId: "user_abc123" }).catch((e: unknown) => e);
  assert.ok(before instanceof NotFoundError,
    "user_abc123 already exists in this tenant: set CREDITS_EXAMPLE_API_KEY to a key of a fresh tenant");

  const env = { ...process.env, CREDITS_BASE_URL: baseUrl, CREDITS_API_KEY: exampleKey };
  const { stdout } = await run(process.execPath, [script], { env, timeout: 60_000 });

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
  // Runs after the test above (node:test runs a file's tests in order), so user_abc123 exists by now.
  const c = new CreditsClient({ apiKey: exampleKey, baseUrl });
  await c.getBalance({ externalId: "user_abc123" });
  const env = { ...process.env, CREDITS_BASE_URL: baseUrl, CREDITS_API_KEY: exampleKey };
  const failed = await run(process.execPath, [script], { env, timeout: 60_000 }).then(
    () => assert.fail("a second run must fail"),
    (e: { code?: number; stdout?: string; stderr?: string }) => e,
  );
  assert.notEqual(failed.code, 0);
  assert.equal(failed.stdout, "");
  assert.match(failed.stderr ?? "", /ConflictError/);
  assert.match(failed.stderr ?? "", /account_exists/);
  assert.equal((await c.getBalance({ externalId: "user_abc123" })).balance, 680, "nothing more was added");
});
