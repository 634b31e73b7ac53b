#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace credits {

// Identifier shapes. An account id is "acc_" + 24 hex digits. Every id that belongs to an account
// (reservation "rsv_", ledger transaction "txn_", usage record "use_") embeds those 24 digits, so the owning
// account, and with it the Kafka partition, follows from the id alone without a lookup.
inline constexpr std::size_t account_hex_len = 24;
inline constexpr std::size_t child_hex_len = 16;

// The account id of (tenant, externalId): stable across processes and versions, so either id names the
// same partition and a single writer decides whether an externalId is taken.
std::string derive_account_id(std::string_view tenant, std::string_view external_id);

// The account id a create without an externalId gets when it carries an Idempotency-Key: derived from the key,
// so a retry names the same account, and with it the same partition and writer, whichever instance it reaches
// (docs/scaling.md). Never equal to a derive_account_id() of the same text: the two are salted apart.
std::string idempotent_account_id(std::string_view tenant, std::string_view idempotency_key);

// Builds ids from caller-supplied random bits (kept out of here so callers and tests choose the source).
std::string account_id_from_bits(std::uint64_t hi, std::uint32_t lo);
std::string child_id(std::string_view prefix, std::string_view account_id, std::uint64_t bits);

// An event id: a UUID version 4 (RFC 9562) from 128 caller-supplied random bits; the version and variant bits
// are overwritten.
std::string uuid_v4(std::uint64_t hi, std::uint64_t lo);

bool is_account_id(std::string_view id);
// The account a reservation, transaction or usage id belongs to; nullopt if the id is malformed or its prefix
// is not `prefix`.
std::optional<std::string> account_of(std::string_view prefix, std::string_view id);

// The grant a CreditsAdded creates: its transaction id "txn_<account>_<bits>" with the prefix "grt", so events
// written before grants name the same grant when folded. Empty if transaction_id is malformed.
std::string grant_id_of(std::string_view transaction_id);
// Its inverse: the transaction id "txn_<account>_<bits>" of the grant "grt_<account>_<bits>". Empty if grant_id
// is malformed.
std::string transaction_id_of_grant(std::string_view grant_id);

// A ledger transaction id derived from what caused it, for the events a decision emits in numbers the command
// cannot know beforehand (the expiry of a grant, the expiry of what a release or a refund returned to an expired
// grant, an over-capture): the same cause always gives the same id, so decide() stays pure and a replay agrees.
std::string derived_transaction_id(std::string_view account_id, std::string_view cause, std::string_view grant_id);

// Lowercase hex SHA-256.
std::string sha256_hex(std::string_view data);

}  // namespace credits
