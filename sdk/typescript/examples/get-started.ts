// The Get Started guide's code, steps 1-6, as the guide has it. The base URL comes from the environment:
// CreditsClient reads CREDITS_BASE_URL itself (default http://127.0.0.1:8080), so step 1 is unchanged.
//
//   CREDITS_API_KEY=ck_demo_key_123 node build/examples/get-started.js
//
// Run it against a tenant that has no account "user_abc123" yet: step 2 creates it, and creating it a second
// time is answered 409 account_exists (ConflictError), as the guide's API does.

// Step 1: Create a client
import { CreditsClient } from "@credits-dev/sdk";

const client = new CreditsClient({
  apiKey: process.env.CREDITS_API_KEY!,
});

// Step 2: Create an account
const { account } = await client.createAccount({
  name: "Alice",
  externalId: "user_abc123", // your app's user id
  email: "alice@example.com",
});
console.log("Account id:", account.id);

// Step 3: Add credits
const res = await client.addCredits({
  externalId: "user_abc123",
  amount: 1000,
  description: "Starter credits",
  metadata: { source: "onboarding" },
});
console.log("New balance:", res.balance);

// Step 4: Check balance
const balance = await client.getBalance({ externalId: "user_abc123" });
console.log("Total:", balance.balance);
console.log("Reserved:", balance.reserved);
console.log("Available to use:", balance.available);
if (balance.available < 100) {
  console.log("Low balance — prompt user to top up");
}

// Step 5 (optional): Reserve → confirm or cancel
// Before LLM call
const { reservation } = await client.createReservation({
  externalId: "user_abc123",
  amount: 500,
});
// ... run your LLM call, get actual token usage ...
// Confirm with actual amount (e.g. 320 credits used)
const confirmed = await client.confirmReservation(reservation.id, 320);
console.log("Transaction id for usage:", confirmed.transactionId);
// Or cancel if the user aborted: await client.cancelReservation(reservation.id);

// Step 6 (optional): Record usage
await client.recordUsage({
  context: "customer",
  transactionId: confirmed.transactionId,
  accountId: confirmed.accountId,
  modelId: "gpt-4o",
  usageType: "text",
  inputTokens: 1000,
  outputTokens: 320,
});

// Not in the guide: where the flow left the account (1000 added, 320 charged).
const after = await client.getBalance({ externalId: "user_abc123" });
console.log("Balance after usage:", after.balance);
