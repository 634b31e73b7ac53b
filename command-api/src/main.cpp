#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "credits/http_api.hpp"

namespace {

// Descriptors besides connections: Kafka's and Redis's sockets, librdkafka's internals, the process's files.
constexpr rlim_t descriptors_spare = 256;

// Each open connection and each connection being refused holds a file descriptor, up to connections_max of
// each. Raises the soft limit (up to the hard one) when it is too low for that; an empty string when it fits,
// else why not. An accept that fails for want of descriptors would otherwise refuse with a reset, not a 503.
std::string reserve_descriptors(std::size_t connections_max) {
  const rlim_t needed = 2 * static_cast<rlim_t>(connections_max) + descriptors_spare;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return {};
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed)
      return "CREDITS_CONNECTIONS_MAX=" + std::to_string(connections_max) + " needs " + std::to_string(needed) +
             " file descriptors, but the hard limit (ulimit -Hn) is " + std::to_string(limit.rlim_max);
    limit.rlim_cur = needed;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return "cannot raise the file descriptor limit to " + std::to_string(needed);
  }
  return {};
}

}  // namespace

int main() {
  using namespace credits;
  api::config cfg;
  try {
    cfg = api::load_config([](const char* name) { return std::getenv(name); });
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "credits-api: bad configuration: %s\n", ex.what());
    return 2;
  }
  if (const auto problem = reserve_descriptors(cfg.connections_max); !problem.empty()) {
    std::fprintf(stderr, "credits-api: bad configuration: %s\n", problem.c_str());
    return 2;
  }
  try {
    api::writer w(cfg, [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
    });
    w.start();

    boost::asio::io_context io(cfg.http_threads);
    api::http_api server(cfg, io, w);
    const auto port = server.listen();
    std::fprintf(stderr, "credits-api: listening on http://%s:%u\n", cfg.http_address.c_str(), port);
    std::fprintf(stderr,
                 "credits-api: limits: %zu connections, 1 request in flight each, body %zu B, headers %zu B, request "
                 "%lld ms, idle %lld ms, send %lld ms, %zu queued commands\n",
                 cfg.connections_max, cfg.body_bytes_max, cfg.header_bytes_max,
                 static_cast<long long>(cfg.request_timeout_ms.count()),
                 static_cast<long long>(cfg.idle_timeout_ms.count()), static_cast<long long>(cfg.send_timeout_ms.count()),
                 cfg.queue_commands_max);

    // On SIGTERM/SIGINT: stop accepting, give open requests the shutdown timeout, then stop.
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    boost::asio::steady_timer deadline(io);
    signals.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      std::fprintf(stderr, "credits-api: shutting down\n");
      server.shutdown();
      deadline.expires_after(cfg.shutdown_timeout_ms);
      deadline.async_wait([&](const boost::system::error_code&) { io.stop(); });
      w.stop();
    });

    std::vector<std::thread> threads;
    for (int i = 1; i < cfg.http_threads; ++i) threads.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& t : threads) t.join();
    w.stop();
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "credits-api: %s\n", ex.what());
    return 1;
  }
  return 0;
}
