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
export type * from "./types.js";
