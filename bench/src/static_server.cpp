// credits-bench-static: the HTTP ceiling. The same Beast session loop as credits-api (command-api/src/http_server.cpp):
// one coroutine per connection on its own strand, the same parser limits and timeouts, the same number of
// I/O threads, one request at a time per connection. It parses each request (body included) and answers a fixed
// JSON body of the size of an add-credits answer, without touching the writer, Kafka or Redis. What the API does
// beyond this is what a ratio to this server measures.
//
// Usage: credits-bench-static [PORT]  (0 or absent: any free port). Prints "port N" on stdout once listening.
// Threads: CREDITS_HTTP_THREADS (default 2, as credits-api). Stops on SIGINT/SIGTERM.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// The API's defaults (command-api/include/credits/api_config.hpp).
constexpr std::size_t body_bytes_max = 64 * 1024;
constexpr std::uint32_t header_bytes_max = 16 * 1024;
constexpr std::size_t read_chunk_bytes = 4096;
constexpr std::chrono::milliseconds idle_timeout_ms{30'000};
constexpr std::chrono::milliseconds request_timeout_ms{10'000};
constexpr std::chrono::milliseconds send_timeout_ms{10'000};
constexpr int http_threads_max = 64;

// Shaped like an add-credits answer (about the same bytes on the wire).
const std::string answer_body =
    R"({"success":true,"balance":1000000000001,"added":1,"transactionId":"txn_0123456789abcdef01234567_0123456789abcdef","accountId":"acc_0123456789abcdef01234567"})";

asio::awaitable<void> session(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(body_bytes_max);
    parser.header_limit(header_bytes_max);
    if (buffer.size() == 0) {
      stream.expires_after(idle_timeout_ms);
      auto [iec, in] =
          co_await stream.async_read_some(buffer.prepare(read_chunk_bytes), asio::as_tuple(asio::use_awaitable));
      if (iec) break;
      buffer.commit(in);
    }
    stream.expires_after(request_timeout_ms);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (ec) break;
    const auto req = parser.release();
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    res.set("X-Request-Id", "req_0123456789abcdef");
    res.set("Credits-Position", "credits.ledger:0:0");
    res.keep_alive(req.keep_alive());
    res.body() = answer_body;
    res.prepare_payload();
    stream.expires_after(send_timeout_ms);
    auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !res.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> accept_loop(asio::io_context& io, tcp::acceptor& acceptor) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) continue;
    auto strand = socket.get_executor();
    asio::co_spawn(strand, session(std::move(socket)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto port = static_cast<unsigned short>(argc > 1 ? std::atoi(argv[1]) : 0);
  int threads = 2;
  if (const char* t = std::getenv("CREDITS_HTTP_THREADS")) threads = std::atoi(t);
  if (threads < 1 || threads > http_threads_max) {
    std::fprintf(stderr, "credits-bench-static: CREDITS_HTTP_THREADS must be in [1, %d]\n", http_threads_max);
    return 2;
  }
  asio::io_context io(threads);
  tcp::acceptor acceptor(io);
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
  std::printf("port %u\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  asio::co_spawn(io, accept_loop(io, acceptor), asio::detached);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return 0;
}
