#include "credits/command_api/snapshot.hpp"

#include <algorithm>

#include "credits/common/ids.hpp"

namespace credits::api {
namespace {

using nlohmann::json;

constexpr std::size_t packed_key_bytes = sizeof(packed_key);

// [[grant id, amount], ...]
json packed_draws(const grant_draws& draws) {
  json out = json::array();
  for (const auto& d : draws) out.push_back(json::array({d.grant_id, d.amount}));
  return out;
}

grant_draws unpacked_draws(const json& j) {
  grant_draws out;
  for (const auto& d : j) out.push_back({d.at(0).get<std::string>(), d.at(1).get<amount_t>()});
  return out;
}

json reservation_json(const reservation_state& r) {
  return {{"id", r.id},
          {"amount", r.amount},
          {"createdAt", r.created_at},
          {"expiresAt", r.expires_at},
          {"status", static_cast<int>(r.status)},
          {"charged", r.charged},
          {"operation", r.operation},
          {"model", r.model},
          {"metadata", r.metadata},
          {"draws", packed_draws(r.draws)}};
}

// id -> [type, amount, reversed, reason, draws]
json transactions_json(const account_state& a) {
  json out = json::object();
  for (const auto& [id, t] : a.transactions)
    out[id] = json::array({t.type, t.amount, t.reversed, t.reason, packed_draws(t.draws)});
  return out;
}

// [id, transactionId, sequence, createdAt, expiresAt or null, priority, category, [costAmount, currency] or null,
//  granted, remaining, held, charged, refunded, expired, voided, status]
json grants_json(const account_state& a) {
  json out = json::array();
  for (const auto& [id, g] : a.grants)
    out.push_back(json::array(
        {g.id, g.transaction_id, g.sequence, g.created_at, g.expires_at ? json(*g.expires_at) : json(nullptr),
         g.priority, to_string(g.category), g.cost ? json::array({g.cost->amount, g.cost->currency}) : json(),
         g.granted, g.remaining, g.held, g.charged, g.refunded, g.expired, g.voided, static_cast<int>(g.status)}));
  return out;
}

grant_state grant_from(const json& j) {
  grant_state g;
  g.id = j.at(0).get<std::string>();
  g.transaction_id = j.at(1).get<std::string>();
  g.sequence = j.at(2).get<std::uint64_t>();
  g.created_at = j.at(3).get<time_ms>();
  if (!j.at(4).is_null()) g.expires_at = j.at(4).get<time_ms>();
  g.priority = j.at(5).get<int>();
  const auto category = grant_category_from(j.at(6).get<std::string>());
  if (!category) throw std::invalid_argument("bad grant category");
  g.category = *category;
  if (!j.at(7).is_null()) g.cost = cost_basis{j.at(7).at(0).get<amount_t>(), j.at(7).at(1).get<std::string>()};
  g.granted = j.at(8).get<amount_t>();
  g.remaining = j.at(9).get<amount_t>();
  g.held = j.at(10).get<amount_t>();
  g.charged = j.at(11).get<amount_t>();
  g.refunded = j.at(12).get<amount_t>();
  g.expired = j.at(13).get<amount_t>();
  g.voided = j.at(14).get<amount_t>();
  const auto status = j.at(15).get<int>();
  if (status < 0 || status > static_cast<int>(grant_status::voided)) throw std::invalid_argument("bad grant status");
  g.status = static_cast<grant_status>(status);
  if (g.remaining < 0 || g.held < 0 ||
      g.granted != g.remaining + g.held + g.charged - g.refunded + g.expired + g.voided)
    throw std::invalid_argument("grant " + g.id + " does not conserve its credits");
  return g;
}

json account_json(const account_state& a) {
  json reservations = json::array();
  for (const auto& [id, r] : a.reservations) reservations.push_back(reservation_json(r));
  return {{"id", a.id},
          {"tenant", a.tenant},
          {"name", a.name},
          {"externalId", a.external_id},
          {"email", a.email},
          {"metadata", a.metadata},
          {"createdAt", a.created_at},
          {"balance", a.balance},
          {"reserved", a.reserved},
          {"reservations", std::move(reservations)},
          {"transactions", transactions_json(a)},
          {"grants", grants_json(a)},
          {"grantsCreated", a.grants_created}};
}

// Little-endian, whatever the machine's order.
void put_u64(std::string& out, std::uint64_t v) {
  for (unsigned i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t get_u64(std::string_view in) {
  std::uint64_t v = 0;
  for (unsigned i = 0; i < 8; ++i) v |= std::uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return v;
}

// Since version 3: the header says how many keys follow the newline, 16 bytes each.
idempotency_image idempotency_keys(const json& header, std::string_view bytes) {
  idempotency_image out;
  const auto keys = header.at("keys").get<std::size_t>();
  if (header.at("keyBytes").get<std::size_t>() != packed_key_bytes || bytes.size() / packed_key_bytes != keys ||
      bytes.size() % packed_key_bytes != 0)
    throw std::invalid_argument("the idempotency keys are " + std::to_string(bytes.size()) + " bytes, not " +
                                std::to_string(keys) + " keys");
  out.forgotten_until = header.at("forgottenUntil").get<time_ms>();
  out.keys.reserve(keys);
  for (std::size_t i = 0; i < keys; ++i)
    out.keys.push_back({get_u64(bytes.substr(i * packed_key_bytes)), get_u64(bytes.substr(i * packed_key_bytes + 8))});
  return out;
}

}  // namespace

std::string encode_snapshot(std::uint64_t id, time_ms created_at,
                            const std::map<std::string, std::vector<std::int64_t>>& next_offsets,
                            const ledger_state& state, const idempotency_image& idempotency,
                            const std::atomic<bool>* cancelled) {
  constexpr std::size_t items_per_check = 1024;
  std::size_t items = 0;
  const auto check = [&] {
    if (cancelled && ++items % items_per_check == 0 && cancelled->load(std::memory_order_relaxed))
      throw snapshot_cancelled();
  };
  json accounts = json::array();
  for (const auto& [account_id, a] : state.accounts) {
    check();
    accounts.push_back(account_json(a));
  }
  json quarantined = json::object();  // added within the format version: absent in older snapshots
  for (const auto& [account_id, records] : state.quarantined) {
    auto& list = quarantined[account_id] = json::array();
    for (const auto& q : records) list.push_back({q.event_id, q.position, q.reason, q.tenant});
  }
  if (cancelled && cancelled->load(std::memory_order_relaxed)) throw snapshot_cancelled();
  std::string out = json{{"format", "credits-writer-snapshot"},
                         {"version", snapshot_format_version},
                         {"snapshotId", id},
                         {"createdAt", created_at},
                         {"nextOffsets", next_offsets},
                         {"accounts", std::move(accounts)},
                         {"quarantined", std::move(quarantined)},
                         {"idempotency",
                          {{"keys", idempotency.keys.size()},
                           {"keyBytes", packed_key_bytes},
                           {"forgottenUntil", idempotency.forgotten_until}}}}
                        .dump();
  out.reserve(out.size() + 1 + idempotency.keys.size() * packed_key_bytes);
  out.push_back('\n');  // a dump() has none of its own
  for (const auto& k : idempotency.keys) {
    put_u64(out, k.fingerprint_second);
    put_u64(out, k.position);
  }
  return out;
}

std::optional<snapshot> decode_snapshot(std::string_view payload, std::string* error) {
  try {
    const auto newline = payload.find('\n');
    const json j = json::parse(payload.substr(0, newline));
    if (j.at("format") != "credits-writer-snapshot") throw std::invalid_argument("not a writer snapshot");
    const auto version = j.at("version");
    if (version == 2 || version == 3)
      throw std::invalid_argument("snapshot version " + version.dump() +
                                  " predates credit grants: it cannot say which grant holds which credit");
    if (version != snapshot_format_version)
      throw std::invalid_argument("unsupported snapshot version " + version.dump());
    snapshot s;
    s.id = j.at("snapshotId").get<std::uint64_t>();
    s.created_at = j.at("createdAt").get<time_ms>();
    s.next_offsets = j.at("nextOffsets").get<std::map<std::string, std::vector<std::int64_t>>>();
    for (const auto& a : j.at("accounts")) {
      account_state acc;
      acc.id = a.at("id").get<std::string>();
      acc.tenant = a.at("tenant").get<std::string>();
      acc.name = a.at("name").get<std::string>();
      acc.external_id = a.at("externalId").get<std::string>();
      acc.email = a.at("email").get<std::string>();
      acc.metadata = a.at("metadata");
      acc.created_at = a.at("createdAt").get<time_ms>();
      acc.balance = a.at("balance").get<amount_t>();
      acc.reserved = a.at("reserved").get<amount_t>();
      amount_t pending = 0;
      for (const auto& r : a.at("reservations")) {
        const auto status = r.at("status").get<int>();
        if (status < 0 || status > static_cast<int>(reservation_status::expired))
          throw std::invalid_argument("bad reservation status");
        reservation_state rs{r.at("id").get<std::string>(),
                             r.at("amount").get<amount_t>(),
                             r.at("createdAt").get<time_ms>(),
                             r.at("expiresAt").get<time_ms>(),
                             static_cast<reservation_status>(status),
                             r.at("charged").get<amount_t>(),
                             r.at("operation").get<std::string>(),
                             r.at("model").get<std::string>(),
                             r.at("metadata"),
                             unpacked_draws(r.at("draws"))};
        if (rs.status == reservation_status::pending) {
          pending += rs.amount;
          s.state.pending_by_expiry.emplace(rs.expires_at, rs.id);
        }
        acc.reservations.emplace(rs.id, std::move(rs));
      }
      for (const auto& [id, t] : a.at("transactions").items()) {
        transaction_state ts{t.at(0).get<std::string>(), t.at(1).get<amount_t>(), t.at(2).get<amount_t>(),
                             t.at(3).get<std::string>(), unpacked_draws(t.at(4))};
        if (ts.amount < 0 || ts.reversed < 0 || ts.reversed > ts.amount)
          throw std::invalid_argument("transaction " + id + " is reversed beyond its amount");
        acc.transactions.emplace(id, std::move(ts));
      }
      for (const auto& gj : a.at("grants")) {
        auto g = grant_from(gj);
        acc.grants_remaining += g.remaining;
        acc.grants_held += g.held;
        if (g.remaining > 0) {
          acc.burnable.insert(burn_key_of(g));
          if (g.expires_at) s.state.grants_by_expiry.emplace(*g.expires_at, g.id);
        }
        acc.grants.emplace(g.id, std::move(g));
      }
      acc.grants_created = a.at("grantsCreated").get<std::uint64_t>();
      // A snapshot that contradicts itself is corrupt, whatever its checksum says.
      if (pending != acc.reserved || acc.balance < 0 || acc.balance > amount_max || acc.available() < 0 ||
          acc.grants_remaining + acc.grants_held != acc.balance || acc.grants_held != acc.reserved)
        throw std::invalid_argument("account " + acc.id + " violates the money invariants");
      s.state.accounts.emplace(acc.id, std::move(acc));
    }
    if (const auto q = j.find("quarantined"); q != j.end())
      for (const auto& [account_id, records] : q->items())
        for (const auto& r : records)
          s.state.quarantined[account_id].push_back(
              quarantined_record{r.at(0).get<std::string>(), r.at(1).get<std::string>(), r.at(2).get<std::string>(),
                                 r.at(3).get<std::string>()});
    s.idempotency = idempotency_keys(
        j.at("idempotency"), newline == std::string_view::npos ? std::string_view{} : payload.substr(newline + 1));
    return s;
  } catch (const std::exception& ex) {
    if (error) *error = ex.what();
    return std::nullopt;
  }
}

std::vector<std::string> split_snapshot(std::string_view payload, std::uint64_t id, std::size_t chunk_bytes,
                                        std::string_view scope) {
  const auto digest = sha256_hex(payload);
  const std::size_t chunks = std::max<std::size_t>(1, (payload.size() + chunk_bytes - 1) / chunk_bytes);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < chunks; ++i) {
    json header{{"snapshotId", id}, {"chunk", i}, {"chunks", chunks}, {"sha256", digest}};
    if (!scope.empty()) header["scope"] = scope;
    std::string value = header.dump();
    value.push_back('\n');
    value.append(payload.substr(std::min(payload.size(), i * chunk_bytes), chunk_bytes));
    out.push_back(std::move(value));
  }
  return out;
}

void snapshot_assembler::add(std::string_view value) {
  const auto newline = value.find('\n');
  const auto header = json::parse(value.substr(0, newline), nullptr, false);
  if (newline == std::string_view::npos || header.is_discarded() || !header.is_object() ||
      !header.contains("snapshotId") || !header.contains("chunk") || !header.contains("chunks") ||
      !header.contains("sha256") || !header["snapshotId"].is_number_unsigned() ||
      !header["chunk"].is_number_unsigned() || !header["chunks"].is_number_unsigned() ||
      !header["sha256"].is_string()) {
    ++malformed_;
    return;
  }
  const auto id = header["snapshotId"].get<std::uint64_t>();
  highest_id_ = std::max(highest_id_, id);
  const auto scope = header.value("scope", json(""));
  if (!scope.is_string() || scope.get<std::string>() != scope_) return;
  auto& p = snapshots_[header["snapshotId"].get<std::uint64_t>()];
  p.chunks = header["chunks"].get<std::size_t>();
  p.sha256 = header["sha256"].get<std::string>();
  p.data[header["chunk"].get<std::size_t>()] = std::string(value.substr(newline + 1));
}

std::optional<std::string> snapshot_assembler::newest(std::vector<std::string>& problems) const {
  if (malformed_ > 0) problems.push_back(std::to_string(malformed_) + " malformed snapshot chunks ignored");
  for (auto it = snapshots_.rbegin(); it != snapshots_.rend(); ++it) {
    const auto& [id, p] = *it;
    if (p.data.size() != p.chunks || (p.chunks > 0 && p.data.rbegin()->first != p.chunks - 1)) {
      problems.push_back("snapshot " + std::to_string(id) + " is incomplete");
      continue;
    }
    std::string payload;
    for (const auto& [i, d] : p.data) payload += d;
    if (sha256_hex(payload) != p.sha256) {
      problems.push_back("snapshot " + std::to_string(id) + " fails its checksum");
      continue;
    }
    return payload;
  }
  return std::nullopt;
}

}  // namespace credits::api
