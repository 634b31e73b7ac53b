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
  Account, AccountRef, AccountWithBalance, AddCreditsParams, AddCreditsResult, Balance, CancelReservationResult,
  CategorySplit, ConfirmReservationOptions, ConfirmReservationResult, CostBasis, CreateAccountParams,
  CreateAccountResult, CreateReservationParams, CreateReservationResult, CreditFigures, CreditsReportParams,
  CreditsReportResult, DateRange, DeductCreditsParams, DeductCreditsResult, GetAccountResult, GetBalanceParams,
  Grant, GrantCategory, GrantDraw, GrantStatus, LedgerTransaction, ListAccountsResult, ListedReservation,
  ListGrantsParams, ListGrantsResult, ListReservationsParams, ListReservationsResult, ListTransactionsParams,
  ListTransactionsResult, ListUsageParams, ListUsageResult, Metadata, Page, PageParams, RecordUsageParams,
  RecordUsageResult, RequestOptions, Reservation, ReservationStatus, ReverseTransactionParams,
  ReverseTransactionResult, TimeParam, TransactionType, Usage, UsageContext, UsageFilters, UsageRecord,
  UsageSummaryParams, UsageSummaryResult, UsageTotals, VoidGrantResult,
} from "./types.js";
