import { randomUUID } from "node:crypto";

import { ConnectionError, CreditsError, errorFromResponse } from "./errors.js";
import type {
  AccountRef,
  AccountWithBalance,
  AddCreditsParams,
  AddCreditsResult,
  Balance,
  CancelReservationResult,
  ConfirmReservationOptions,
  ConfirmReservationResult,
  CreateAccountParams,
  CreateAccountResult,
  CreateReservationParams,
  CreateReservationResult,
  CreditsReportParams,
  CreditsReportResult,
  DeductCreditsParams,
  DeductCreditsResult,
  GetAccountResult,
  GetBalanceParams,
  Grant,
  LedgerTransaction,
  ListAccountsResult,
  ListedReservation,
  ListGrantsParams,
  ListGrantsResult,
  ListReservationsParams,
  ListReservationsResult,
  ListTransactionsParams,
  ListTransactionsResult,
  ListUsageParams,
  ListUsageResult,
  Page,
  PageParams,
  RecordUsageParams,
  RecordUsageResult,
  RequestOptions,
  ReverseTransactionParams,
  ReverseTransactionResult,
  UsageRecord,
  UsageSummaryParams,
  UsageSummaryResult,
  VoidGrantResult,
} from "./types.js";

export interface CreditsClientOptions {
  /** The tenant's API key, sent as `X-API-Key`. */
  apiKey: string;
  /** Default: `process.env.CREDITS_BASE_URL`, else `http://127.0.0.1:8080` (what `scripts/up.sh` starts). */
  baseUrl?: string;
  /** Limit for each attempt, from sending the request to the whole answer. Default 10000 ms. */
  timeoutMs?: number;
  /** Retries after the first attempt of a call that failed transiently. Default 3. */
  maxRetries?: number;
}

export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
export const SDK_VERSION = "0.1.0";

const timeoutMsDefault = 10_000;
const maxRetriesDefault = 3;
// Exponential backoff with jitter between attempts: 200 ms, 400 ms, 800 ms ... capped, each scaled by a random
// factor in [0.5, 1) so that clients failing together do not retry together.
const retryDelayBaseMs = 200;
const retryDelayMaxMs = 5_000;
// A Retry-After is honoured up to this; a server asking for longer gets it on the caller's next call.
const retryAfterMaxMs = 30_000;
// Positions remembered for read-your-writes: one per account (by id and by externalId). Oldest forgotten first.
const positionsMax = 10_000;

interface LogPosition {
  topic: string;
  partition: number;
  offset: number;
  text: string;
}

function parsePosition(text: string | null): LogPosition | undefined {
  if (text === null) return undefined;
  const m = /^(.+):(\d+):(\d+)$/.exec(text);
  if (!m || m[1] === undefined || m[2] === undefined || m[3] === undefined) return undefined;
  return { topic: m[1], partition: Number(m[2]), offset: Number(m[3]), text };
}

type Query = Record<string, string | number | boolean | Date | null | undefined>;

/** The list methods `paginate` walks, with their parameters and the items of their pages. */
export interface Listings {
  listAccounts: { params: PageParams; item: AccountWithBalance };
  listTransactions: { params: ListTransactionsParams; item: LedgerTransaction };
  listReservations: { params: ListReservationsParams; item: ListedReservation };
  listGrants: { params: ListGrantsParams; item: Grant };
  listUsage: { params: ListUsageParams; item: UsageRecord };
}

// Where each list method's page holds its items.
const listItems = {
  listAccounts: "accounts",
  listTransactions: "transactions",
  listReservations: "reservations",
  listGrants: "grants",
  listUsage: "usage",
} as const satisfies Record<keyof Listings, string>;

interface Call {
  method: "GET" | "POST";
  path: string;
  query?: Query;
  body?: unknown;
  options: RequestOptions | undefined;
  /** Queries: the account whose last write the read must see. */
  readsAccount?: Partial<AccountRef>;
  /** Tenant-wide queries: the read must see the client's most recent write (whichever account it was). */
  readsLatestWrite?: boolean;
  /** Mutations whose `Credits-Position` names the ledger (every one but recordUsage, which has its own log). */
  writesLedger?: boolean;
}

/**
 * A client for one tenant of the credits API. Safe to share across concurrent calls; it holds no connection of
 * its own (Node's fetch pools them) and only remembers, per account it wrote, the log position of its last write
 * so that its own reads see its own writes.
 *
 * Every mutation carries an `Idempotency-Key` (a fresh UUID, or `options.idempotencyKey`) and is retried with the
 * same key and the byte-identical body after a network error, a timeout, a 429, a 503, a 500 or a 409
 * `idempotency_key_in_flight`, so a retry never applies twice: the server answers it with the first outcome.
 */
export class CreditsClient {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly #apiKey: string;
  // "id:<accountId>" / "ext:<externalId>" -> that account's latest ledger position written through this client.
  readonly #positions = new Map<string, LogPosition>();
  // The position of the most recent ledger write answered to this client, for tenant-wide reads.
  #latest: LogPosition | undefined;

  constructor(options: CreditsClientOptions) {
    if (typeof options?.apiKey !== "string" || options.apiKey === "") {
      throw new TypeError("CreditsClient: apiKey is required (e.g. process.env.CREDITS_API_KEY)");
    }
    const timeoutMs = options.timeoutMs ?? timeoutMsDefault;
    const maxRetries = options.maxRetries ?? maxRetriesDefault;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new RangeError("CreditsClient: timeoutMs must be > 0");
    if (!Number.isInteger(maxRetries) || maxRetries < 0) {
      throw new RangeError("CreditsClient: maxRetries must be an integer >= 0");
    }
    this.#apiKey = options.apiKey;
    this.baseUrl = (options.baseUrl ?? process.env["CREDITS_BASE_URL"] ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.timeoutMs = timeoutMs;
    this.maxRetries = maxRetries;
  }

  // ---- accounts ----

  /** Creates an account with a zero balance. POST /v1/accounts/create */
  createAccount(params: CreateAccountParams, options?: RequestOptions): Promise<CreateAccountResult> {
    return this.#call({ method: "POST", path: "/v1/accounts/create", body: params, options, writesLedger: true });
  }

  /** The account with its balance. GET /v1/accounts/get */
  getAccount(ref: AccountRef, options?: RequestOptions): Promise<GetAccountResult> {
    return this.#call({ method: "GET", path: "/v1/accounts/get", query: accountQuery(ref), options, readsAccount: ref });
  }

  /**
   * `balance`, `reserved` and `available` (= balance - reserved), now or, with `asOf`, as they were at that time.
   * With `includeGrants` (or `expiringWithinDays`), and now, also the balance by grant category (`byCategory`) and
   * what of it expires within `expiringWithinDays` days (`expiringSoon`). GET /v1/accounts/balance
   */
  getBalance(params: GetBalanceParams, options?: RequestOptions): Promise<Balance> {
    return this.#call({
      method: "GET",
      path: "/v1/accounts/balance",
      query: {
        accountId: params.accountId,
        externalId: params.externalId,
        asOf: params.asOf,
        include: params.includeGrants ? "grants" : undefined,
        expiringWithinDays: params.expiringWithinDays,
      },
      options,
      readsAccount: params,
    });
  }

  /**
   * The tenant's accounts with their balances, newest first, a page at a time. It waits for this client's most
   * recent write (e.g. the createAccount just before). GET /v1/accounts
   */
  listAccounts(params: PageParams = {}, options?: RequestOptions): Promise<ListAccountsResult> {
    return this.#call({ method: "GET", path: "/v1/accounts", query: { ...params }, options, readsLatestWrite: true });
  }

  // ---- credits ----

  /** Adds credits as one ledger transaction. POST /v1/accounts/credits/add */
  addCredits(params: AddCreditsParams, options?: RequestOptions): Promise<AddCreditsResult> {
    return this.#call({ method: "POST", path: "/v1/accounts/credits/add", body: params, options, writesLedger: true });
  }

  /** Deducts credits if that many are available. POST /v1/accounts/credits/deduct */
  deductCredits(params: DeductCreditsParams, options?: RequestOptions): Promise<DeductCreditsResult> {
    return this.#call({
      method: "POST",
      path: "/v1/accounts/credits/deduct",
      body: params,
      options,
      writesLedger: true,
    });
  }

  /**
   * Reverses `amount` (default: all that is left) of a ledger transaction by a new, linked one. A debit or charge
   * is refunded (the balance rises); a credit is corrected (the balance falls, only as far as `available` allows,
   * else `InsufficientCreditsError`). Reversals of one transaction add up to at most its amount (beyond it:
   * `ValidationError` with `details.remaining`); a reversal cannot be reversed. POST /v1/transactions/reverse
   */
  reverseTransaction(params: ReverseTransactionParams, options?: RequestOptions): Promise<ReverseTransactionResult> {
    return this.#call({
      method: "POST",
      path: "/v1/transactions/reverse",
      body: params,
      options,
      writesLedger: true,
    });
  }

  /**
   * An account's ledger transactions (credits, debits, charges, reversals), newest first, with the balance after
   * each; filtered by `type` and time. GET /v1/transactions
   */
  listTransactions(params: ListTransactionsParams, options?: RequestOptions): Promise<ListTransactionsResult> {
    return this.#call({ method: "GET", path: "/v1/transactions", query: { ...params }, options, readsAccount: params });
  }

  // ---- reservations ----

  /** Holds credits before a variable-cost operation. POST /v1/reservations/create */
  createReservation(params: CreateReservationParams, options?: RequestOptions): Promise<CreateReservationResult> {
    return this.#call({ method: "POST", path: "/v1/reservations/create", body: params, options, writesLedger: true });
  }

  /**
   * Charges `actualAmount` (0 up to the hold) and releases the rest. With `{ allowOvercapture: true }` the amount
   * may exceed the hold: the excess is taken from available in burn order, or `InsufficientCreditsError` and the
   * hold stays pending. POST /v1/reservations/confirm
   */
  confirmReservation(
    reservationId: string,
    actualAmount: number,
    options?: ConfirmReservationOptions,
  ): Promise<ConfirmReservationResult> {
    const { allowOvercapture, ...requestOptions } = options ?? {};
    return this.#call({
      method: "POST",
      path: "/v1/reservations/confirm",
      body: allowOvercapture === undefined ? { reservationId, actualAmount } : { reservationId, actualAmount, allowOvercapture },
      options: requestOptions,
      writesLedger: true,
    });
  }

  /**
   * Removes a grant's unused, unheld remainder for good (a chargeback, a cancelled promotion); `ConflictError` if
   * it expired or was voided already. POST /v1/grants/void
   */
  voidGrant(grantId: string, options?: RequestOptions): Promise<VoidGrantResult> {
    return this.#call({ method: "POST", path: "/v1/grants/void", body: { grantId }, options, writesLedger: true });
  }

  /**
   * An account's credit grants, newest first, with their terms and counters (remaining, held, charged, refunded,
   * expired, voided, corrected); `status` keeps one status. GET /v1/accounts/grants
   */
  listGrants(params: ListGrantsParams, options?: RequestOptions): Promise<ListGrantsResult> {
    return this.#call({
      method: "GET",
      path: "/v1/accounts/grants",
      query: { ...params },
      options,
      readsAccount: params,
    });
  }

  /** Releases the whole hold. POST /v1/reservations/cancel */
  cancelReservation(reservationId: string, options?: RequestOptions): Promise<CancelReservationResult> {
    return this.#call({
      method: "POST",
      path: "/v1/reservations/cancel",
      body: { reservationId },
      options,
      writesLedger: true,
    });
  }

  /** An account's reservations, newest first; `activeOnly` keeps the pending, unexpired ones. GET /v1/reservations */
  listReservations(params: ListReservationsParams, options?: RequestOptions): Promise<ListReservationsResult> {
    return this.#call({ method: "GET", path: "/v1/reservations", query: { ...params }, options, readsAccount: params });
  }

  // ---- usage ----

  /** Records token usage of a model, optionally linked to a ledger transaction. POST /v1/usage/record */
  recordUsage(params: RecordUsageParams, options?: RequestOptions): Promise<RecordUsageResult> {
    return this.#call({ method: "POST", path: "/v1/usage/record", body: params, options });
  }

  /**
   * An account's usage records, newest first, filtered by model, context, usage type and time; or with
   * `summary: true` the totals, by model, by context and by UTC day, of an account or (naming none) of the whole
   * tenant. Usage has a log of its own, which reads do not wait for: a record shows up shortly after
   * recordUsage answered. GET /v1/usage
   */
  listUsage(params: UsageSummaryParams, options?: RequestOptions): Promise<UsageSummaryResult>;
  listUsage(params: ListUsageParams, options?: RequestOptions): Promise<ListUsageResult>;
  listUsage(
    params: ListUsageParams | UsageSummaryParams,
    options?: RequestOptions,
  ): Promise<ListUsageResult | UsageSummaryResult> {
    return this.#call({ method: "GET", path: "/v1/usage", query: { ...params }, options, readsAccount: params });
  }

  // ---- reports ----

  /**
   * The whole tenant's credits granted, consumed, refunded, expired, voided and corrected, by grant category, in
   * total and by UTC day (days with activity), over whole days (default: the 30 up to `endDate`, at most 366).
   * It waits for this client's most recent write, whichever account it was. GET /v1/reports/credits
   */
  getCreditsReport(params: CreditsReportParams = {}, options?: RequestOptions): Promise<CreditsReportResult> {
    return this.#call({
      method: "GET",
      path: "/v1/reports/credits",
      query: { ...params },
      options,
      readsLatestWrite: true,
    });
  }

  // ---- paging ----

  /**
   * Every item of a list method, page after page (from `params.cursor`, or the newest), for `for await`:
   *
   *     for await (const t of client.paginate("listTransactions", { externalId, limit: 200 })) ...
   *
   * Each page is one call, with `options` (retries, `signal`, ...). Stopping the loop early fetches no more.
   */
  async *paginate<M extends keyof Listings>(
    method: M,
    params: Listings[M]["params"],
    options?: RequestOptions,
  ): AsyncGenerator<Listings[M]["item"], void, undefined> {
    const list = this[method] as (p: Listings[M]["params"], o?: RequestOptions) => Promise<Page>;
    let cursor = params.cursor;
    for (;;) {
      const page = await list.call(this, { ...params, cursor }, options);
      yield* (page as unknown as Record<string, Listings[M]["item"][]>)[listItems[method]] ?? [];
      if (!page.nextCursor) return;
      cursor = page.nextCursor;
    }
  }

  // ---- transport ----

  async #call<T>(call: Call): Promise<T> {
    const opts = call.options ?? {};
    const maxRetries = opts.maxRetries ?? this.maxRetries;
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const url = this.baseUrl + call.path + queryString(call.query);
    const headers: Record<string, string> = {
      "X-API-Key": this.#apiKey,
      Accept: "application/json",
      "User-Agent": `credits-sdk-typescript/${SDK_VERSION}`,
    };
    if (opts.requestId !== undefined) headers["X-Request-Id"] = opts.requestId;
    // Serialised once: the server recognises a retry by its key AND its byte-identical body.
    let body: string | undefined;
    if (call.method === "POST") {
      body = JSON.stringify(call.body ?? {});
      headers["Content-Type"] = "application/json";
      headers["Idempotency-Key"] = opts.idempotencyKey ?? randomUUID();
    } else {
      const min = opts.minPosition ??
        (call.readsAccount ? this.#positionFor(call.readsAccount)?.text : undefined) ??
        (call.readsLatestWrite ? this.#latest?.text : undefined);
      if (min !== undefined) headers["Credits-Min-Position"] = min;
    }

    for (let attempt = 0; ; attempt++) {
      const retriesLeft = attempt < maxRetries;
      let failure: CreditsError;
      try {
        const response = await this.#attempt(url, call.method, headers, body, timeoutMs, opts.signal);
        if (response.status >= 200 && response.status < 300) {
          const data = JSON.parse(response.text) as T;
          if (call.writesLedger) this.#remember(data, parsePosition(response.headers.get("credits-position")));
          return data;
        }
        failure = errorFromResponse(response.status, response.headers, response.text);
        if (!retriesLeft || !isRetryable(failure)) throw failure;
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        if (e instanceof CreditsError && !(e instanceof ConnectionError)) throw e;
        failure = e instanceof ConnectionError ? e : connectionError(e, call.method, url);
        if (!retriesLeft) throw failure;
      }
      await sleep(retryDelayMs(attempt, failure.retryAfterSeconds), opts.signal);
    }
  }

  async #attempt(
    url: string,
    method: string,
    headers: Record<string, string>,
    body: string | undefined,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; headers: Headers; text: string }> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = (): void => controller.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (body !== undefined) init.body = body;
      const response = await fetch(url, init);
      // The body is read under the same deadline: a connection that dies mid-answer is a failed attempt too.
      const text = await response.text();
      return { status: response.status, headers: response.headers, text };
    } catch (e) {
      if (timedOut) {
        throw new ConnectionError({
          status: 0,
          code: "timeout",
          message: `${method} ${url}: no complete answer within ${timeoutMs} ms`,
          cause: e,
        });
      }
      throw e;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  #positionFor(ref: Partial<AccountRef>): LogPosition | undefined {
    return (
      (ref.accountId ? this.#positions.get("id:" + ref.accountId) : undefined) ??
      (ref.externalId ? this.#positions.get("ext:" + ref.externalId) : undefined)
    );
  }

  // Remembers a write's position under the account it wrote (by id and by externalId). An account's events all
  // live in one partition, so the highest offset there is the latest write; answers can arrive out of order.
  #remember(data: unknown, position: LogPosition | undefined): void {
    if (!position) return;
    this.#latest = position;
    const { accountId, externalId } = accountOf(data);
    for (const key of [accountId && "id:" + accountId, externalId && "ext:" + externalId]) {
      if (!key) continue;
      const known = this.#positions.get(key);
      if (known && known.topic === position.topic && known.partition === position.partition &&
          known.offset >= position.offset) {
        continue;
      }
      this.#positions.delete(key);  // re-inserted last: the Map's order is the eviction order
      this.#positions.set(key, position);
      if (this.#positions.size > positionsMax) {
        const oldest = this.#positions.keys().next().value;
        if (oldest !== undefined) this.#positions.delete(oldest);
      }
    }
  }
}

// The account a mutation's answer is about: top-level (credits, confirm, reverse), `account` (create) or
// `reservation`.
function accountOf(data: unknown): { accountId?: string; externalId?: string } {
  if (typeof data !== "object" || data === null) return {};
  const d = data as Record<string, unknown>;
  const inner = (d["account"] ?? d["reservation"]) as Record<string, unknown> | undefined;
  const accountId = d["accountId"] ?? inner?.["accountId"] ?? (d["account"] ? inner?.["id"] : undefined);
  const externalId = d["externalId"] ?? inner?.["externalId"];
  return {
    ...(typeof accountId === "string" && accountId !== "" ? { accountId } : {}),
    ...(typeof externalId === "string" && externalId !== "" ? { externalId } : {}),
  };
}

function accountQuery(ref: Partial<AccountRef>): Query {
  return { accountId: ref.accountId, externalId: ref.externalId };
}

// Dates as RFC 3339 UTC (`toISOString`), booleans as true/false; undefined and null are left out.
function queryString(query: Query | undefined): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null) continue;
    params.set(k, v instanceof Date ? v.toISOString() : String(v));
  }
  const s = params.toString();
  return s === "" ? "" : "?" + s;
}

// Transient: the server did not decide (503), failed without writing (500), is still deciding the same key
// (409 idempotency_key_in_flight), or refused the request before reading it because the key is over its rate
// (429, with Retry-After); a gateway in between may answer 502/504 for the same reasons.
function isRetryable(e: CreditsError): boolean {
  return (
    e.status === 429 || e.status === 500 || e.status === 502 || e.status === 503 || e.status === 504 ||
    e.code === "idempotency_key_in_flight"
  );
}

function connectionError(e: unknown, method: string, url: string): ConnectionError {
  const reason = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e);
  return new ConnectionError({ status: 0, code: "network_error", message: `${method} ${url}: ${reason}`, cause: e });
}

function retryDelayMs(attempt: number, retryAfterSeconds: number | undefined): number {
  const backoff = Math.min(retryDelayMaxMs, retryDelayBaseMs * 2 ** attempt) * (0.5 + Math.random() / 2);
  if (retryAfterSeconds === undefined) return backoff;
  return Math.min(retryAfterMaxMs, Math.max(backoff, retryAfterSeconds * 1000));
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
