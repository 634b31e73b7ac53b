export { CreditsClient, DEFAULT_BASE_URL, SDK_VERSION } from "./client.js";
export type { CreditsClientOptions } from "./client.js";
export {
  AuthenticationError,
  ConflictError,
  ConnectionError,
  CreditsError,
  InsufficientCreditsError,
  NotFoundError,
  PermissionError,
  RateLimitError,
  ServerError,
  UnavailableError,
  ValidationError,
} from "./errors.js";
export type { Listings } from "./client.js";
export type {
  Account, AccountRef, AccountWithBalance, AddCreditsParams, AddCreditsResult, Balance,
  CancelReservationResult, ConfirmReservationOptions, ConfirmReservationResult, CostBasis, CreateAccountParams, CreateAccountResult,
  CreateReservationParams, CreateReservationResult, DateRange, DeductCreditsParams, DeductCreditsResult,
  GetAccountResult, GetBalanceParams, GrantCategory, GrantDraw, LedgerTransaction, ListAccountsResult, ListedReservation,
  ListReservationsParams, ListReservationsResult, ListTransactionsParams, ListTransactionsResult, ListUsageParams,
  ListUsageResult, Metadata, Page, PageParams, RecordUsageParams, RecordUsageResult, RequestOptions, Reservation,
  ReservationStatus, ReverseTransactionParams, ReverseTransactionResult, TimeParam, TransactionType, Usage,
  UsageContext, UsageFilters, UsageRecord, UsageSummaryParams, UsageSummaryResult, UsageTotals, VoidGrantResult,
} from "./types.js";
