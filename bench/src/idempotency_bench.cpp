// credits-bench-idempotency: what the writer's idempotency keys cost. The compact store (command-api's
// idempotency_store: 16 bytes a key in a ring plus an open-addressing index) against the representation it
// replaced (legacy_idempotency.hpp: an unordered_map and a deque, JSON snapshots), both in this run:
//  - remembering keys (keys/s, filling up to the cap, then at the cap where each new key evicts the oldest),
//  - finding them (keys/s for hits, and for new keys, with how many fingerprint candidates a new key meets),
//  - memory: the store's own count of its bytes, the allocator's bytes in use (mallinfo2) and the RSS, each as
//    the difference before and after filling it, per key,
//  - snapshots: the copy the writer takes (its pause), the encoded size per key, and start-up: decoding the
//    snapshot and restoring the store from it.
// With --brokers, also what a hit whose answer is no longer cached costs: reading the first event back from the
// log (store::consumer::read_at with the writer's settings) and decoding it.
//
// Slots are random 128-bit values (what slot_of's SHA-256 gives; hashing itself costs the same for both stores
// and is left out). Keys occur --rate per second, so N keys span N / rate seconds.
//
// Usage: credits-bench-idempotency [--keys N] [--baseline-keys M] [--lookups L] [--rate R] [--seed S]
//          [--brokers HOST:PORT --topic T [--reads K]]
// Prints JSON; exits 1 if any remembered key is not found again (a check, not a timing).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/bench/args.hpp"
#include "credits/bench/histogram.hpp"
#include "credits/bench/memory.hpp"
#include "credits/command_api/api_config.hpp"
#include "credits/command_api/idempotency.hpp"
#include "credits/command_api/snapshot.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/event_store/topics.hpp"
#include "legacy_idempotency.hpp"

namespace {

using credits::time_ms;
using credits::api::idempotency_record;
using credits::api::idempotency_store;
using credits::api::key128;
using credits::bench::allocator_name;
using credits::bench::memory;
using credits::bench::memory_now;
using credits::bench::number;
using clock_type = std::chrono::steady_clock;
using nlohmann::json;

constexpr long keys_max = 1'000'000'000;
constexpr long rate_max = 1'000'000;
constexpr long reads_max = 100'000;
constexpr std::int32_t partitions = 12;  // the scripts' ledger topic
// CREDITS_IDEMPOTENCY_WINDOW_S at its most, so that every key the bench makes is still in its window.
constexpr auto window = std::chrono::hours(30 * 24);
constexpr time_ms start_ms = 1'790'000'000'000;  // 2026-09
constexpr std::chrono::milliseconds kafka_timeout_ms{30'000};
constexpr std::chrono::milliseconds read_timeout_ms{5'000};  // the writer's replay_read_timeout

struct options {
  long keys = static_cast<long>(credits::api::config{}.idempotency_keys_max);
  long baseline_keys = 2'000'000;
  long lookups = 1'000'000;
  long rate = 1'000;
  std::uint64_t seed = 1;
  std::string brokers;
  std::string topic;
  long reads = 500;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--keys")
      o.keys = number(a, v, 1, keys_max);
    else if (a == "--baseline-keys")
      o.baseline_keys = number(a, v, 1, keys_max);
    else if (a == "--lookups")
      o.lookups = number(a, v, 1, keys_max);
    else if (a == "--rate")
      o.rate = number(a, v, 1, rate_max);
    else if (a == "--seed")
      o.seed = static_cast<std::uint64_t>(number(a, v, 0, keys_max));
    else if (a == "--brokers")
      o.brokers = v;
    else if (a == "--topic")
      o.topic = v;
    else if (a == "--reads")
      o.reads = number(a, v, 1, reads_max);
    else
      throw std::invalid_argument("unknown option " + a);
  }
  if (o.brokers.empty() != o.topic.empty()) throw std::invalid_argument("--brokers and --topic go together");
  if ((std::max(o.keys, o.baseline_keys) + 2 * o.lookups) / o.rate >= std::chrono::seconds(window).count())
    throw std::invalid_argument("--keys and --lookups at --rate span more than the window (30 days)");
  return o;
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

json per_key(const memory& before, const memory& after, std::size_t keys) {
  const auto n = static_cast<double>(keys);
  return {{"heap_bytes_per_key", (after.heap_bytes - before.heap_bytes) / n},
          {"rss_bytes_per_key", (after.rss_bytes - before.rss_bytes) / n}};
}

std::vector<key128> random_slots(std::mt19937_64& rng, std::size_t n) {
  std::vector<key128> out(n);
  for (auto& k : out) k = {rng(), rng()};
  return out;
}

time_ms time_of(std::size_t i, long rate) { return start_ms + static_cast<time_ms>(i) * 1000 / rate; }

idempotency_record record_of(std::size_t i, long rate) {
  return {credits::stream::ledger, static_cast<std::int32_t>(i % partitions), static_cast<std::int64_t>(i),
          time_of(i, rate)};
}

// Finds `lookups` of the first `keys` slots (remembered as offset i) at random, as retries do: how many a second,
// into `out`, and how many were not found (which must be none).
template <class Found>
std::size_t time_hits(const std::vector<key128>& slots, std::size_t keys, std::size_t lookups, std::mt19937_64& rng,
                      Found found, json& out) {
  std::uniform_int_distribution<std::size_t> any(0, keys - 1);
  std::size_t missing = 0;
  const auto t0 = clock_type::now();
  for (std::size_t n = 0; n < lookups; ++n) {
    const auto i = any(rng);
    missing += found(slots[i], static_cast<std::int64_t>(i)) ? 0 : 1;
  }
  out["find_hits_per_s"] = static_cast<double>(lookups) / seconds_since(t0);
  return missing;
}

// The compact store filled with `keys` keys, then `lookups` hits and as many new keys looked up, `lookups` more
// remembered at the cap, and a snapshot of it taken, encoded, decoded and restored.
json run_compact(std::size_t keys, const options& o, std::mt19937_64& rng, int& failures) {
  const auto lookups = static_cast<std::size_t>(o.lookups);
  const auto slots = random_slots(rng, keys + 2 * lookups);  // kept, then new ones to look up, then more to add
  json out{{"keys", keys}};
  const auto before = memory_now();
  idempotency_store store(window, keys, 0);
  auto t0 = clock_type::now();
  for (std::size_t i = 0; i < keys; ++i) store.remember(slots[i], record_of(i, o.rate));
  out["remember_keys_per_s"] = static_cast<double>(keys) / seconds_since(t0);
  const auto filled = memory_now();
  out["memory"] = per_key(before, filled, keys);
  out["memory"]["store_bytes_per_key"] = static_cast<double>(store.bytes()) / static_cast<double>(keys);
  out["memory"]["store_bytes"] = store.bytes();

  const auto now = time_of(keys, o.rate);
  const auto missing = time_hits(
      slots, keys, lookups, rng,
      [&](const key128& slot, std::int64_t offset) {
        bool hit = false;
        for (const auto& c : store.find(slot, now)) hit = hit || c.record.offset == offset;
        return hit;
      },
      out);
  std::size_t candidates = 0;
  t0 = clock_type::now();
  for (std::size_t n = 0; n < lookups; ++n) candidates += store.find(slots[keys + n], now).size();
  out["find_new_keys_per_s"] = static_cast<double>(lookups) / seconds_since(t0);
  out["fingerprint_candidates_per_new_key"] = static_cast<double>(candidates) / static_cast<double>(lookups);
  out["missing"] = missing;
  failures += missing > 0 ? 1 : 0;

  // At the cap each new key first forgets the oldest: the steady state of a full store.
  t0 = clock_type::now();
  for (std::size_t n = 0; n < lookups; ++n) store.remember(slots[keys + lookups + n], record_of(keys + n, o.rate));
  out["remember_at_cap_keys_per_s"] = static_cast<double>(lookups) / seconds_since(t0);
  out["evicted"] = store.evicted();

  const auto at = time_of(keys + lookups, o.rate);
  t0 = clock_type::now();
  auto image = store.image();
  out["snapshot_copy_s"] = seconds_since(t0);  // what the writer thread pauses for
  t0 = clock_type::now();
  const auto payload = credits::api::encode_snapshot(1, at, {}, {}, image);
  out["snapshot_encode_s"] = seconds_since(t0);
  const auto key_bytes = payload.size() - payload.find('\n') - 1;
  out["snapshot"] = {{"payload_bytes", payload.size()},
                     {"key_bytes", key_bytes},
                     {"bytes_per_key", static_cast<double>(payload.size()) / static_cast<double>(store.size())}};
  std::vector<credits::api::packed_key>().swap(image.keys);
  t0 = clock_type::now();
  std::string error;
  auto decoded = credits::api::decode_snapshot(payload, &error);
  if (!decoded) throw std::runtime_error("the snapshot does not decode: " + error);
  idempotency_store restored(window, keys, 0);
  restored.restore(decoded->idempotency, decoded->created_at, at);
  out["startup_s"] = seconds_since(t0);
  out["startup_keys_per_s"] = static_cast<double>(restored.size()) / out["startup_s"].get<double>();
  std::size_t lost = restored.size() == store.size() ? 0 : 1;
  for (std::size_t m = 0; m < std::min<std::size_t>({1000, keys, lookups}); ++m) {
    const auto n = lookups - 1 - m;  // the newest keys added at the cap, which the restored store must hold
    bool hit = false;
    for (const auto& c : restored.find(slots[keys + lookups + n], at))
      hit = hit || c.record.offset == static_cast<std::int64_t>(keys + n);
    lost += hit ? 0 : 1;
  }
  out["lost_in_restore"] = lost;
  failures += lost > 0 ? 1 : 0;
  return out;
}

// The same for the representation the compact store replaced.
json run_legacy(std::size_t keys, const options& o, std::mt19937_64& rng, int& failures) {
  const auto lookups = static_cast<std::size_t>(o.lookups);
  const auto slots = random_slots(rng, keys + lookups);
  json out{{"keys", keys}};
  const auto before = memory_now();
  credits::bench::legacy_idempotency_store store(window, keys);
  auto t0 = clock_type::now();
  for (std::size_t i = 0; i < keys; ++i) {
    const auto r = record_of(i, o.rate);
    store.remember(slots[i], {key128{rng(), rng()}, r.topic, r.partition, r.offset, r.occurred_at});
  }
  out["remember_keys_per_s"] = static_cast<double>(keys) / seconds_since(t0);
  out["memory"] = per_key(before, memory_now(), keys);

  const auto now = time_of(keys, o.rate);
  const auto missing = time_hits(
      slots, keys, lookups, rng,
      [&](const key128& slot, std::int64_t offset) {
        const auto found = store.find(slot, now);
        return found && found->offset == offset;
      },
      out);
  std::size_t found_new = 0;
  t0 = clock_type::now();
  for (std::size_t n = 0; n < lookups; ++n) found_new += store.find(slots[keys + n], now) ? 1 : 0;
  out["find_new_keys_per_s"] = static_cast<double>(lookups) / seconds_since(t0);
  out["missing"] = missing + found_new;
  failures += missing + found_new > 0 ? 1 : 0;

  t0 = clock_type::now();
  auto payload = json{{"idempotency", store.to_json()}}.dump();
  out["snapshot_encode_s"] = seconds_since(t0);
  out["snapshot"] = {{"payload_bytes", payload.size()},
                     {"bytes_per_key", static_cast<double>(payload.size()) / static_cast<double>(keys)}};
  t0 = clock_type::now();
  credits::bench::legacy_idempotency_store restored(window, keys);
  restored.load(json::parse(payload).at("idempotency"));
  out["startup_s"] = seconds_since(t0);
  out["startup_keys_per_s"] = static_cast<double>(restored.size()) / out["startup_s"].get<double>();
  return out;
}

// A hit whose first answer is no longer cached: the writer reads its event back from the log.
json run_log_reads(const options& o, std::mt19937_64& rng, int& failures) {
  try {
    credits::store::create_topics(o.brokers, {{o.topic, 1, {}}}, kafka_timeout_ms);
  } catch (const std::exception&) {
    // It exists from an earlier run: its records are as good as new ones.
  }
  std::vector<credits::store::record> records;
  std::vector<std::string> keys;
  for (long i = 0; i < o.reads; ++i) {
    keys.push_back("bench-" + std::to_string(rng()));
    credits::event e{
        "00000000-0000-4000-8000-000000000000",
        credits::event_schema_version,
        "bench",
        "acc_000000000000000000000001",
        "key_0123456789abcdef",
        "req_0123456789abcdef",
        keys.back(),
        std::string(64, 'a'),
        start_ms,
        credits::credits_added{"txn_000000000000000000000001", 100, 1100, "top-up", "card", json::object()}};
    records.push_back({o.topic, e.account_id, credits::encode(e)});
  }
  credits::store::transactional_producer producer(o.brokers, "credits-bench-idempotency", kafka_timeout_ms,
                                                  kafka_timeout_ms);
  const auto appended = producer.append(records, kafka_timeout_ms);
  if (appended.status != credits::store::append_status::committed)
    throw std::runtime_error("append not committed: " + appended.error);
  credits::store::consumer reader(
      o.brokers, false, credits::store::settings{{"fetch.wait.max.ms", "5"}, {"fetch.error.backoff.ms", "5"}});
  std::vector<std::size_t> order(records.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  credits::bench::histogram reads;
  std::size_t wrong = 0;
  for (const auto i : order) {
    const auto t0 = clock_type::now();
    const auto m =
        reader.read_at(o.topic, appended.positions[i].partition, appended.positions[i].offset, read_timeout_ms);
    const auto e = m ? credits::decode(m->value) : std::nullopt;
    reads.record(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
    wrong += e && e->idempotency_key == keys[i] ? 0 : 1;
  }
  failures += wrong > 0 ? 1 : 0;
  return {{"reads", reads.count()},         {"wrong", wrong},
          {"p50_us", reads.percentile(50)}, {"p90_us", reads.percentile(90)},
          {"p99_us", reads.percentile(99)}, {"max_us", reads.max()},
          {"mean_us", reads.mean()}};
}

json ratios(const json& compact, const json& legacy) {
  const auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  const auto of = [&](const char* path) {
    const json::json_pointer p(path);
    return ratio(compact[p].get<double>(), legacy[p].get<double>());
  };
  return {{"heap_bytes_per_key", of("/memory/heap_bytes_per_key")},
          {"snapshot_bytes_per_key", of("/snapshot/bytes_per_key")},
          {"remember_keys_per_s", of("/remember_keys_per_s")},
          {"find_hits_per_s", of("/find_hits_per_s")},
          {"find_new_keys_per_s", of("/find_new_keys_per_s")},
          {"startup_s", of("/startup_s")}};
}

// The targets, from the numbers measured at the default cap.
json targets(const json& at_cap, std::size_t cap) {
  // The allocator's count; a sanitizer's allocator gives none (0), and then the store's own count stands in.
  const auto heap = at_cap["memory"]["heap_bytes_per_key"].get<double>();
  const auto bytes = heap > 0 ? heap : at_cap["memory"]["store_bytes_per_key"].get<double>();
  const auto store_bytes = at_cap["memory"]["store_bytes"].get<double>();
  const auto snapshot = at_cap["snapshot"]["key_bytes"].get<double>() / static_cast<double>(cap);
  const auto hours_at = [&](double per_s) { return static_cast<double>(cap) / per_s / 3600; };
  return json::array({
      {{"target", "bytes per key in memory <= 24"},
       {"value", bytes},
       {"measured_by", heap > 0 ? "allocator" : "store"},
       {"met", bytes <= 24}},
      {{"target", "bytes per key in snapshots <= 24"}, {"value", snapshot}, {"met", snapshot <= 24}},
      {{"target", "the cap holds >= 24 h at 100 keyed commands/s"},
       {"value", hours_at(100)},
       {"met", hours_at(100) >= 24}},
      {{"target", "the cap holds >= 4 h at 1,000 keyed commands/s"},
       {"value", hours_at(1000)},
       {"met", hours_at(1000) >= 4}},
      {{"target", "the keys at the cap take <= 1 GB"}, {"value", store_bytes}, {"met", store_bytes <= 1e9}},
  });
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "credits-bench-idempotency: %s\n", ex.what());
    return 2;
  }
  try {
    std::mt19937_64 rng(o.seed);
    int failures = 0;
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    json out{{"keys", o.keys},
             {"baseline_keys", o.baseline_keys},
             {"lookups", o.lookups},
             {"rate_keys_per_s", o.rate},
             {"cores", sysconf(_SC_NPROCESSORS_ONLN)},
             {"allocator", allocator_name()},
             {"load_average", {load[0], load[1], load[2]}}};
    // The baseline first, at its size, then the compact store at the same size and at the cap.
    out["legacy"] = run_legacy(static_cast<std::size_t>(o.baseline_keys), o, rng, failures);
    out["compact_at_baseline_keys"] = run_compact(static_cast<std::size_t>(o.baseline_keys), o, rng, failures);
    out["compact_at_cap"] = run_compact(static_cast<std::size_t>(o.keys), o, rng, failures);
    out["compact_vs_legacy"] = ratios(out["compact_at_baseline_keys"], out["legacy"]);
    out["targets"] = targets(out["compact_at_cap"], static_cast<std::size_t>(o.keys));
    if (!o.brokers.empty()) out["log_read"] = run_log_reads(o, rng, failures);
    out["failures"] = failures;
    std::printf("%s\n", out.dump().c_str());
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "credits-bench-idempotency: %s\n", ex.what());
    return 1;
  }
}
