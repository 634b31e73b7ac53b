#include "credits/command_api/http_api.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <random>

#include "credits/command_api/queries.hpp"
#include "credits/command_api/rate_limit.hpp"
#include "credits/command_api/responses.hpp"
#include "credits/common/clock.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/log.hpp"
#include "credits/event_store/event_store.hpp"

namespace credits::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using nlohmann::json;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

constexpr std::string_view component = "credits-api";
// Lines for 5xx answers when the access log is off: enough to see what fails, not one per request of an
// outage at full load (the metrics count every one).
constexpr std::uint32_t failure_lines_per_second_max = 50;
constexpr std::size_t request_id_bytes_max = 128;
constexpr std::size_t idempotency_key_bytes_max = 256;
constexpr std::size_t read_chunk_bytes = 4096;  // what one read of a waiting connection asks for
// A refused connection gets its 503 and then this long to finish sending its request (read and dropped), so
// that closing it does not reset the connection before the client has read the answer.
constexpr std::chrono::milliseconds refusal_linger_ms{1000};
// After an accept error that is not one connection's own (no file descriptors left, no memory), wait before
// accepting again rather than spinning.
constexpr std::chrono::milliseconds accept_backoff_ms{50};
// What the submit path answers internally when another instance owns the account (never sent to a client).
constexpr unsigned misdirected = 421;
// The header a forwarded command carries (the forwarder's address): a command is forwarded at most once.
constexpr std::string_view forwarded_by_header = "Credits-Forwarded-By";
// An owner's answer to a forwarded command: far above any answer the API gives.
constexpr std::size_t forwarded_answer_bytes_max = 1024 * 1024;
// Forwarding keeps connections to the owners open between commands: at most this many idle ones per owner,
// each for at most this long (well under the owner's own CREDITS_IDLE_TIMEOUT_MS default of 30 s, so that an
// owner seldom closes one just as it is reused).
constexpr std::size_t forward_idle_connections_max = 32;
constexpr std::chrono::milliseconds forward_idle_ms{10'000};

// Idle keep-alive connections to the other instances, by address. Each is used by one forward at a time.
class peer_connections {
 public:
  std::optional<beast::tcp_stream> take(const std::string& address) {
    std::lock_guard lock(mutex_);
    auto& idle = idle_[address];
    const auto now = std::chrono::steady_clock::now();
    while (!idle.empty()) {
      auto c = std::move(idle.back());
      idle.pop_back();
      if (now - c.since < forward_idle_ms && c.stream.socket().is_open()) return std::move(c.stream);
    }
    return std::nullopt;
  }

  void give_back(const std::string& address, beast::tcp_stream stream) {
    std::lock_guard lock(mutex_);
    auto& idle = idle_[address];
    if (idle.size() < forward_idle_connections_max)
      idle.push_back({std::move(stream), std::chrono::steady_clock::now()});
  }

 private:
  struct idle_connection {
    beast::tcp_stream stream;
    std::chrono::steady_clock::time_point since;
  };
  std::mutex mutex_;
  std::map<std::string, std::vector<idle_connection>> idle_;
};

std::string new_request_id(std::mt19937_64& rng) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "req_%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

// A count of a resource held by coroutines (open connections, refusals). Shared with each holder: the frame of
// a session still suspended when the server stops is destroyed with the io_context, after the server.
using shared_count = std::shared_ptr<std::atomic<std::size_t>>;

// Gives back one unit of a shared_count when the coroutine that holds it ends, however it ends.
struct count_release {
  shared_count count;
  ~count_release() { count->fetch_sub(1, std::memory_order_acq_rel); }
};

// Delivers a writer outcome back onto the coroutine's own executor.
template <class Token>
auto async_submit(ownership& w, command cmd, request_context ctx, Token&& token) {
  return asio::async_initiate<Token, void(outcome)>(
      [&w](auto handler, command c, request_context x) {
        auto ex = asio::get_associated_executor(handler);
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        auto deliver = [shared, ex](outcome o) {
          asio::post(ex, [shared, o = std::move(o)]() mutable { (*shared)(std::move(o)); });
        };
        submission s{std::move(c), std::move(x), deliver};
        switch (w.submit(std::move(s))) {
          case submit_result::queued:
            break;
          case submit_result::busy:
            deliver(outcome{503,
                            error_body(rejection{error_code::unavailable,
                                                 "the writer is busy or recovering; retry later", "", nullptr}),
                            {},
                            false});
            break;
          case submit_result::in_flight:
            deliver(outcome{409,
                            error_body(rejection{error_code::idempotency_key_in_flight,
                                                 "a request with this Idempotency-Key is in flight", "", nullptr}),
                            {},
                            false});
            break;
          case submit_result::elsewhere:  // never sent to a client: command_route forwards the request
            deliver(outcome{misdirected, {}, {}, false});
            break;
        }
      },
      token, std::move(cmd), std::move(ctx));
}

// Runs a blocking call on the pool and resumes the awaiting coroutine on its own executor with the result.
// Deliberately not a coroutine itself: GCC 12 destroys lambda arguments of coroutines twice, so callables
// only ever travel inside the operation that async_initiate builds.
template <class R, class F>
auto offload(asio::thread_pool& pool, F f) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, R)>(
      [&pool](auto handler, F fn) {
        auto ex = asio::get_associated_executor(handler);
        asio::post(pool, [handler = std::move(handler), ex, fn = std::move(fn)]() mutable {
          std::exception_ptr error;
          R result{};
          try {
            result = fn();
          } catch (...) {
            error = std::current_exception();
          }
          asio::post(ex, [handler = std::move(handler), error, result = std::move(result)]() mutable {
            handler(error, std::move(result));
          });
        });
      },
      asio::use_awaitable, std::move(f));
}

// Header values that end up in events (and so in JSON) must be text: visible ASCII and spaces only.
bool printable_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() + 0 && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Query parameters as a JSON object of strings, so the same account resolution serves bodies and queries.
json query_params(std::string_view query) {
  json params = json::object();
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (!pair.empty())
      params[percent_decode(pair.substr(0, eq))] =
          eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1));
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
  }
  return params;
}

struct route_target {
  std::string_view path;
  std::string_view query;
};

route_target split_target(std::string_view target) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

}  // namespace

std::unique_ptr<read_model::redis_connection> redis_pool::acquire() {
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
  }
  auto c = std::make_unique<read_model::redis_connection>(cfg_.redis_host, cfg_.redis_port, cfg_.redis_timeout_ms);
  if (cfg_.redis_db != 0) c->run({"SELECT", std::to_string(cfg_.redis_db)});
  return c;
}

void redis_pool::release(std::unique_ptr<read_model::redis_connection> c) {
  if (!c || c->broken()) return;
  std::lock_guard lock(mutex_);
  if (idle_.size() < static_cast<std::size_t>(cfg_.redis_connections_max)) idle_.push_back(std::move(c));
}

kafka_probe::kafka_probe(const config& cfg) : cfg_(cfg), thread_([this] { run(); }) {}

kafka_probe::~kafka_probe() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

kafka_probe::status kafka_probe::current() const {
  std::lock_guard lock(mutex_);
  return status{reachable_.load(std::memory_order_acquire), error_};
}

void kafka_probe::run() {
  std::unique_ptr<store::consumer> client;
  for (;;) {
    std::string error;
    try {
      // One client for the process's life; it reconnects by itself, at most a probe interval apart, so a broker
      // that comes back is seen within about one interval.
      if (!client)
        client = std::make_unique<store::consumer>(
            cfg_.kafka_brokers, false,
            store::settings{{"reconnect.backoff.max.ms", std::to_string(cfg_.kafka_probe_interval_ms.count())},
                            {"log.connection.close", "false"}});
      client->partition_count(cfg_.ledger_topic, cfg_.kafka_probe_timeout_ms);
    } catch (const std::exception& ex) {
      error = ex.what();
    }
    std::unique_lock lock(mutex_);
    const bool reachable = error.empty();
    if (reachable != reachable_.load(std::memory_order_acquire))
      write_log(reachable ? log_level::info : log_level::error, component,
                reachable ? "Kafka is reachable again" : "Kafka is unreachable: " + error);
    error_ = std::move(error);
    reachable_.store(reachable, std::memory_order_release);
    if (stop_cv_.wait_for(lock, cfg_.kafka_probe_interval_ms, [this] { return stopping_; })) return;
  }
}

struct http_api::impl {
  const config& cfg;
  asio::io_context& io;
  ownership& w;
  const key_registry& keys;
  rate_limiter limiter;
  api_metrics& metrics;
  tcp::acceptor acceptor;
  asio::thread_pool blocking;
  redis_pool redis;
  kafka_probe kafka;
  peer_connections peers;  // forwarding's
  // Sessions open now, and connections being answered 503; each at most cfg.connections_max.
  shared_count connections = std::make_shared<std::atomic<std::size_t>>(0);
  shared_count refusals = std::make_shared<std::atomic<std::size_t>>(0);
  log_rate_limit failure_lines{failure_lines_per_second_max};
  std::unique_ptr<ssl::context> tls;  // set when CREDITS_TLS_CERT_FILE/KEY_FILE are: every connection is TLS

  impl(const config& c, asio::io_context& i, ownership& wr, const key_registry& k, api_metrics& m)
      : cfg(c),
        io(i),
        w(wr),
        keys(k),
        limiter(c.rate_limit_requests_per_s, c.rate_limit_burst_requests, c.rate_limit_keys_max),
        metrics(m),
        acceptor(i),
        blocking(static_cast<std::size_t>(c.redis_connections_max)),
        redis(c),
        kafka(c),
        tls(make_tls_context(c)) {}

  // TLS 1.2 or newer with the configured certificate chain and key; throws (start-up fails) if they do not load.
  static std::unique_ptr<ssl::context> make_tls_context(const config& c) {
    if (c.tls_cert_file.empty()) return nullptr;
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                     ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    ctx->use_certificate_chain_file(c.tls_cert_file);
    ctx->use_private_key_file(c.tls_key_file, ssl::context::pem);
    return ctx;
  }

  // Per-connection state: the caller's random source for new ids, and whether the router recognised the
  // current request's path as an API route (its metrics label, see route_label).
  struct session_state {
    std::mt19937_64 rng{std::random_device{}()};
    bool api_route = false;
  };

  // Runs `fn` with a pooled Redis connection on the blocking pool (not a coroutine, as offload).
  template <class R, class F>
  auto with_redis(F fn) {
    return offload<R>(blocking, [this, fn = std::move(fn)]() -> R {
      try {
        auto c = redis.acquire();
        R r = fn(*c);
        redis.release(std::move(c));
        return r;
      } catch (...) {
        metrics.redis_error();
        throw;
      }
    });
  }

  static response make(unsigned status, const json& body, const request& req) {
    response res{static_cast<http::status>(status), req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    // Replace, not throw: an error message may quote bytes of the request that are not UTF-8.
    res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
    if (status == 503) res.set(http::field::retry_after, "1");
    res.prepare_payload();
    return res;
  }

  static response reject(const rejection& r, const request& req) {
    return make(http_status(r.code), error_body(r), req);
  }

  asio::awaitable<response> command_route(const request& req, std::string_view path, const api_key& key,
                                          session_state& s, const std::string& request_id) {
    const auto body = parse_json(req.body(), cfg.limits);
    if (auto* r = std::get_if<rejection>(&body)) co_return reject(*r, req);
    const auto& j = std::get<json>(body);
    const random_bits bits = [&s] { return s.rng(); };
    parsed p = rejection{error_code::route_not_found, "no such endpoint", "", nullptr};
    if (path == "/v1/accounts/create")
      p = parse_create_account(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/accounts/credits/add")
      p = parse_add_credits(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/accounts/credits/deduct")
      p = parse_deduct_credits(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/reservations/create")
      p = parse_create_reservation(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/reservations/confirm")
      p = parse_confirm_reservation(j, bits, cfg.limits);
    else if (path == "/v1/reservations/cancel")
      p = parse_cancel_reservation(j, cfg.limits);
    else if (path == "/v1/usage/record")
      p = parse_record_usage(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/transactions/reverse")
      p = parse_reverse_transaction(j, bits, cfg.limits);
    if (auto* r = std::get_if<rejection>(&p)) co_return reject(*r, req);

    const auto idempotency_key = std::string(req["Idempotency-Key"]);
    if (!printable_ascii(idempotency_key))
      co_return reject(
          rejection{error_code::invalid_request, "Idempotency-Key must be printable ASCII", "Idempotency-Key", nullptr},
          req);
    if (idempotency_key.size() > idempotency_key_bytes_max)
      co_return reject(
          rejection{error_code::invalid_request, "Idempotency-Key is too long", "Idempotency-Key", nullptr}, req);
    // Kafka known to be down: answer now instead of letting the writer wait out its append timeout.
    if (!kafka.reachable())
      co_return reject(
          rejection{error_code::unavailable, "the event log (Kafka) is unreachable; retry later", "", nullptr}, req);
    auto& cmd = std::get<command>(p);
    if (auto* c = std::get_if<create_account>(&cmd); c && c->external_id.empty()) {
      // A retry must name the same account, wherever it lands; without a key, one this instance writes.
      c->account_id =
          idempotency_key.empty() ? w.new_account_id(bits) : idempotent_account_id(key.tenant, idempotency_key);
    }
    const auto account_id = target_account(cmd);
    request_context ctx{
        key.tenant, key.key_id, request_id, idempotency_key, sha256_hex(std::string(req.target()) + '\n' + req.body()),
        0};
    const outcome o = co_await async_submit(w, std::move(cmd), std::move(ctx), asio::use_awaitable);
    if (o.status == misdirected) co_return co_await forward(req, account_id);
    auto res = make(o.status, o.body, req);
    if (!o.position.empty()) res.set("Credits-Position", o.position);
    if (o.replayed) res.set("Idempotent-Replayed", "true");
    co_return res;
  }

  static response moving(const request& req) {
    return reject(rejection{error_code::unavailable,
                            "this account's partition is moving between instances; retry with the same Idempotency-Key",
                            "", nullptr},
                  req);
  }

  // Sends a command for an account of another instance's partition to that instance and relays its answer.
  // Forwarded once at most: an instance that is sent a command it does not own (the partition moved on the
  // way) answers 503, as does a failure to reach the owner; the client retries, with the same Idempotency-Key
  // if the owner may have taken the command.
  asio::awaitable<response> forward(const request& req, const std::string& account_id) {
    if (!req[forwarded_by_header].empty()) co_return moving(req);
    const auto partition = w.partition_of_account(account_id);
    auto lookup =
        offload<std::optional<std::string>>(blocking, [this, partition] { return w.owner_address(partition); });
    const auto owner = co_await std::move(lookup);
    if (!owner || *owner == cfg.advertised_address) co_return moving(req);
    const auto colon = owner->rfind(':');
    if (colon == std::string::npos) co_return moving(req);

    // A pooled connection's executor is the io_context's, not a strand of the session that opened it.
    auto pooled = peers.take(*owner);
    beast::tcp_stream stream = pooled ? std::move(*pooled) : beast::tcp_stream(io.get_executor());
    stream.expires_after(cfg.forward_timeout_ms);
    if (!pooled) {
      tcp::resolver resolver(io.get_executor());
      auto [resolve_error, endpoints] = co_await resolver.async_resolve(
          owner->substr(0, colon), owner->substr(colon + 1), asio::as_tuple(asio::use_awaitable));
      if (resolve_error) co_return moving(req);
      auto [connect_error, endpoint] = co_await stream.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
      if (connect_error) co_return moving(req);
    }

    request out{req.method(), req.target(), 11};
    for (const auto& field : req)
      if (field.name() != http::field::host && field.name() != http::field::connection &&
          field.name() != http::field::content_length && field.name() != http::field::transfer_encoding)
        out.insert(field.name_string(), field.value());
    out.set(http::field::host, *owner);
    out.set(forwarded_by_header, cfg.advertised_address);
    out.keep_alive(true);
    out.body() = req.body();
    out.prepare_payload();
    // A failure after the write may follow the owner's taking the command: the client's retry, with its
    // Idempotency-Key, learns the outcome. So nothing is re-sent here, not even on a pooled connection the owner
    // had just closed (it restarted, or it closed the connection as idle).
    auto [write_error, written] = co_await http::async_write(stream, out, asio::as_tuple(asio::use_awaitable));
    if (write_error) co_return moving(req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(forwarded_answer_bytes_max);
    auto [read_error, read] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (read_error) co_return moving(req);
    response res = parser.release();
    if (res.keep_alive() && buffer.size() == 0) {
      stream.expires_never();
      peers.give_back(*owner, std::move(stream));
    }
    res.keep_alive(req.keep_alive());
    co_return res;
  }

  // Waits (bounded) until the projector has applied `target`; false if it has not in time.
  asio::awaitable<bool> wait_for_projection(const log_position& target) {
    const auto deadline = std::chrono::steady_clock::now() + cfg.read_wait_ms;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (;;) {
      // The operation is built in a statement of its own: GCC 12 destroys closure temporaries inside a
      // co_await expression twice.
      auto read = with_redis<std::int64_t>([target](read_model::redis_connection& c) {
        return read_model::applied_offset(c, target.topic, target.partition);
      });
      const auto applied = co_await std::move(read);
      if (applied >= target.offset) co_return true;
      if (std::chrono::steady_clock::now() >= deadline) co_return false;
      timer.expires_after(cfg.read_poll_interval_ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
  }

  // The client's Credits-Min-Position: none, a position, or a refusal of a malformed one.
  static std::variant<std::optional<log_position>, rejection> client_position(const request& req) {
    const auto header = req["Credits-Min-Position"];
    if (header.empty()) return std::optional<log_position>();
    if (auto target = log_position::parse(header)) return target;
    return rejection{error_code::invalid_request, "Credits-Min-Position is not topic:partition:offset",
                     "Credits-Min-Position", nullptr};
  }

  // Waits for the projection to reach `target` when it is a ledger position; true if it did not in time.
  asio::awaitable<bool> projection_behind(const std::optional<log_position>& target) {
    if (!target || target->topic != cfg.ledger_topic) co_return false;
    co_return !co_await wait_for_projection(*target);
  }

  // Tenant-wide reads: the account listing and the tenant's usage summary. Read-your-writes only through an
  // explicit Credits-Min-Position (no one account's position applies).
  asio::awaitable<response> tenant_route(const request& req, std::string_view path, const list_params& p,
                                         const api_key& key) {
    auto position = client_position(req);
    if (auto* r = std::get_if<rejection>(&position)) co_return reject(*r, req);
    const bool behind = co_await projection_behind(std::get<std::optional<log_position>>(position));
    json body;
    if (path == "/v1/accounts") {
      auto read = with_redis<read_model::page>([tenant = key.tenant, q = p.query](read_model::redis_connection& c) {
        return read_model::list_accounts(c, tenant, q);
      });
      auto page = co_await std::move(read);
      body = {{"success", true}, {"accounts", std::move(page.items)}, {"nextCursor", next_cursor(page)}};
    } else {
      auto read = with_redis<json>([tenant = key.tenant, p](read_model::redis_connection& c) {
        return read_model::usage_summary(c, tenant, "", p.days, p.model_id, p.context);
      });
      auto summary = co_await std::move(read);  // never co_await inside a braced list: GCC 12 miscompiles it
      body = {{"success", true}, {"startDate", p.days.front()}, {"endDate", p.days.back()}, {"summary", summary}};
    }
    auto res = make(200, body, req);
    if (behind || !kafka.reachable() || !w.ready()) res.set("Credits-Stale", "true");
    co_return res;
  }

  static json next_cursor(const read_model::page& page) {
    return page.next ? json(page.next->to_string()) : json(nullptr);
  }

  // The list and report endpoints of one account; the account is known to exist and be the caller's.
  asio::awaitable<json> account_report(std::string_view path, const list_params& p,
                                       const read_model::account_view& account) {
    const auto id = account.id;
    if (path == "/v1/transactions") {
      auto read = with_redis<read_model::page>([id, p](read_model::redis_connection& c) {
        return read_model::list_transactions(
            c, id, p.query, [&](const json& t) { return p.type.empty() || t.value("type", "") == p.type; });
      });
      auto page = co_await std::move(read);
      for (auto& t : page.items) t["accountId"] = id;
      co_return json{{"success", true},
                     {"accountId", id},
                     {"externalId", account.external_id},
                     {"transactions", std::move(page.items)},
                     {"nextCursor", next_cursor(page)}};
    }
    if (path == "/v1/reservations") {
      const auto now = format_time(wall_clock_ms());
      auto read = with_redis<read_model::page>([id, p, now](read_model::redis_connection& c) {
        return read_model::list_reservations(c, id, p.query, [&](const json& r) {
          return !p.active_only || (r.value("status", "") == "pending" && r.value("expiresAt", "") > now);
        });
      });
      auto page = co_await std::move(read);
      for (auto& r : page.items) r["externalId"] = account.external_id;
      co_return json{{"success", true}, {"reservations", std::move(page.items)}, {"nextCursor", next_cursor(page)}};
    }
    if (p.summary) {  // /v1/usage?summary=true
      auto read = with_redis<json>([tenant = account.tenant, id, p](read_model::redis_connection& c) {
        return read_model::usage_summary(c, tenant, id, p.days, p.model_id, p.context);
      });
      auto summary = co_await std::move(read);
      co_return json{{"success", true},
                     {"accountId", id},
                     {"externalId", account.external_id},
                     {"startDate", p.days.front()},
                     {"endDate", p.days.back()},
                     {"summary", summary}};
    }
    auto read = with_redis<read_model::page>([id, p](read_model::redis_connection& c) {
      return read_model::list_usage(c, id, p.query, [&](const json& u) {
        return (p.model_id.empty() || u.value("modelId", "") == p.model_id) &&
               (p.context.empty() || u.value("context", "") == p.context) &&
               (p.usage_type.empty() || u.value("usageType", "") == p.usage_type);
      });
    });
    auto page = co_await std::move(read);
    co_return json{{"success", true}, {"usage", std::move(page.items)}, {"nextCursor", next_cursor(page)}};
  }

  asio::awaitable<response> query_route(const request& req, std::string_view path, std::string_view query,
                                        const api_key& key) {
    const auto params = query_params(query);
    auto listing = parse_list_params(params, wall_clock_ms());
    if (auto* r = std::get_if<rejection>(&listing)) co_return reject(*r, req);
    const auto& p = std::get<list_params>(listing);
    const bool names_account = params.contains("accountId") || params.contains("externalId");
    if (path == "/v1/accounts" || (path == "/v1/usage" && p.summary && !names_account))
      co_return co_await tenant_route(req, path, p, key);

    auto resolved = resolve_account(key.tenant, params);
    if (auto* r = std::get_if<rejection>(&resolved)) co_return reject(*r, req);
    const auto account_id = std::get<std::string>(resolved);

    // Read-your-writes: the client's position if it sent one, else the last one this instance wrote.
    auto position = client_position(req);
    if (auto* r = std::get_if<rejection>(&position)) co_return reject(*r, req);
    auto target = std::get<std::optional<log_position>>(position);
    if (!target) target = w.latest_position(account_id);
    // `behind`: the projection has not reached the position we know of. `unconfirmed`: the position we know of
    // may not be the end of the log (Kafka cannot be asked, or the writer is rebuilding its state).
    const bool behind = co_await projection_behind(target);
    const bool unconfirmed = !kafka.reachable() || !w.ready();

    auto read = with_redis<std::optional<read_model::account_view>>(
        [account_id](read_model::redis_connection& c) { return read_model::get_account(c, account_id); });
    const auto view = co_await std::move(read);
    if (!view && behind)  // the account may be in the log but not yet in the view: not found would be false
      co_return reject(
          rejection{error_code::unavailable, "the read model is behind the log; retry shortly", "", nullptr}, req);
    if (!view || view->tenant != key.tenant)
      co_return reject(rejection{error_code::account_not_found, "account not found", "", nullptr}, req);

    json body;
    if (path == "/v1/accounts/balance" && p.as_of) {
      const auto as_of = *p.as_of;
      const auto hold_max_ms = cfg.limits.reservation_timeout_s_max * 1000;
      auto read_at =
          with_redis<read_model::balance_at>([account_id, as_of, hold_max_ms](read_model::redis_connection& c) {
            return read_model::balance_as_of(c, account_id, as_of, hold_max_ms);
          });
      const auto at = co_await std::move(read_at);
      body = {{"success", true},           {"accountId", view->id},   {"externalId", view->external_id},
              {"balance", at.balance},     {"reserved", at.reserved}, {"available", at.balance - at.reserved},
              {"asOf", format_time(as_of)}};
    } else if (path == "/v1/accounts/balance") {
      body = {{"success", true},          {"accountId", view->id},      {"externalId", view->external_id},
              {"balance", view->balance}, {"reserved", view->reserved}, {"available", view->balance - view->reserved}};
    } else if (path != "/v1/accounts/get") {
      body = co_await account_report(path, p, *view);
    } else {
      body = {{"success", true},
              {"account",
               account_json(view->id, view->name, view->external_id, view->email, view->metadata, view->created_at)}};
      body["account"]["balance"] = view->balance;
      body["account"]["reserved"] = view->reserved;
      body["account"]["available"] = view->balance - view->reserved;
    }
    auto res = make(200, body, req);
    if (behind || unconfirmed) res.set("Credits-Stale", "true");
    co_return res;
  }

  asio::awaitable<response> handle(const request& req, session_state& s) {
    std::string request_id(req["X-Request-Id"]);
    const bool garbled = !printable_ascii(request_id);  // it would end up in an event, which must be text
    if (request_id.empty() || request_id.size() > request_id_bytes_max || garbled) request_id = new_request_id(s.rng);
    response res;
    s.api_route = false;
    if (garbled)
      res = reject(
          rejection{error_code::invalid_request, "X-Request-Id must be printable ASCII", "X-Request-Id", nullptr}, req);
    else
      res = co_await route(req, s, request_id);
    res.set("X-Request-Id", request_id);
    co_return res;
  }

  // Ready when commands and queries can be served: Kafka answers the probe, the writer has rebuilt its state
  // and takes commands, and Redis answers a PING from the query pool (a Redis Cluster: says cluster_state:ok,
  // so every slot has a master). The body names what is down.
  asio::awaitable<response> readiness(const request& req) {
    std::string redis_error;
    try {
      auto ping = with_redis<std::string>([](read_model::redis_connection& c) -> std::string {
        if (!c.clustered()) {
          const auto pong = c.run({"PING"}).value.value_or("");
          return pong == "PONG" ? "" : "unexpected answer to PING: " + pong;
        }
        const auto info = c.run({"CLUSTER", "INFO"}).value.value_or("");
        return info.find("cluster_state:ok") != std::string::npos ? "" : "the Redis Cluster is not ok (CLUSTER INFO)";
      });
      redis_error = co_await std::move(ping);
    } catch (const std::exception& ex) {
      redis_error = ex.what();
    }
    const auto k = kafka.current();
    const bool writer_ready = w.ready();
    json checks = json::object();
    json down = json::array();
    const auto check = [&](const char* name, bool ok, const std::string& error) {
      checks[name] = ok ? json{{"ok", true}} : json{{"ok", false}, {"error", error}};
      if (!ok) down.push_back(name);
    };
    check("kafka", k.reachable, k.error);
    check("writer", writer_ready, "rebuilding its state from the log; not taking commands");
    check("redis", redis_error.empty(), redis_error);
    const bool ready = down.empty();
    co_return make(
        ready ? 200 : 503,
        {{"status", ready ? "ready" : "not_ready"}, {"down", std::move(down)}, {"checks", std::move(checks)}}, req);
  }

  asio::awaitable<response> route(const request& req, session_state& s, const std::string& request_id) {
    const auto [path, query] = split_target(req.target());
    if (path == "/healthz") {
      const auto start = w.last_start();
      json health{{"status", "ok"},
                  {"accounts", w.accounts()},
                  {"startup",
                   {{"fromSnapshot", start.from_snapshot},
                    {"snapshotId", start.snapshot_id},
                    {"eventsReplayed", start.events_replayed},
                    {"durationMs", start.duration.count()}}}};
      if (w.grouped())
        health["group"] = {{"id", cfg.group_id}, {"member", cfg.advertised_address}, {"partitions", w.owned()}};
      co_return make(200, health, req);
    }
    if (path == "/readyz") co_return co_await readiness(req);
    if (path == "/metrics") co_return scrape(req);

    static constexpr std::string_view commands[] = {
        "/v1/accounts/create",     "/v1/accounts/credits/add", "/v1/accounts/credits/deduct",
        "/v1/reservations/create", "/v1/reservations/confirm", "/v1/reservations/cancel",
        "/v1/usage/record",        "/v1/transactions/reverse"};
    static constexpr std::string_view queries[] = {"/v1/accounts/get", "/v1/accounts/balance", "/v1/accounts",
                                                   "/v1/transactions", "/v1/reservations",     "/v1/usage"};
    const bool is_command = std::find(std::begin(commands), std::end(commands), path) != std::end(commands);
    const bool is_query = std::find(std::begin(queries), std::end(queries), path) != std::end(queries);
    if (!is_command && !is_query)
      co_return reject(rejection{error_code::route_not_found, "no such endpoint: " + std::string(path), "", nullptr},
                       req);
    s.api_route = true;

    const auto key_text = req["X-API-Key"];
    if (key_text.empty())
      co_return reject(rejection{error_code::unauthorized, "missing X-API-Key header", "", nullptr}, req);
    auto authenticated = keys.authenticate(key_text);
    if (auto* r = std::get_if<rejection>(&authenticated)) co_return reject(*r, req);
    const auto& key = std::get<api_key>(authenticated);
    // Every authenticated request takes a token, whatever it asks for, so a flood of bad requests is limited too.
    const auto steady_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch());
    if (const auto wait = limiter.admit(key.key_id, steady_ms)) {
      auto res =
          reject(rejection{error_code::rate_limited,
                           "too many requests for this API key; retry in " + std::to_string(wait->count()) + " s", "",
                           json{{"retryAfterSeconds", wait->count()}}},
                 req);
      res.set(http::field::retry_after, std::to_string(wait->count()));
      co_return res;
    }

    const auto wanted = is_command ? http::verb::post : http::verb::get;
    if (req.method() != wanted) {
      auto res = reject(
          rejection{error_code::method_not_allowed, "use " + std::string(http::to_string(wanted)), "", nullptr}, req);
      res.set(http::field::allow, http::to_string(wanted));
      co_return res;
    }
    if (is_command && key.scope == key_scope::read_only)
      co_return reject(rejection{error_code::forbidden, "this API key is read-only", "", nullptr}, req);
    try {
      if (is_command) co_return co_await command_route(req, path, key, s, request_id);
      co_return co_await query_route(req, path, query, key);
    } catch (const std::exception& ex) {
      // Redis unreachable (queries) or another I/O failure: never a false answer, ask for a retry.
      write_log(log_level::error, component,
                std::string(req.method_string()) + " " + std::string(path) + " failed: " + ex.what(),
                {{"requestId", request_id}, {"route", path}});
      co_return reject(rejection{error_code::unavailable, "a backing service is unavailable; retry later", "", nullptr},
                       req);
    }
  }

  // /metrics: Prometheus's text format. Unauthenticated like /healthz: it names routes and counts, never a
  // tenant, an account or a key (docs/operations.md says how to keep it off the public network).
  response scrape(const request& req) {
    response res{http::status::ok, req.version()};
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.keep_alive(req.keep_alive());
    res.body() = metrics.scrape(connections->load(std::memory_order_relaxed), w.queued_commands());
    res.prepare_payload();
    return res;
  }

  // Records an answered request in the metrics and, when it failed on our side (5xx) or the access log is on,
  // in the log (5xx lines rate-limited when the access log is off). The account id is looked for only then, so
  // the common path parses nothing twice.
  void answered(const request& req, const response& res, const session_state& s,
                std::chrono::steady_clock::time_point started) {
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    const auto status = res.result_int();
    const auto route = route_label(req.target(), s.api_route);
    metrics.request_done(route, status, took.count());
    if (status < 500 && !cfg.access_log) return;
    std::uint64_t suppressed = 0;
    if (!cfg.access_log && !failure_lines.admit(wall_clock_ms(), suppressed)) return;
    std::string account_id;
    const auto params = query_params(split_target(req.target()).query);
    if (params.contains("accountId")) account_id = params["accountId"].get<std::string>();
    if (account_id.empty() && !req.body().empty()) {
      const auto body = parse_json(req.body(), cfg.limits);
      if (const auto* j = std::get_if<json>(&body);
          j && j->is_object() && j->contains("accountId") && (*j)["accountId"].is_string())
        account_id = (*j)["accountId"].get<std::string>();
    }
    const auto request_id = std::string(res["X-Request-Id"]);
    const auto method = std::string(req.method_string());
    const auto position = std::string(res["Credits-Position"]);
    std::vector<log_field> fields{{"requestId", request_id},
                                  {"method", method},
                                  {"route", route},
                                  {"status", status},
                                  {"durationMs", std::round(took.count() * 1e6) / 1e3}};  // to the microsecond
    if (!account_id.empty()) fields.push_back({"accountId", account_id});
    if (!position.empty()) fields.push_back({"position", position});
    if (suppressed > 0) fields.push_back({"suppressedBefore", suppressed});
    write_log(status >= 500 ? log_level::warn : log_level::info, component,
              method + " " + std::string(route) + " answered " + std::to_string(status), fields);
  }

  // One connection, plain or TLS: the TLS handshake first (within the request timeout), then serve(); a TLS
  // connection is closed with a close_notify, a plain one with a FIN. Holds one unit of `connections`.
  asio::awaitable<void> session(tcp::socket socket) {
    const count_release slot{connections};
    if (!tls) {
      beast::tcp_stream stream(std::move(socket));
      co_await serve(stream);
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *tls);
    beast::get_lowest_layer(stream).expires_after(cfg.request_timeout_ms);
    auto [hec] = co_await stream.async_handshake(ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
    if (hec) co_return;  // not TLS, or it gave up: there is no channel to answer on
    co_await serve(stream);
    beast::get_lowest_layer(stream).expires_after(cfg.send_timeout_ms);
    // The client may have gone already; either way the connection ends here.
    auto shutdown = stream.async_shutdown(asio::as_tuple(asio::use_awaitable));
    co_await std::move(shutdown);
  }

  // Requests are read, handled and answered strictly one after another, so a client that pipelines has one
  // request in flight and the rest wait in the socket. `stream` lives in the session's frame, which awaits this.
  template <class Stream>
  asio::awaitable<void> serve(Stream& stream) {
    beast::flat_buffer buffer;
    session_state s;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(cfg.body_bytes_max);
      parser.header_limit(static_cast<std::uint32_t>(cfg.header_bytes_max));
      // Between requests the connection may idle for the idle timeout; once a request's first byte is here
      // (or was read along with the previous one), the whole request must arrive within the request timeout.
      if (buffer.size() == 0) {
        beast::get_lowest_layer(stream).expires_after(cfg.idle_timeout_ms);
        auto [iec, in] =
            co_await stream.async_read_some(buffer.prepare(read_chunk_bytes), asio::as_tuple(asio::use_awaitable));
        if (iec) break;
        buffer.commit(in);
      }
      beast::get_lowest_layer(stream).expires_after(cfg.request_timeout_ms);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        std::optional<response> last;
        request blank;
        blank.version(11);
        blank.keep_alive(false);
        if (ec == http::error::body_limit)
          last =
              reject(rejection{error_code::payload_too_large,
                               "the body is larger than " + std::to_string(cfg.body_bytes_max) + " bytes", "", nullptr},
                     blank);
        else if (ec == http::error::header_limit)
          last = make(
              431, error_body(rejection{error_code::invalid_request, "the request headers are too large", "", nullptr}),
              blank);
        else if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != asio::error::eof &&
                 ec != asio::error::connection_reset && ec != asio::error::operation_aborted)
          last = reject(rejection{error_code::invalid_request, "malformed HTTP request: " + ec.message(), "", nullptr},
                        blank);
        if (last) {
          metrics.request_unread(last->result_int());
          beast::get_lowest_layer(stream).expires_after(cfg.send_timeout_ms);
          co_await http::async_write(stream, *last, asio::as_tuple(asio::use_awaitable));
        }
        break;
      }
      const request req = parser.release();
      const auto started = std::chrono::steady_clock::now();
      response res = co_await handle(req, s);
      answered(req, res, s, started);
      const bool keep_alive = res.keep_alive();
      beast::get_lowest_layer(stream).expires_after(cfg.send_timeout_ms);
      auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !keep_alive) break;
    }
  }

  // A connection over the limit: answered 503 at once (before its request is read) and closed, after giving
  // the client a moment to finish sending so the close does not reset the answer away. Holds one unit of
  // `refusals`.
  asio::awaitable<void> refuse(tcp::socket socket) {
    const count_release slot{refusals};
    if (tls) {
      // Over TLS the 503 would be noise to the client, and a handshake per refusal is what an overload can least
      // afford: the connection is closed instead.
      beast::error_code ignored;
      socket.close(ignored);
      co_return;
    }
    beast::tcp_stream stream(std::move(socket));
    std::mt19937_64 rng{std::random_device{}()};
    request blank;
    blank.version(11);
    blank.keep_alive(false);
    auto res = reject(
        rejection{error_code::unavailable,
                  "too many connections (" + std::to_string(cfg.connections_max) + "); retry later", "", nullptr},
        blank);
    res.set("X-Request-Id", new_request_id(rng));
    metrics.request_unread(res.result_int());
    stream.expires_after(std::min(cfg.send_timeout_ms, refusal_linger_ms));
    auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec) co_return;
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    std::array<char, read_chunk_bytes> sink;
    stream.expires_after(refusal_linger_ms);
    for (;;) {
      auto [rec, rn] = co_await stream.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
      if (rec) break;
    }
  }

  static void log_connection_error(std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      write_log(log_level::error, component, std::string("connection ended by an error: ") + ex.what());
    }
  }

  asio::awaitable<void> accept_loop() {
    asio::steady_timer backoff(io);
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted) co_return;
      if (ec == asio::error::connection_aborted) continue;  // that one connection's failure, nobody else's
      if (ec) {
        write_log(log_level::error, component, "accept failed, pausing: " + ec.message(),
                  {{"openConnections", connections->load(std::memory_order_relaxed)}});
        backoff.expires_after(accept_backoff_ms);
        co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      auto strand = socket.get_executor();
      if (connections->load(std::memory_order_acquire) < cfg.connections_max) {
        connections->fetch_add(1, std::memory_order_acq_rel);  // given back by the session
        asio::co_spawn(strand, session(std::move(socket)), &impl::log_connection_error);
      } else if (refusals->load(std::memory_order_acquire) < cfg.connections_max) {
        refusals->fetch_add(1, std::memory_order_acq_rel);  // given back by refuse()
        asio::co_spawn(strand, refuse(std::move(socket)), &impl::log_connection_error);
      }
      // Else even the refusals are at their limit: the socket closes here, unanswered.
    }
  }
};

http_api::http_api(const config& cfg, asio::io_context& io, ownership& w, const key_registry& keys,
                   api_metrics& metrics)
    : impl_(std::make_unique<impl>(cfg, io, w, keys, metrics)) {}

http_api::~http_api() {
  if (impl_) impl_->blocking.join();
}

std::uint16_t http_api::listen() {
  auto& a = impl_->acceptor;
  const tcp::endpoint endpoint(asio::ip::make_address(impl_->cfg.http_address), impl_->cfg.http_port);
  a.open(endpoint.protocol());
  a.set_option(asio::socket_base::reuse_address(true));
  a.bind(endpoint);
  a.listen(asio::socket_base::max_listen_connections);
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  return a.local_endpoint().port();
}

void http_api::shutdown() {
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
}

}  // namespace credits::api
