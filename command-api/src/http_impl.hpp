#pragma once

// The HTTP server's insides, shared by the files that implement http_api by concern (private to command-api):
// http_server.cpp (accept loop, TLS, sessions, limits, routing, operational endpoints), http_commands.cpp (the
// command endpoints, through the writer), http_queries.cpp (the query endpoints, over the read model),
// http_forward.cpp (commands for another instance's partitions) and http_backends.cpp (the Redis pool and the
// Kafka probe).

#include <atomic>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "credits/command_api/api_metrics.hpp"
#include "credits/command_api/http_api.hpp"
#include "credits/command_api/queries.hpp"
#include "credits/command_api/rate_limit.hpp"
#include "credits/command_api/responses.hpp"
#include "credits/common/log.hpp"

namespace credits::api::http_detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using nlohmann::json;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

inline constexpr std::string_view component = "credits-api";

// Idle keep-alive connections to the other instances, by address, for forwarding. Each is used by one forward at
// a time. Thread-safe (one mutex, held for a vector operation); lives as long as the server.
class peer_connections {
 public:
  std::optional<beast::tcp_stream> take(const std::string& address);
  void give_back(const std::string& address, beast::tcp_stream stream);

 private:
  struct idle_connection {
    beast::tcp_stream stream;
    std::chrono::steady_clock::time_point since;
  };
  std::mutex mutex_;
  std::map<std::string, std::vector<idle_connection>> idle_;
};

// A count of a resource held by coroutines (open connections, refusals). Shared with each holder: the frame of
// a session still suspended when the server stops is destroyed with the io_context, after the server.
using shared_count = std::shared_ptr<std::atomic<std::size_t>>;

// Header values that end up in events (and so in JSON) must be text: visible ASCII and spaces only.
bool printable_ascii(std::string_view s);

// Query parameters as a JSON object of strings, so the same account resolution serves bodies and queries.
json query_params(std::string_view query);

// A command endpoint: its path, and how its body becomes a command (http_commands.cpp).
struct command_endpoint {
  std::string_view path;
  parsed (*parse)(const json& body, std::string_view tenant, const random_bits& bits, const request_limits& limits);
  bool admin_only = false;  // an operators' endpoint: keys of the admin scope only
};
// nullptr: not a command endpoint.
const command_endpoint* command_endpoint_of(std::string_view path);

struct route_target {
  std::string_view path;
  std::string_view query;
};
route_target split_target(std::string_view target);

// A query read the view while its marker said it was not ready (it lost its data, or is being rebuilt from the
// log): what the reads found may be nothing at all, so the query is answered 503, never "not found". The message
// is read_model::view_status::describe().
class view_unavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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

}  // namespace credits::api::http_detail

namespace credits::api {

// Everything the server owns. Built by http_api's constructor on main's thread; its coroutines run on the
// io_context's threads, each connection on a strand of its own; blocking Redis and Kafka admin calls run on
// `blocking`. Destroyed after the io_context has stopped.
struct http_api::impl {
  using request = http_detail::request;
  using response = http_detail::response;
  template <class T>
  using awaitable = boost::asio::awaitable<T>;

  const config& cfg;
  boost::asio::io_context& io;
  ownership& w;
  const key_registry& keys;
  rate_limiter limiter;
  api_metrics& metrics;
  http_detail::tcp::acceptor acceptor;
  boost::asio::thread_pool blocking;
  redis_pool redis;
  kafka_probe kafka;
  http_detail::peer_connections peers;  // forwarding's
  // Sessions open now, and connections being answered 503; each at most cfg.connections_max.
  http_detail::shared_count connections = std::make_shared<std::atomic<std::size_t>>(0);
  http_detail::shared_count refusals = std::make_shared<std::atomic<std::size_t>>(0);
  log_rate_limit failure_lines;
  std::unique_ptr<http_detail::ssl::context> tls;  // set with CREDITS_TLS_CERT_FILE/KEY_FILE: every connection is TLS

  impl(const config& c, boost::asio::io_context& i, ownership& wr, const key_registry& k, api_metrics& m);

  // Per-connection state: the caller's random source for new ids, and whether the router recognised the
  // current request's path as an API route (its metrics label, see route_label).
  struct session_state {
    std::mt19937_64 rng{std::random_device{}()};
    bool api_route = false;
  };

  // Answers (http_server.cpp): the one way a status and a JSON body become a response.
  static response make(unsigned status, const nlohmann::json& body, const request& req);
  static response reject(const rejection& r, const request& req);
  static response reject(http_error code, const std::string& message, const request& req,
                         const nlohmann::json& details = nullptr);

  // Server and sessions (http_server.cpp).
  awaitable<void> accept_loop();
  awaitable<void> session(http_detail::tcp::socket socket);
  template <class Stream>
  awaitable<void> serve(Stream& stream);
  std::optional<response> unread_answer(const boost::system::error_code& ec) const;
  awaitable<void> refuse(http_detail::tcp::socket socket);
  awaitable<response> handle(const request& req, session_state& s);
  awaitable<response> route(const request& req, session_state& s, const std::string& request_id);
  std::variant<api_key, response> admit(const request& req, bool is_command);
  response health(const request& req);
  awaitable<response> readiness(const request& req);
  response scrape(const request& req);
  void answered(const request& req, const response& res, const session_state& s,
                std::chrono::steady_clock::time_point started);

  // Commands (http_commands.cpp).
  awaitable<response> command_route(const request& req, std::string_view path, const api_key& key, session_state& s,
                                    const std::string& request_id);
  parsed parse_command(std::string_view path, const nlohmann::json& body, const api_key& key,
                       const random_bits& bits) const;
  static response answer(const command_result& result, const request& req);

  // Forwarding (http_forward.cpp).
  awaitable<response> forward(const request& req, const std::string& account_id);
  request forwarded(const request& req, const std::string& owner) const;

  // Queries (http_queries.cpp).
  awaitable<response> query_route(const request& req, std::string_view path, std::string_view query,
                                  const api_key& key);
  awaitable<response> view_query(const request& req, std::string_view path, std::string_view query, const api_key& key);
  awaitable<response> tenant_route(const request& req, std::string_view path, const list_params& p, const api_key& key);
  awaitable<nlohmann::json> account_body(std::string_view path, const list_params& p,
                                         const read_model::account_view& view);
  awaitable<nlohmann::json> account_report(std::string_view path, const list_params& p,
                                           const read_model::account_view& account);
  awaitable<bool> wait_for_projection(const log_position& target);
  awaitable<bool> projection_behind(const std::optional<log_position>& target);

  // Runs `fn` with a pooled Redis connection on the blocking pool (not a coroutine, as offload).
  template <class R, class F>
  auto with_redis(F fn) {
    return http_detail::offload<R>(blocking, [this, fn = std::move(fn)]() -> R {
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

  // with_redis for a query's reads of the view: after `fn`, on the same connection, the view's marker must say
  // the view is ready, or the reads are refused (view_unavailable). A FLUSHALL takes the marker with the data,
  // and Redis runs each command alone, so reads that found nothing because the view had lost its data are
  // followed by a marker that is gone too. One more round trip per read.
  template <class R, class F>
  auto with_view(F fn) {
    return http_detail::offload<R>(blocking, [this, fn = std::move(fn)]() -> R {
      std::unique_ptr<read_model::redis_connection> c;
      std::optional<read_model::view_status> view;
      R r{};
      try {
        c = redis.acquire();
        r = fn(*c);
        view = read_model::read_view_status(*c);
      } catch (...) {
        metrics.redis_error();
        throw;
      }
      redis.release(std::move(c));
      if (view->state != read_model::view_status::state_t::ready) throw http_detail::view_unavailable(view->describe());
      return r;
    });
  }
};

}  // namespace credits::api
