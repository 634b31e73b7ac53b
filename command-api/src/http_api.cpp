#include "credits/http_api.hpp"

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
#include <cstdio>
#include <random>

#include "credits/ids.hpp"
#include "credits/responses.hpp"

namespace credits::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

constexpr std::size_t request_id_bytes_max = 128;
constexpr std::size_t idempotency_key_bytes_max = 256;

// Delivers a writer outcome back onto the coroutine's own executor.
template <class Token>
auto async_submit(writer& w, command cmd, request_context ctx, Token&& token) {
  return asio::async_initiate<Token, void(outcome)>(
      [&w](auto handler, command c, request_context x) {
        auto ex = asio::get_associated_executor(handler);
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        auto deliver = [shared, ex](outcome o) {
          asio::post(ex, [shared, o = std::move(o)]() mutable { (*shared)(std::move(o)); });
        };
        submission s{std::move(c), std::move(x), deliver};
        if (!w.submit(std::move(s)))
          deliver(outcome{503,
                          error_body(rejection{error_code::unavailable,
                                               "the writer is busy or recovering; retry later", "", nullptr}),
                          {}, false});
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
      params[percent_decode(pair.substr(0, eq))] = eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1));
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
  return std::make_unique<read_model::redis_connection>(cfg_.redis_host, cfg_.redis_port, cfg_.redis_timeout_ms);
}

void redis_pool::release(std::unique_ptr<read_model::redis_connection> c) {
  if (!c || c->broken()) return;
  std::lock_guard lock(mutex_);
  if (idle_.size() < static_cast<std::size_t>(cfg_.redis_connections_max)) idle_.push_back(std::move(c));
}

struct http_api::impl {
  const config& cfg;
  asio::io_context& io;
  writer& w;
  tcp::acceptor acceptor;
  asio::thread_pool blocking;
  redis_pool redis;

  impl(const config& c, asio::io_context& i, writer& wr)
      : cfg(c), io(i), w(wr), acceptor(i), blocking(static_cast<std::size_t>(c.redis_connections_max)), redis(c) {}

  // Per-connection state: the caller's random source for new ids.
  struct session_state {
    std::mt19937_64 rng{std::random_device{}()};
  };

  // Runs `fn` with a pooled Redis connection on the blocking pool (not a coroutine, as offload).
  template <class R, class F>
  auto with_redis(F fn) {
    return offload<R>(blocking, [this, fn = std::move(fn)]() -> R {
      auto c = redis.acquire();
      R r = fn(*c);
      redis.release(std::move(c));
      return r;
    });
  }

  static response make(unsigned status, const json& body, const request& req) {
    response res{static_cast<http::status>(status), req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = body.dump();
    if (status == 503) res.set(http::field::retry_after, "1");
    res.prepare_payload();
    return res;
  }

  static response reject(const rejection& r, const request& req) { return make(http_status(r.code), error_body(r), req); }

  asio::awaitable<response> command_route(const request& req, std::string_view path, const api_key& key,
                                          session_state& s, const std::string& request_id) {
    const auto body = parse_json(req.body(), cfg.limits);
    if (auto* r = std::get_if<rejection>(&body)) co_return reject(*r, req);
    const auto& j = std::get<json>(body);
    const random_bits bits = [&s] { return s.rng(); };
    parsed p = rejection{error_code::route_not_found, "no such endpoint", "", nullptr};
    if (path == "/v1/accounts/create") p = parse_create_account(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/accounts/credits/add") p = parse_add_credits(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/accounts/credits/deduct") p = parse_deduct_credits(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/reservations/create") p = parse_create_reservation(j, key.tenant, bits, cfg.limits);
    else if (path == "/v1/reservations/confirm") p = parse_confirm_reservation(j, bits, cfg.limits);
    else if (path == "/v1/reservations/cancel") p = parse_cancel_reservation(j, cfg.limits);
    else if (path == "/v1/usage/record") p = parse_record_usage(j, key.tenant, bits, cfg.limits);
    if (auto* r = std::get_if<rejection>(&p)) co_return reject(*r, req);

    const auto idempotency_key = std::string(req["Idempotency-Key"]);
    if (idempotency_key.size() > idempotency_key_bytes_max)
      co_return reject(rejection{error_code::invalid_request, "Idempotency-Key is too long", "Idempotency-Key", nullptr}, req);
    request_context ctx{key.tenant, key.key_id, request_id, idempotency_key,
                        sha256_hex(std::string(req.target()) + '\n' + req.body()), 0};
    const outcome o = co_await async_submit(w, std::move(std::get<command>(p)), std::move(ctx), asio::use_awaitable);
    auto res = make(o.status, o.body, req);
    if (!o.position.empty()) res.set("Credits-Position", o.position);
    if (o.replayed) res.set("Idempotent-Replayed", "true");
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

  asio::awaitable<response> query_route(const request& req, std::string_view path, std::string_view query,
                                        const api_key& key) {
    auto resolved = resolve_account(key.tenant, query_params(query));
    if (auto* r = std::get_if<rejection>(&resolved)) co_return reject(*r, req);
    const auto account_id = std::get<std::string>(resolved);

    // Read-your-writes: the client's position if it sent one, else the last one this instance wrote.
    std::optional<log_position> target;
    if (const auto header = req["Credits-Min-Position"]; !header.empty()) {
      target = log_position::parse(header);
      if (!target)
        co_return reject(rejection{error_code::invalid_request, "Credits-Min-Position is not topic:partition:offset",
                                   "Credits-Min-Position", nullptr},
                         req);
    } else {
      target = w.latest_position(account_id);
    }
    bool stale = false;
    if (target && target->topic == cfg.ledger_topic) stale = !co_await wait_for_projection(*target);

    auto read = with_redis<std::optional<read_model::account_view>>(
        [account_id](read_model::redis_connection& c) { return read_model::get_account(c, account_id); });
    const auto view = co_await std::move(read);
    if (!view && stale)  // the account may be in the log but not yet in the view: not found would be false
      co_return reject(rejection{error_code::unavailable, "the read model is behind the log; retry shortly", "", nullptr}, req);
    if (!view || view->tenant != key.tenant)
      co_return reject(rejection{error_code::account_not_found, "account not found", "", nullptr}, req);

    json body;
    if (path == "/v1/accounts/balance") {
      body = {{"success", true},           {"accountId", view->id},     {"externalId", view->external_id},
              {"balance", view->balance}, {"reserved", view->reserved}, {"available", view->balance - view->reserved}};
    } else {
      body = {{"success", true},
              {"account", account_json(view->id, view->name, view->external_id, view->email, view->metadata,
                                       view->created_at)}};
      body["account"]["balance"] = view->balance;
      body["account"]["reserved"] = view->reserved;
      body["account"]["available"] = view->balance - view->reserved;
    }
    auto res = make(200, body, req);
    if (stale) res.set("Credits-Stale", "true");
    co_return res;
  }

  asio::awaitable<response> handle(const request& req, session_state& s) {
    std::string request_id(req["X-Request-Id"]);
    if (request_id.empty() || request_id.size() > request_id_bytes_max) {
      char buf[24];
      std::snprintf(buf, sizeof buf, "req_%016llx", static_cast<unsigned long long>(s.rng()));
      request_id = buf;
    }
    auto res = co_await route(req, s, request_id);
    res.set("X-Request-Id", request_id);
    co_return res;
  }

  asio::awaitable<response> route(const request& req, session_state& s, const std::string& request_id) {
    const auto [path, query] = split_target(req.target());
    if (path == "/healthz")
      co_return make(200, {{"status", "ok"}, {"accounts", w.accounts()}}, req);

    static constexpr std::string_view commands[] = {"/v1/accounts/create",       "/v1/accounts/credits/add",
                                                    "/v1/accounts/credits/deduct", "/v1/reservations/create",
                                                    "/v1/reservations/confirm",  "/v1/reservations/cancel",
                                                    "/v1/usage/record"};
    static constexpr std::string_view queries[] = {"/v1/accounts/get", "/v1/accounts/balance"};
    const bool is_command = std::find(std::begin(commands), std::end(commands), path) != std::end(commands);
    const bool is_query = std::find(std::begin(queries), std::end(queries), path) != std::end(queries);
    if (!is_command && !is_query)
      co_return reject(rejection{error_code::route_not_found, "no such endpoint: " + std::string(path), "", nullptr}, req);

    const auto key_text = req["X-API-Key"];
    const auto key = key_text.empty() ? cfg.api_keys.end() : cfg.api_keys.find(sha256_hex(key_text));
    if (key == cfg.api_keys.end())
      co_return reject(rejection{error_code::unauthorized,
                                 key_text.empty() ? "missing X-API-Key header" : "unknown API key", "", nullptr},
                       req);

    const auto wanted = is_command ? http::verb::post : http::verb::get;
    if (req.method() != wanted) {
      auto res = reject(rejection{error_code::method_not_allowed, "use " + std::string(http::to_string(wanted)),
                                  "", nullptr},
                        req);
      res.set(http::field::allow, http::to_string(wanted));
      co_return res;
    }
    try {
      if (is_command) co_return co_await command_route(req, path, key->second, s, request_id);
      co_return co_await query_route(req, path, query, key->second);
    } catch (const std::exception& ex) {
      // Redis unreachable (queries) or another I/O failure: never a false answer, ask for a retry.
      std::fprintf(stderr, "credits-api: %s %s failed: %s\n", std::string(req.method_string()).c_str(),
                   std::string(path).c_str(), ex.what());
      co_return reject(rejection{error_code::unavailable, "a backing service is unavailable; retry later", "", nullptr}, req);
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    session_state s;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(cfg.body_bytes_max);
      parser.header_limit(static_cast<std::uint32_t>(cfg.header_bytes_max));
      stream.expires_after(cfg.idle_timeout_ms);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        std::optional<response> last;
        request blank;
        blank.version(11);
        blank.keep_alive(false);
        if (ec == http::error::body_limit)
          last = reject(rejection{error_code::payload_too_large,
                                  "the body is larger than " + std::to_string(cfg.body_bytes_max) + " bytes", "", nullptr},
                        blank);
        else if (ec == http::error::header_limit)
          last = make(431, error_body(rejection{error_code::invalid_request, "the request headers are too large", "", nullptr}), blank);
        else if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != asio::error::eof &&
                 ec != asio::error::connection_reset && ec != asio::error::operation_aborted)
          last = reject(rejection{error_code::invalid_request, "malformed HTTP request: " + ec.message(), "", nullptr}, blank);
        if (last) co_await http::async_write(stream, *last, asio::as_tuple(asio::use_awaitable));
        break;
      }
      const request req = parser.release();
      response res = co_await handle(req, s);
      const bool keep_alive = res.keep_alive();
      stream.expires_after(cfg.idle_timeout_ms);
      auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !keep_alive) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) continue;  // a connection that failed during accept (e.g. reset) affects nobody else
      auto strand = socket.get_executor();
      asio::co_spawn(strand, session(std::move(socket)), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          std::fprintf(stderr, "credits-api: connection ended by an error: %s\n", ex.what());
        }
      });
    }
  }
};

http_api::http_api(const config& cfg, asio::io_context& io, writer& w)
    : impl_(std::make_unique<impl>(cfg, io, w)) {}

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
