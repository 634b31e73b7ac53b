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
  /** What it cost in credits at the model's price when recorded; null when the model has no price. */
  costCredits: number | null;
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

/** An account, and optionally a past time to read its balance at. */
export type GetBalanceParams = AccountRef & {
  /**
   * The balance as it was at this time: right after the account's last event at or before it (the fold of the
   * log up to it). Default: now.
   */
  asOf?: TimeParam;
  /**
   * Also the balance's grant details: `byCategory`, `expiringSoon` and `expiringWithinDays` (include=grants).
   * Without it (and without `expiringWithinDays`) the answer has the upstream shape only.
   */
  includeGrants?: boolean;
  /** The window of `expiringSoon`, in days from now, 0-3650; the server's default is 7. Implies includeGrants. */
  expiringWithinDays?: number;
};

export interface Balance {
  success: true;
  /** The time asked for, when `asOf` was given (RFC 3339 UTC with milliseconds). */
  asOf?: string;
  accountId: string;
  externalId: string;
  balance: number;
  reserved: number;
  /** balance - reserved: what can be charged now. */
  available: number;
  /**
   * The balance by the category of the grants that hold it, held credits included (`paid + promotional =
   * balance`). Only with includeGrants (or expiringWithinDays), and never with `asOf`.
   */
  byCategory?: CategorySplit;
  /**
   * The credits of the balance (held ones included) in grants not expired yet that expire within
   * `expiringWithinDays` days from now. Absent with `asOf`.
   */
  expiringSoon?: number;
  /** The window `expiringSoon` counts, in days (the one asked for, default 7). Absent with `asOf`. */
  expiringWithinDays?: number;
}

// ---- addCredits / deductCredits ----

// ---- credit grants ----

/** `paid` (the default) or `promotional`. */
export type GrantCategory = "paid" | "promotional";

/** What was paid for a grant: integer minor units (cents for USD) of an ISO 4217 currency. */
export interface CostBasis {
  amount: number;
  currency: string;
}

/** Credits a movement took from (or returned to) one grant. */
export interface GrantDraw {
  grantId: string;
  amount: number;
}

/** Credits by grant category. */
export interface CategorySplit {
  paid: number;
  promotional: number;
}

/**
 * Every addCredits creates a grant. Deductions, holds and over-captures take credits from unexpired grants in burn
 * order: lower `priority` first, then the soonest `expiresAt` (never-expiring last), then the oldest.
 */
export type AddCreditsParams = AccountRef & {
  amount: number;
  description?: string;
  paymentMethod?: string;
  metadata?: Metadata;
  /** When the grant's unused, unheld remainder expires (RFC 3339 or a Date); must be in the future. */
  expiresAt?: string | Date;
  /** Or: the expiry in seconds from now. */
  expiresInSeconds?: number;
  /** 0..100, lower burns first; the server's default is 50. */
  priority?: number;
  category?: GrantCategory;
  costBasis?: CostBasis;
};

export interface AddCreditsResult {
  success: true;
  accountId: string;
  externalId: string;
  /** The balance after the addition. */
  balance: number;
  added: number;
  transactionId: string;
  /** The grant the credits form. */
  grantId: string;
  /** null: never expires. */
  expiresAt: string | null;
  priority: number;
  category: GrantCategory;
  costBasis: CostBasis | null;
}

export interface VoidGrantResult {
  success: true;
  accountId: string;
  externalId: string;
  grantId: string;
  /** The unused, unheld remainder removed now; what open holds release of the grant later is removed then. */
  voided: number;
  /** The balance after the void. */
  balance: number;
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
  /** Which grants the credits came from. */
  draws: GrantDraw[];
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
  /** The actual amount, an over-capture included. */
  amountCharged: number;
  /** The rest of the hold, available again. */
  amountReleased: number;
  /** The balance after the charge (and the over-capture). */
  balance: number;
  /** How much above the hold was charged (`allowOvercapture`); 0 for none. */
  overcaptured: number;
  /** The deduction that took the over-capture; null for none. */
  overcaptureTransactionId: string | null;
  /** Which grants the hold's part of the charge came from. */
  draws: GrantDraw[];
}

/** RequestOptions, and whether `actualAmount` may exceed the hold (the excess is taken from available). */
export interface ConfirmReservationOptions extends RequestOptions {
  allowOvercapture?: boolean;
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

// ---- reverseTransaction ----

export interface ReverseTransactionParams {
  /** The ledger transaction to reverse: a `transactionId` of addCredits, deductCredits or confirmReservation. */
  transactionId: string;
  /** How much to reverse; absent (or null) reverses all that is left of it. */
  amount?: number | null;
  description?: string;
  metadata?: Metadata;
}

export interface ReverseTransactionResult {
  success: true;
  accountId: string;
  externalId: string;
  /** The new ledger transaction (type `reversal` in listTransactions). */
  transactionId: string;
  /** The transaction it reverses. */
  reversalOf: string;
  amount: number;
  /** The balance after the reversal. */
  balance: number;
}

// ---- list endpoints (GET /v1/accounts, /v1/transactions, /v1/reservations, /v1/accounts/grants, /v1/usage) ----

/** A time for a query parameter: an RFC 3339 UTC string (e.g. `2026-11-29T00:00:00Z`) or a `Date`. */
export type TimeParam = string | Date;

/**
 * Paging shared by the list endpoints: at most `limit` items (1-200, default 50), newest first, continuing after
 * the `nextCursor` of the previous page. Paging while new entries arrive neither loses nor repeats one.
 */
export interface PageParams {
  limit?: number;
  cursor?: string;
}

/** A time range: `startDate` inclusive, `endDate` exclusive. */
export interface DateRange {
  startDate?: TimeParam;
  endDate?: TimeParam;
}

/** The fields every list result shares. */
export interface Page {
  success: true;
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

export interface ListAccountsResult extends Page {
  accounts: AccountWithBalance[];
}

export type TransactionType = "credit" | "debit" | "charge" | "reversal";

/**
 * A ledger transaction: `credit` (addCredits), `debit` (deductCredits), `charge` (confirmReservation) or
 * `reversal` (reverseTransaction).
 */
export interface LedgerTransaction {
  id: string;
  accountId: string;
  type: TransactionType;
  /** Signed: positive when the balance rose (a credit, a refund), negative when it fell. */
  amount: number;
  balanceAfter: number;
  /** Empty when none was given. */
  description: string;
  metadata: Metadata;
  /** The confirmed reservation of a `charge`; null otherwise. */
  reservationId: string | null;
  /** The transaction a `reversal` undoes; null otherwise. */
  reversalOf: string | null;
  /** The grant a `credit` created, or the grant an expiry or a void removed; null otherwise. */
  grantId: string | null;
  /** Why a `debit` was made when not by deductCredits. */
  reason: "grant_expired" | "grant_voided" | "overcapture" | null;
  /** Which grants a debit, charge or refund took credits from (or returned them to). */
  draws: GrantDraw[];
  createdAt: string;
}

export type ListTransactionsParams = AccountRef & PageParams & DateRange & {
  /** Only transactions of this type. */
  type?: TransactionType;
};

export interface ListTransactionsResult extends Page {
  accountId: string;
  externalId: string;
  transactions: LedgerTransaction[];
}

export type ListReservationsParams = AccountRef & PageParams & DateRange & {
  /** Only the pending, unexpired reservations. */
  activeOnly?: boolean;
};

/** A reservation as listed: with how it ended. */
export interface ListedReservation extends Reservation {
  /** What confirmReservation charged; 0 until then. */
  charged: number;
  /** What confirm, cancel or expiry released; 0 until then. */
  released: number;
  /** The charge's ledger transaction, once confirmed; null otherwise. */
  transactionId: string | null;
  /** When it was confirmed, cancelled or expired; null while pending. */
  resolvedAt: string | null;
}

export interface ListReservationsResult extends Page {
  reservations: ListedReservation[];
}

/**
 * `voided` after voidGrant; `expired` once `expiresAt` has passed (or the expiry was written); `active`
 * otherwise, also when nothing is left of it.
 */
export type GrantStatus = "active" | "expired" | "voided";

/**
 * A credit grant: the credits one addCredits added, with its terms and where they went. Always
 * `amount - corrected = remaining + held + charged - refunded + expired + voided`.
 */
export interface Grant {
  id: string;
  accountId: string;
  /** The addCredits transaction that created it. */
  transactionId: string;
  /** What addCredits granted. */
  amount: number;
  /** Unused and unheld: what deductions, holds and over-captures can still take. */
  remaining: number;
  /** Held by pending reservations. */
  held: number;
  /** Taken by deductions, confirmed reservations and over-captures. */
  charged: number;
  /** Returned to it by refunds (reversals of deductions or charges). */
  refunded: number;
  /** Removed by its expiry. */
  expired: number;
  /** Removed by its void. */
  voided: number;
  /** Taken back by reversals of its addCredits transaction. */
  corrected: number;
  /** null: never expires. */
  expiresAt: string | null;
  /** 0..100, lower burns first. */
  priority: number;
  category: GrantCategory;
  costBasis: CostBasis | null;
  status: GrantStatus;
  createdAt: string;
}

export type ListGrantsParams = AccountRef & PageParams & {
  /** Only the grants of this status. */
  status?: GrantStatus;
};

export interface ListGrantsResult extends Page {
  accountId: string;
  externalId: string;
  /** Newest first. */
  grants: Grant[];
}

export interface UsageFilters {
  modelId?: string;
  context?: UsageContext;
}

/** Usage records of an account (the account is required). */
export type ListUsageParams = AccountRef & PageParams & DateRange & UsageFilters & {
  /** e.g. "text" (the server's default when recording). */
  usageType?: string;
  summary?: false;
};

/** A usage record as listed (the same as recordUsage's, without `externalId`). */
export type UsageRecord = Omit<Usage, "externalId">;

export interface ListUsageResult extends Page {
  usage: UsageRecord[];
}

/**
 * A usage summary of one account, or without `accountId`/`externalId` of the whole tenant, over whole UTC days
 * from `startDate`'s (default: 30 days before `endDate`) to `endDate`'s (default: now), at most 366 days.
 */
export type UsageSummaryParams = Partial<AccountRef> & DateRange & UsageFilters & { summary: true };

export interface UsageTotals {
  records: number;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  /** inputTokens + outputTokens. */
  totalTokens: number;
  /** The summed cost in credits of the priced records (the server's CREDITS_MODEL_PRICES); 0 without prices. */
  costCredits: number;
}

export interface UsageSummaryResult {
  success: true;
  /** Present when the summary is of one account. */
  accountId?: string;
  externalId?: string;
  /** The first UTC day covered, yyyy-mm-dd. */
  startDate: string;
  /** The last UTC day covered, yyyy-mm-dd. */
  endDate: string;
  summary: {
    totals: UsageTotals;
    /** By modelId. */
    byModel: Record<string, UsageTotals>;
    /** By context ("customer", "system"). */
    byContext: Record<string, UsageTotals>;
    /** By UTC day (yyyy-mm-dd), days with usage. */
    byDay: Record<string, UsageTotals>;
  };
}

// ---- the credits report (GET /v1/reports/credits) ----

/**
 * The tenant's credits over whole UTC days from `startDate`'s (default: 30 days before `endDate`) to `endDate`'s
 * (default: now), at most 366 days: the date rules of the usage summary.
 */
export type CreditsReportParams = DateRange;

/** What happened to credits, by grant category. Net consumption is `consumed - refunded`. */
export interface CreditFigures {
  /** Added (addCredits). */
  granted: CategorySplit;
  /** Charged, gross: deductions, reservation confirmations and the excess of over-captures. */
  consumed: CategorySplit;
  /** Returned to grants by refunds (reversals of deductions or charges). */
  refunded: CategorySplit;
  /** Removed by the expiry of grants. */
  expired: CategorySplit;
  /** Removed by voids of grants. */
  voided: CategorySplit;
  /** Taken back by reversals of added credits. */
  corrected: CategorySplit;
}

export interface CreditsReportResult {
  success: true;
  /** The first UTC day covered, yyyy-mm-dd. */
  startDate: string;
  /** The last UTC day covered, yyyy-mm-dd. */
  endDate: string;
  /** The sums over the days covered. */
  totals: CreditFigures;
  /** By UTC day (yyyy-mm-dd), only the days with activity. */
  byDay: Record<string, CreditFigures>;
}
