#include <boost/asio/as_tuple.hpp>

#include "http_impl.hpp"

// Commands for an account of another instance's partition: sent on to that instance (ownership::owner_address),
// whose answer is relayed as it is.
// GCC 12 at -O2 reports asio's coroutine frame as freed by a mismatched function in this file's coroutines: it
// inlines the frame's operator new (asio's recycling allocator over aligned_alloc) and pairs it with the class's
// own operator delete, which frees it correctly. A false positive of that compiler; the frames of the same
// coroutines were not flagged while they lived in one file with the rest of the server.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace credits::api {
namespace {

using namespace http_detail;

// The header a forwarded command carries (the forwarder's address): a command is forwarded at most once.
constexpr std::string_view forwarded_by_header = "Credits-Forwarded-By";
// An owner's answer to a forwarded command: far above any answer the API gives.
constexpr std::size_t forwarded_answer_bytes_max = 1024 * 1024;
// Forwarding keeps connections to the owners open between commands: at most this many idle ones per owner,
// each for at most this long (well under the owner's own CREDITS_IDLE_TIMEOUT_MS default of 30 s, so that an
// owner seldom closes one just as it is reused).
constexpr std::size_t forward_idle_connections_max = 32;
constexpr std::chrono::milliseconds forward_idle_ms{10'000};

}  // namespace

namespace http_detail {

std::optional<beast::tcp_stream> peer_connections::take(const std::string& address) {
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

void peer_connections::give_back(const std::string& address, beast::tcp_stream stream) {
  std::lock_guard lock(mutex_);
  auto& idle = idle_[address];
  if (idle.size() < forward_idle_connections_max) idle.push_back({std::move(stream), std::chrono::steady_clock::now()});
}

}  // namespace http_detail

// The request as the owner is sent it: the client's, with the hop-by-hop headers the connection to the owner
// sets itself, and the forwarder's mark.
http_api::impl::request http_api::impl::forwarded(const request& req, const std::string& owner) const {
  request out{req.method(), req.target(), 11};
  for (const auto& field : req)
    if (field.name() != http::field::host && field.name() != http::field::connection &&
        field.name() != http::field::content_length && field.name() != http::field::transfer_encoding)
      out.insert(field.name_string(), field.value());
  out.set(http::field::host, owner);
  out.set(forwarded_by_header, cfg.advertised_address);
  out.keep_alive(true);
  out.body() = req.body();
  out.prepare_payload();
  return out;
}

// Sends a command for an account of another instance's partition to that instance and relays its answer.
// Forwarded once at most: an instance that is sent a command it does not own (the partition moved on the
// way) answers 503, as does a failure to reach the owner; the client retries, with the same Idempotency-Key
// if the owner may have taken the command.
asio::awaitable<response> http_api::impl::forward(const request& req, const std::string& account_id) {
  const auto moving = [](const request& r) { return answer(elsewhere{}, r); };  // the owner cannot be reached
  if (!req[forwarded_by_header].empty()) co_return moving(req);
  const auto partition = w.partition_of_account(account_id);
  auto lookup = offload<std::optional<std::string>>(blocking, [this, partition] { return w.owner_address(partition); });
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
    auto [resolve_error, endpoints] = co_await resolver.async_resolve(owner->substr(0, colon), owner->substr(colon + 1),
                                                                      asio::as_tuple(asio::use_awaitable));
    if (resolve_error) co_return moving(req);
    auto [connect_error, endpoint] = co_await stream.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
    if (connect_error) co_return moving(req);
  }

  const request out = forwarded(req, *owner);
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

}  // namespace credits::api
