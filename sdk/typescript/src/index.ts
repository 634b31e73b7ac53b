export { CreditsClient, DEFAULT_BASE_URL, SDK_VERSION } from "./client.js";
export type { CreditsClientOptions } from "./client.js";
export {
  AuthenticationError,
  ConflictError,
  ConnectionError,
  CreditsError,
  InsufficientCreditsError,
  NotFoundError,
  ServerError,
  UnavailableError,
  ValidationError,
} from "./errors.js";
export type {
  Account, AccountRef, AccountWithBalance, AddCreditsParams, AddCreditsResult, Balance,
  CancelReservationResult, ConfirmReservationResult, CreateAccountParams, CreateAccountResult,
  CreateReservationParams, CreateReservationResult, DeductCreditsParams, DeductCreditsResult,
  GetAccountResult, LedgerTransaction, ListAccountsResult, ListReservationsParams, ListReservationsResult,
  ListTransactionsParams, ListTransactionsResult, ListUsageParams, ListUsageResult, Metadata, PageParams,
  RecordUsageParams, RecordUsageResult, RequestOptions, Reservation, ReservationStatus, Usage, UsageContext,
  UsageSummaryResult, UsageTotals,
} from "./types.js";
