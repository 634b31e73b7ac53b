#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <ostream>
#include <stdexcept>

#include "credits/admin/admin.hpp"

// credits-admin events void: the one admin command that the API decides (the writer that owns the account's
// partition), so it goes over HTTP with an admin-scope key instead of into Kafka directly.
namespace credits::admin {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

struct endpoint {
  std::string host;
  std::string port;
  std::string base;  // a path prefix, without the trailing slash
};

// http://host[:port][/prefix]; https is refused (put credits-admin where plain HTTP reaches the API).
endpoint parse_url(const std::string& url) {
  constexpr std::string_view scheme = "http://";
  if (!url.starts_with(scheme))
    throw std::invalid_argument("CREDITS_ADMIN_API_URL must start with http:// (got " + url + ")");
  const auto rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  endpoint e;
  e.base = slash == std::string::npos ? "" : rest.substr(slash);
  while (!e.base.empty() && e.base.back() == '/') e.base.pop_back();
  const auto colon = authority.rfind(':');
  e.host = colon == std::string::npos ? authority : authority.substr(0, colon);
  e.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  if (e.host.empty()) throw std::invalid_argument("CREDITS_ADMIN_API_URL has no host: " + url);
  return e;
}

}  // namespace

int void_event(const options& o, const command& c, std::ostream& out, std::ostream& err) {
  if (o.api_key.empty()) {
    err << "credits-admin: set CREDITS_ADMIN_API_KEY to an API key of the admin scope "
           "(credits-admin keys create --tenant T --scope admin)\n";
    return 2;
  }
  const auto e = parse_url(o.api_url);
  nlohmann::json body{{"eventId", c.event_id}, {"reason", c.reason}};
  if (!c.account_id.empty()) body["accountId"] = c.account_id;

  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(o.timeout_ms);
  stream.connect(tcp::resolver(io).resolve(e.host, e.port));
  http::request<http::string_body> req{http::verb::post, e.base + "/v1/admin/events/void", 11};
  req.set(http::field::host, e.host);
  req.set(http::field::content_type, "application/json");
  req.set("X-API-Key", o.api_key);
  req.body() = body.dump();
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);

  const auto answer = nlohmann::json::parse(res.body(), nullptr, false);
  const auto shown = answer.is_discarded() ? res.body() : answer.dump(2);
  if (res.result_int() == 200) {
    out << shown << "\n";
    return 0;
  }
  err << "credits-admin: the API answered " << res.result_int() << ": " << shown << "\n";
  return 1;
}

}  // namespace credits::admin
