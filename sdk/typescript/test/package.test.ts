// The package as a user gets it: `npm pack`, installed from the tarball into an empty project, imported by name.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const packageDir = fileURLToPath(new URL("../..", import.meta.url));

test("the packed tarball installs and exports CreditsClient, the errors and the type declarations", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "credits-sdk-"));
  try {
    const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--pack-destination", dir, "--json"],
      { cwd: packageDir });
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    const files = packed!.files.map((f) => f.path).sort();
    assert.ok(files.includes("dist/index.js") && files.includes("dist/index.d.ts"), files.join(" "));
    assert.ok(!files.some((f) => f.startsWith("src/") || f.startsWith("test/")), "only dist/ is shipped");

    await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
    await run("npm", ["install", "--offline", "--no-audit", "--no-fund", path.join(dir, packed!.filename)], { cwd: dir });
    const installed = JSON.parse(
      await readFile(path.join(dir, "node_modules/@credits-dev/sdk/package.json"), "utf8")) as Record<string, unknown>;
    assert.deepEqual(installed["dependencies"], undefined, "no runtime dependencies");

    const probe = [
      'import { CreditsClient, CreditsError, InsufficientCreditsError } from "@credits-dev/sdk";',
      'const c = new CreditsClient({ apiKey: "ck_probe_key", baseUrl: "http://127.0.0.1:1" });',
      'console.log(typeof c.getBalance, new InsufficientCreditsError({ status: 402, code: "x", message: "m" }) instanceof CreditsError);',
    ].join("\n");
    await writeFile(path.join(dir, "probe.mjs"), probe);
    const out = await run(process.execPath, ["probe.mjs"], { cwd: dir });
    assert.equal(out.stdout.trim(), "function true");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
