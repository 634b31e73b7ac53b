// Request and response shapes of the credits REST API (docs/openapi.yaml in the repository), named as the
// Get Started guide names them. Amounts are integer credits from 1 to 2^53-1, so a JS number holds them exactly.

/** A free-form JSON object stored with an account, a transaction, a reservation or a usage record. */
export type Metadata = Record<string, unknown>;

/**
 * Names an account: by our `accountId` (`acc_…`), by your own `externalId`, or by both when they name the same
 * account.
 */
export type AccountRef =
  | { accountId: string; externalId?: string }
  | { externalId: string; accountId?: string };

/** Per-call options, the last argument of every method. */
export interface RequestOptions {
  /**
   * Mutations only: the `Idempotency-Key` to send. By default each call gets a fresh `crypto.randomUUID()`,
   * which every retry of that call reuses. Pass your own to make a retry across processes safe too (e.g. the
   * id of the purchase you are crediting).
   */
  idempotencyKey?: string;
  /** Sent as `X-Request-Id` (1-128 printable ASCII bytes); the server stores it with the events it causes. */
  requestId?: string;
  /**
   * Queries only: a `Credits-Position` from an earlier write (perhaps by another process), sent as
   * `Credits-Min-Position` instead of the one the client remembers for the account.
   */
  minPosition?: string;
  /** Cancels the call, including any retry still waiting. */
  signal?: AbortSignal;
  /** Overrides the client's `timeoutMs` for each attempt of this call. */
  timeoutMs?: number;
  /** Overrides the client's `maxRetries` for this call. */
  maxRetries?: number;
}

export interface Account {
  id: string;
  name: string;
  /** Empty when the account has none. */
  externalId: string;
  /** Empty when none was given. */
  email: string;
  metadata: Metadata;
  /** RFC 3339 UTC with milliseconds. */
  createdAt: string;
}

export interface AccountWithBalance extends Account {
  balance: number;
  reserved: number;
  available: number;
}

export type ReservationStatus = "pending" | "confirmed" | "cancelled" | "expired";

export interface Reservation {
  id: string;
  accountId: string;
  externalId: string;
  amount: number;
  status: ReservationStatus;
  createdAt: string;
  expiresAt: string;
  operation: string;
  model: string;
  metadata: Metadata;
}

export type UsageContext = "customer" | "system";

export interface Usage {
  id: string;
  accountId: string;
  externalId: string;
  context: UsageContext;
  /** The linked ledger transaction, `null` when none was given. */
  transactionId: string | null;
  modelId: string;
  usageType: string;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  /** inputTokens + outputTokens. */
  totalTokens: number;
  metadata: Metadata;
  createdAt: string;
}

// ---- createAccount / getAccount / getBalance ----

export interface CreateAccountParams {
  name: string;
  /** Your own user id; it names at most one account per tenant (creating it twice is `409 account_exists`). */
  externalId?: string;
  email?: string;
  metadata?: Metadata;
}

export interface CreateAccountResult {
  success: true;
  account: Account;
}

export interface GetAccountResult {
  success: true;
  account: AccountWithBalance;
}

export interface Balance {
  success: true;
  accountId: string;
  externalId: string;
  balance: number;
  reserved: number;
  /** balance - reserved: what can be charged now. */
  available: number;
}

// ---- addCredits / deductCredits ----

export type AddCreditsParams = AccountRef & {
  amount: number;
  description?: string;
  paymentMethod?: string;
  metadata?: Metadata;
};

export interface AddCreditsResult {
  success: true;
  accountId: string;
  externalId: string;
  /** The balance after the addition. */
  balance: number;
  added: number;
  transactionId: string;
}

export type DeductCreditsParams = AccountRef & {
  amount: number;
  description?: string;
  metadata?: Metadata;
};

export interface DeductCreditsResult {
  success: true;
  accountId: string;
  externalId: string;
  /** The balance after the deduction. */
  balance: number;
  deducted: number;
  transactionId: string;
}

// ---- reservations ----

export type CreateReservationParams = AccountRef & {
  amount: number;
  /** How long the hold lasts, 1 s to 7 days; the server's default is 900 s. */
  expiresInSeconds?: number;
  operation?: string;
  model?: string;
  metadata?: Metadata;
};

export interface CreateReservationResult {
  success: true;
  reservation: Reservation;
}

export interface ConfirmReservationResult {
  success: true;
  reservationId: string;
  /** The ledger transaction that charged `amountCharged`: link usage to it. */
  transactionId: string;
  accountId: string;
  externalId: string;
  amountCharged: number;
  /** The rest of the hold, available again. */
  amountReleased: number;
  /** The balance after the charge. */
  balance: number;
}

export interface CancelReservationResult {
  success: true;
  reservation: Reservation;
  amountReleased: number;
}

// ---- usage ----

export type RecordUsageParams = AccountRef & {
  context: UsageContext;
  /** A ledger transaction of the same account, e.g. a confirmed reservation's `transactionId`. */
  transactionId?: string;
  modelId: string;
  /** Defaults to "text" on the server. */
  usageType?: string;
  inputTokens?: number;
  outputTokens?: number;
  cachedTokens?: number;
  metadata?: Metadata;
};

export interface RecordUsageResult {
  success: true;
  usage: Usage;
}

// ---- list endpoints (GET /v1/accounts, /v1/reservations, /v1/transactions, /v1/usage) ----
// These follow the upstream API reference; the server does not serve them yet (it answers 404 not_found), so
// their shapes may still be adjusted when it does.

/** Paging shared by the list endpoints: at most `limit` items, from the `nextCursor` of the previous page. */
export interface PageParams {
  limit?: number;
  cursor?: string;
}

export interface ListAccountsResult {
  success: true;
  accounts: AccountWithBalance[];
  /** Pass as `cursor` for the next page; absent or null on the last page. */
  nextCursor?: string | null;
}

export type ListReservationsParams = AccountRef & {
  /** Only `pending` reservations. */
  activeOnly?: boolean;
};

export interface ListReservationsResult {
  success: true;
  reservations: Reservation[];
}

/** A posted credit or debit (the `transactionId` of addCredits, deductCredits and confirmReservation). */
export interface LedgerTransaction {
  id: string;
  accountId: string;
  /** e.g. "credit" or "debit". */
  type: string;
  amount: number;
  createdAt: string;
  description?: string;
  metadata?: Metadata;
  [field: string]: unknown;
}

export type ListTransactionsParams = AccountRef & PageParams;

export interface ListTransactionsResult {
  success: true;
  transactions: LedgerTransaction[];
  nextCursor?: string | null;
}

export interface ListUsageParams extends PageParams {
  accountId?: string;
  externalId?: string;
  modelId?: string;
  context?: UsageContext;
  /** Start of the date range (RFC 3339), inclusive. */
  startDate?: string;
  /** End of the date range (RFC 3339), exclusive. */
  endDate?: string;
}

export interface ListUsageResult {
  success: true;
  usage: Usage[];
  nextCursor?: string | null;
}

export interface UsageTotals {
  records: number;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  totalTokens: number;
}

export interface UsageSummaryResult {
  success: true;
  summary: {
    byModel: Record<string, UsageTotals>;
    byContext: Record<string, UsageTotals>;
    totals: UsageTotals;
  };
}
