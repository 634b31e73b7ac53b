// Typed errors. The server answers every error as {"success": false, "error": {code, message, field?, details?}};
// the class follows the code (stable and machine-readable), the status only when the code is unknown.

/** Every error this SDK throws for a failed call. */
export class CreditsError extends Error {
  /** HTTP status; 0 when no answer came (see ConnectionError). */
  readonly status: number;
  /** The server's `error.code` (e.g. `insufficient_credits`), or the SDK's own for transport failures. */
  readonly code: string;
  /** The body field, query parameter or header the error is about, when the server names one. */
  readonly field: string | undefined;
  /** Structured context for some codes (e.g. `needed` and `available` for insufficient_credits). */
  readonly details: Record<string, unknown> | undefined;
  /** The `X-Request-Id` of the failed request: quote it when asking about a failure. */
  readonly requestId: string | undefined;
  /** Seconds the server asked to wait before a retry (`Retry-After`), if it said. */
  readonly retryAfterSeconds: number | undefined;

  constructor(init: {
    status: number;
    code: string;
    message: string;
    field?: string | undefined;
    details?: Record<string, unknown> | undefined;
    requestId?: string | undefined;
    retryAfterSeconds?: number | undefined;
    cause?: unknown;
  }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.field = init.field;
    this.details = init.details;
    this.requestId = init.requestId;
    this.retryAfterSeconds = init.retryAfterSeconds;
  }
}

/** 400 `invalid_request` (also 413 `payload_too_large` and 431): the request is malformed; `field` names what. */
export class ValidationError extends CreditsError {}

/** 401 `unauthorized`: the API key is missing or unknown. */
export class AuthenticationError extends CreditsError {}

/** 403 `forbidden`: the API key is read-only and the request would change something. */
export class PermissionError extends CreditsError {}

/** 429 `rate_limited` after the retries: the key sent more requests than its rate allows (`retryAfterSeconds`). */
export class RateLimitError extends CreditsError {}

/** 402 `insufficient_credits`: fewer credits are available than asked for. Nothing was written. */
export class InsufficientCreditsError extends CreditsError {
  /** What the request asked for. */
  get needed(): number | undefined {
    return numberDetail(this.details, "needed");
  }
  /** What was available when it was decided. */
  get available(): number | undefined {
    return numberDetail(this.details, "available");
  }
}

/**
 * 404: `account_not_found`, `reservation_not_found`, `transaction_not_found` (another tenant's are answered the
 * same), or `not_found` for a path the server does not serve.
 */
export class NotFoundError extends CreditsError {}

/**
 * 409: `account_exists`, `reservation_not_pending`, `reservation_expired`, `transaction_account_mismatch`,
 * `idempotency_key_reused`, `idempotency_key_in_flight` (the latter only once retries are used up).
 */
export class ConflictError extends CreditsError {}

/** 503 `unavailable` after the retries: Kafka or Redis cannot be reached, or the writer is busy or recovering. */
export class UnavailableError extends CreditsError {}

/** Any other 5xx, e.g. 500 `internal` (nothing was written), after the retries. */
export class ServerError extends CreditsError {}

/**
 * No answer after the retries: the connection failed (`code` "network_error") or an attempt ran past `timeoutMs`
 * (`code` "timeout"). A mutation's outcome is then unknown: call it again with the same `idempotencyKey`.
 */
export class ConnectionError extends CreditsError {}

function numberDetail(details: Record<string, unknown> | undefined, key: string): number | undefined {
  const v = details?.[key];
  return typeof v === "number" ? v : undefined;
}

const errorByCode: Record<string, typeof CreditsError> = {
  invalid_request: ValidationError,
  payload_too_large: ValidationError,
  unauthorized: AuthenticationError,
  insufficient_credits: InsufficientCreditsError,
  account_not_found: NotFoundError,
  reservation_not_found: NotFoundError,
  transaction_not_found: NotFoundError,
  not_found: NotFoundError,
  account_exists: ConflictError,
  reservation_not_pending: ConflictError,
  reservation_expired: ConflictError,
  transaction_account_mismatch: ConflictError,
  idempotency_key_reused: ConflictError,
  idempotency_key_in_flight: ConflictError,
  forbidden: PermissionError,
  rate_limited: RateLimitError,
  unavailable: UnavailableError,
  internal: ServerError,
};

function errorByStatus(status: number): typeof CreditsError {
  if (status === 400 || status === 413 || status === 431) return ValidationError;
  if (status === 401) return AuthenticationError;
  if (status === 402) return InsufficientCreditsError;
  if (status === 403) return PermissionError;
  if (status === 429) return RateLimitError;
  if (status === 404) return NotFoundError;
  if (status === 409) return ConflictError;
  if (status === 503) return UnavailableError;
  if (status >= 500) return ServerError;
  return CreditsError;
}

/** The error for an HTTP answer that is not a success, from its status, headers and (maybe non-JSON) body. */
export function errorFromResponse(status: number, headers: Headers, bodyText: string): CreditsError {
  let code = `http_${status}`;
  let message = `HTTP ${status}`;
  let field: string | undefined;
  let details: Record<string, unknown> | undefined;
  try {
    const body: unknown = JSON.parse(bodyText);
    const error = isObject(body) ? body["error"] : undefined;
    if (isObject(error)) {
      if (typeof error["code"] === "string") code = error["code"];
      if (typeof error["message"] === "string") message = error["message"];
      if (typeof error["field"] === "string") field = error["field"];
      if (isObject(error["details"])) details = error["details"];
    }
  } catch {
    // Not JSON (e.g. a proxy's error page): keep the status-derived code and show the start of the body.
    if (bodyText.trim() !== "") message = `HTTP ${status}: ${bodyText.trim().slice(0, 200)}`;
  }
  const ErrorClass = errorByCode[code] ?? errorByStatus(status);
  return new ErrorClass({
    status,
    code,
    message,
    field,
    details,
    requestId: headers.get("x-request-id") ?? undefined,
    retryAfterSeconds: parseRetryAfter(headers.get("retry-after")),
  });
}

/** `Retry-After` as seconds: an integer, or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, (at - Date.now()) / 1000);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
