#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cmath>
#include <cstdio>
#include <type_traits>

#include "credits/common/clock.hpp"
#include "http_impl.hpp"

// The server: the accept loop, TLS, one session per connection with its limits, the router with authentication,
// rate limits and method checks, and the operational endpoints (/healthz, /readyz, /metrics).
namespace credits::api {
namespace {

using namespace http_detail;

// Lines for 5xx answers when the access log is off: enough to see what fails, not one per request of an
// outage at full load (the metrics count every one).
constexpr std::uint32_t failure_lines_per_second_max = 50;
constexpr std::size_t request_id_bytes_max = 128;
constexpr std::size_t read_chunk_bytes = 4096;  // what one read of a waiting connection asks for
// A refused connection gets its 503 and then this long to finish sending its request (read and dropped), so
// that closing it does not reset the connection before the client has read the answer.
constexpr std::chrono::milliseconds refusal_linger_ms{1000};
// The same for a request answered before it was read whole (413, 431, malformed HTTP): a client that writes all
// of its request before it reads (Python's urllib, a 2 MB body) must get to read the answer. At most this much of
// the rest is read and dropped, for at most this long (and never longer than the request timeout); a client that
// sends more, or more slowly, gets its connection reset and may miss the answer.
constexpr std::size_t unread_drain_bytes_max = 8 * 1024 * 1024;
constexpr std::chrono::milliseconds unread_drain_timeout_ms{2000};
constexpr std::size_t drain_chunk_bytes = 64 * 1024;  // what one read of the drain asks for
// The endpoints for operators and probes: no API key, and GET alone.
constexpr std::string_view operational_paths[] = {"/healthz", "/readyz", "/metrics"};
// After an accept error that is not one connection's own (no file descriptors left, no memory), wait before
// accepting again rather than spinning.
constexpr std::chrono::milliseconds accept_backoff_ms{50};

constexpr std::string_view query_paths[] = {"/v1/accounts/get",    "/v1/accounts/balance", "/v1/accounts",
                                            "/v1/transactions",    "/v1/reservations",     "/v1/usage",
                                            "/v1/accounts/grants", "/v1/reports/credits"};

std::string new_request_id(std::mt19937_64& rng) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "req_%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

// Gives back one unit of a shared_count when the coroutine that holds it ends, however it ends.
struct count_release {
  shared_count count;
  ~count_release() { count->fetch_sub(1, std::memory_order_acq_rel); }
};

// What an answer to a request that was never read (or never will be) is addressed to: HTTP/1.1, closing.
request blank_request() {
  request blank;
  blank.version(11);
  blank.keep_alive(false);
  return blank;
}

// TLS 1.2 or newer with the configured certificate chain and key; throws (start-up fails) if they do not load.
std::unique_ptr<ssl::context> make_tls_context(const config& c) {
  if (c.tls_cert_file.empty()) return nullptr;
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  ctx->use_certificate_chain_file(c.tls_cert_file);
  ctx->use_private_key_file(c.tls_key_file, ssl::context::pem);
  return ctx;
}

void log_connection_error(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    write_log(log_level::error, component, std::string("connection ended by an error: ") + ex.what());
  }
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

// Reads and drops what the client still sends after its last answer, until it closes, unread_drain_bytes_max
// is read or `timeout` passes. A plain connection is half-closed first: the client sees the answer end. `stream`
// lives in the session's frame, which awaits this.
template <class Stream>
asio::awaitable<void> drain_unread(Stream& stream, std::chrono::milliseconds timeout) {
  if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
  beast::get_lowest_layer(stream).expires_after(timeout);
  std::vector<char> sink(drain_chunk_bytes);
  for (std::size_t drained = 0; drained < unread_drain_bytes_max;) {
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
    if (ec) break;
    drained += n;
  }
}

}  // namespace

namespace http_detail {

bool printable_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

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

route_target split_target(std::string_view target) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

}  // namespace http_detail

http_api::impl::impl(const config& c, asio::io_context& i, ownership& wr, const key_registry& k, api_metrics& m)
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
      failure_lines(failure_lines_per_second_max),
      tls(make_tls_context(c)) {}

response http_api::impl::make(unsigned status, const json& body, const request& req) {
  response res{static_cast<http::status>(status), req.version()};
  res.set(http::field::content_type, "application/json");
  res.keep_alive(req.keep_alive());
  // Replace, not throw: an error message may quote bytes of the request that are not UTF-8.
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  if (status == 503) res.set(http::field::retry_after, "1");
  res.prepare_payload();
  return res;
}

response http_api::impl::reject(const rejection& r, const request& req) {
  return make(http_status(r.code), error_body(r), req);
}

response http_api::impl::reject(http_error code, const std::string& message, const request& req, const json& details) {
  return make(http_status(code), error_body(code, message, details), req);
}

asio::awaitable<response> http_api::impl::handle(const request& req, session_state& s) {
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

response http_api::impl::health(const request& req) {
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
  return make(200, health, req);
}

// Ready when commands and queries can be served: Kafka answers the probe, the writer has rebuilt its state
// and takes commands, and Redis answers a PING from the query pool (a Redis Cluster: says cluster_state:ok,
// so every slot has a master). The body names what is down, and says how far back idempotency keys are held.
asio::awaitable<response> http_api::impl::readiness(const request& req) {
  // Redis answers, and then what its view's marker says: a view that lost its data, or is being rebuilt from the
  // log, answers every query 503 (its `view` check says which).
  struct redis_state {
    std::string error;
    std::optional<read_model::view_status> view;
  };
  redis_state redis_now;
  try {
    auto ping = with_redis<redis_state>([](read_model::redis_connection& c) -> redis_state {
      if (!c.clustered()) {
        const auto pong = c.run({"PING"}).value.value_or("");
        if (pong != "PONG") return {"unexpected answer to PING: " + pong, std::nullopt};
      } else if (c.run({"CLUSTER", "INFO"}).value.value_or("").find("cluster_state:ok") == std::string::npos) {
        return {"the Redis Cluster is not ok (CLUSTER INFO)", std::nullopt};
      }
      return {"", read_model::read_view_status(c)};
    });
    redis_now = co_await std::move(ping);
  } catch (const std::exception& ex) {
    redis_now.error = ex.what();
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
  check("redis", redis_now.error.empty(), redis_now.error);
  if (redis_now.view) {  // unknown while Redis does not answer
    const auto& v = *redis_now.view;
    check("view", v.state == read_model::view_status::state_t::ready, v.describe());
    if (v.state == read_model::view_status::state_t::rebuilding) checks["view"]["rebuilding"] = true;
  }
  const bool ready = down.empty();
  // Not a check: a short window does not stop the server from serving, but it is what a retry can rely on.
  const auto idempotency = w.idempotency();
  const json window{{"windowSeconds", idempotency.window_held.count() / 1000},
                    {"configuredWindowSeconds", cfg.idempotency_window_ms.count() / 1000},
                    {"keys", idempotency.keys},
                    {"keysMax", idempotency.keys_max}};
  co_return make(ready ? 200 : 503,
                 {{"status", ready ? "ready" : "not_ready"},
                  {"down", std::move(down)},
                  {"checks", std::move(checks)},
                  {"idempotency", window}},
                 req);
}

// /metrics: Prometheus's text format. Unauthenticated like /healthz: it names routes and counts, never a
// tenant, an account or a key (docs/operations.md says how to keep it off the public network).
response http_api::impl::scrape(const request& req) {
  response res{http::status::ok, req.version()};
  res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.keep_alive(req.keep_alive());
  const auto idempotency = w.idempotency();
  res.body() = metrics.scrape(connections->load(std::memory_order_relaxed), w.queued_commands(),
                              {idempotency.keys, idempotency.keys_max, idempotency.bytes,
                               static_cast<double>(idempotency.window_held.count()) / 1000});
  res.prepare_payload();
  return res;
}

// Who asks, and whether they may: an API key that is known (401), within its rate limit (429), with the route's
// method (405) and, for commands, allowed to write (403), checked in that order. The key, or the refusal.
std::variant<api_key, response> http_api::impl::admit(const request& req, bool is_command) {
  const auto key_text = req["X-API-Key"];
  if (key_text.empty()) return reject(http_error::unauthorized, "missing X-API-Key header", req);
  auto authenticated = keys.authenticate(key_text);
  if (!authenticated) return reject(http_error::unauthorized, "unknown API key", req);
  const auto& key = *authenticated;
  // Every authenticated request takes a token, whatever it asks for, so a flood of bad requests is limited too.
  const auto steady_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch());
  if (const auto wait = limiter.admit(key.key_id, steady_ms)) {
    auto res = reject(http_error::rate_limited,
                      "too many requests for this API key; retry in " + std::to_string(wait->count()) + " s", req,
                      json{{"retryAfterSeconds", wait->count()}});
    res.set(http::field::retry_after, std::to_string(wait->count()));
    return res;
  }
  const auto wanted = is_command ? http::verb::post : http::verb::get;
  if (req.method() != wanted) {
    auto res = reject(http_error::method_not_allowed, "use " + std::string(http::to_string(wanted)), req);
    res.set(http::field::allow, http::to_string(wanted));
    return res;
  }
  if (is_command && key.scope == key_scope::read_only)
    return reject(http_error::forbidden, "this API key is read-only", req);
  if (const auto* endpoint = command_endpoint_of(split_target(req.target()).path);
      endpoint && endpoint->admin_only && key.scope != key_scope::admin)
    return reject(http_error::forbidden, "this endpoint needs an API key with the admin scope", req);
  return key;
}

asio::awaitable<response> http_api::impl::route(const request& req, session_state& s, const std::string& request_id) {
  const auto [path, query] = split_target(req.target());
  const bool operational =
      std::find(std::begin(operational_paths), std::end(operational_paths), path) != std::end(operational_paths);
  if (operational && req.method() != http::verb::get) {
    auto res = reject(http_error::method_not_allowed, "use GET", req);
    res.set(http::field::allow, "GET");
    co_return res;
  }
  if (path == "/healthz") co_return health(req);
  if (path == "/readyz") co_return co_await readiness(req);
  if (path == "/metrics") co_return scrape(req);

  const bool is_command = command_endpoint_of(path) != nullptr;
  const bool is_query = std::find(std::begin(query_paths), std::end(query_paths), path) != std::end(query_paths);
  if (!is_command && !is_query)
    co_return reject(http_error::route_not_found, "no such endpoint: " + std::string(path), req);
  s.api_route = true;
  auto admitted = admit(req, is_command);
  if (auto* refusal = std::get_if<response>(&admitted)) co_return std::move(*refusal);
  const auto& key = std::get<api_key>(admitted);
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

// Records an answered request in the metrics and, when it failed on our side (5xx) or the access log is on,
// in the log (5xx lines rate-limited when the access log is off). The account id is looked for only then, so
// the common path parses nothing twice.
void http_api::impl::answered(const request& req, const response& res, const session_state& s,
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
asio::awaitable<void> http_api::impl::session(tcp::socket socket) {
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

// The last answer of a connection whose request could not be read: too large, or malformed. None when the client
// just went away or was too slow.
std::optional<response> http_api::impl::unread_answer(const boost::system::error_code& ec) const {
  const auto blank = blank_request();
  if (ec == http::error::body_limit)
    return reject(http_error::payload_too_large,
                  "the body is larger than " + std::to_string(cfg.body_bytes_max) + " bytes", blank);
  if (ec == http::error::header_limit)
    return make(431,
                error_body(rejection{error_code::invalid_request, "the request headers are too large", "", nullptr}),
                blank);
  if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != asio::error::eof &&
      ec != asio::error::connection_reset && ec != asio::error::operation_aborted)
    return reject(rejection{error_code::invalid_request, "malformed HTTP request: " + ec.message(), "", nullptr},
                  blank);
  return std::nullopt;
}

// Requests are read, handled and answered strictly one after another, so a client that pipelines has one
// request in flight and the rest wait in the socket. `stream` lives in the session's frame, which awaits this.
template <class Stream>
asio::awaitable<void> http_api::impl::serve(Stream& stream) {
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
      if (auto last = unread_answer(ec)) {
        metrics.request_unread(last->result_int());
        beast::get_lowest_layer(stream).expires_after(cfg.send_timeout_ms);
        auto [wec, wn] = co_await http::async_write(stream, *last, asio::as_tuple(asio::use_awaitable));
        if (!wec) co_await drain_unread(stream, std::min(cfg.request_timeout_ms, unread_drain_timeout_ms));
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
asio::awaitable<void> http_api::impl::refuse(tcp::socket socket) {
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
  auto res =
      reject(rejection{error_code::unavailable,
                       "too many connections (" + std::to_string(cfg.connections_max) + "); retry later", "", nullptr},
             blank_request());
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

asio::awaitable<void> http_api::impl::accept_loop() {
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
      asio::co_spawn(strand, session(std::move(socket)), &log_connection_error);
    } else if (refusals->load(std::memory_order_acquire) < cfg.connections_max) {
      refusals->fetch_add(1, std::memory_order_acq_rel);  // given back by refuse()
      asio::co_spawn(strand, refuse(std::move(socket)), &log_connection_error);
    }
    // Else even the refusals are at their limit: the socket closes here, unanswered.
  }
}

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
