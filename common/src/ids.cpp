#include "credits/common/ids.hpp"

#include <array>
#include <cstdio>

#include <openssl/sha.h>

namespace credits {
namespace {

constexpr char hex_digits[] = "0123456789abcdef";

std::string to_hex(const unsigned char* data, std::size_t len) {
  std::string out;
  out.reserve(len * 2);
  for (std::size_t i = 0; i < len; ++i) {
    out.push_back(hex_digits[data[i] >> 4]);
    out.push_back(hex_digits[data[i] & 0xf]);
  }
  return out;
}

std::string hex_of(std::uint64_t v, std::size_t digits) {
  std::string out(digits, '0');
  for (std::size_t i = digits; i-- > 0; v >>= 4) out[i] = hex_digits[v & 0xf];
  return out;
}

bool is_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return to_hex(digest.data(), digest.size());
}

std::string derive_account_id(std::string_view tenant, std::string_view external_id) {
  std::string material;
  material.reserve(tenant.size() + external_id.size() + 16);
  material.append("credits/account/").append(tenant).push_back('\0');
  material.append(external_id);
  return "acc_" + sha256_hex(material).substr(0, account_hex_len);
}

std::string idempotent_account_id(std::string_view tenant, std::string_view idempotency_key) {
  std::string material;
  material.reserve(tenant.size() + idempotency_key.size() + 32);
  material.append("credits/account-by-idempotency-key/").append(tenant).push_back('\0');
  material.append(idempotency_key);
  return "acc_" + sha256_hex(material).substr(0, account_hex_len);
}

std::string account_id_from_bits(std::uint64_t hi, std::uint32_t lo) { return "acc_" + hex_of(hi, 16) + hex_of(lo, 8); }

std::string child_id(std::string_view prefix, std::string_view account_id, std::uint64_t bits) {
  std::string out(prefix);
  out.append("_").append(account_id.substr(4)).append("_").append(hex_of(bits, child_hex_len));
  return out;
}

std::string grant_id_of(std::string_view transaction_id) {
  if (!account_of("txn", transaction_id)) return {};
  return "grt" + std::string(transaction_id.substr(3));
}

std::string transaction_id_of_grant(std::string_view grant_id) {
  if (!account_of("grt", grant_id)) return {};
  return "txn" + std::string(grant_id.substr(3));
}

std::string derived_transaction_id(std::string_view account_id, std::string_view cause, std::string_view grant_id) {
  std::string material("credits/derived-transaction/");
  material.append(cause).push_back('\0');
  material.append(grant_id);
  const auto digest = sha256_hex(material);
  return "txn_" + std::string(account_id.substr(4)) + "_" + digest.substr(0, child_hex_len);
}

std::string uuid_v4(std::uint64_t hi, std::uint64_t lo) {
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  const auto h = hex_of(hi, 16), l = hex_of(lo, 16);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + l.substr(0, 4) + "-" + l.substr(4);
}

bool is_account_id(std::string_view id) {
  return id.size() == 4 + account_hex_len && id.substr(0, 4) == "acc_" && is_hex(id.substr(4));
}

std::optional<std::string> account_of(std::string_view prefix, std::string_view id) {
  const std::size_t expected = prefix.size() + 1 + account_hex_len + 1 + child_hex_len;
  if (id.size() != expected || id.substr(0, prefix.size()) != prefix || id[prefix.size()] != '_' ||
      id[prefix.size() + 1 + account_hex_len] != '_')
    return std::nullopt;
  const auto account_hex = id.substr(prefix.size() + 1, account_hex_len);
  if (!is_hex(account_hex) || !is_hex(id.substr(expected - child_hex_len))) return std::nullopt;
  return "acc_" + std::string(account_hex);
}

}  // namespace credits
