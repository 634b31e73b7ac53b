#include <sys/resource.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>

#include "credits/command_api/http_api.hpp"
#include "credits/common/clock.hpp"
#include "credits/common/log.hpp"

namespace {

constexpr std::string_view component = "credits-api";

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
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
      return "cannot raise the file descriptor limit to " + std::to_string(needed);
  }
  return {};
}

}  // namespace

int main() {
  using namespace credits;
  // The query pool's hiredis connections write with write(): a Redis that closed one would kill the process
  // with SIGPIPE instead of failing that query (Asio's own sockets already send with MSG_NOSIGNAL).
  std::signal(SIGPIPE, SIG_IGN);
  api::config cfg;
  try {
    cfg = api::load_config([](const char* name) { return std::getenv(name); });
  } catch (const std::exception& ex) {
    write_log(log_level::error, component, std::string("bad configuration: ") + ex.what());
    return 2;
  }
  if (const auto problem = reserve_descriptors(cfg.connections_max); !problem.empty()) {
    write_log(log_level::error, component, "bad configuration: " + problem);
    return 2;
  }
  try {
    // The keys first: a key revoked in the log must be refused from the first request on.
    api::key_registry keys(cfg.api_keys);
    api::key_log_follower key_log(cfg, keys);
    key_log.wait_loaded(cfg.startup_timeout_ms);

    api::api_metrics metrics;
    api::ownership w(cfg, wall_clock_ms, metrics);
    w.start();

    boost::asio::io_context io(cfg.http_threads);
    api::http_api server(cfg, io, w, keys, metrics);
    const auto port = server.listen();
    write_log(log_level::info, component,
              "listening on " + std::string(cfg.tls_cert_file.empty() ? "http" : "https") + "://" + cfg.http_address +
                  ":" + std::to_string(port) + " (metrics at /metrics)",
              {{"address", cfg.http_address},
               {"port", port},
               {"tls", !cfg.tls_cert_file.empty()},
               {"accessLog", cfg.access_log}});
    write_log(log_level::info, component,
              "limits: " + std::to_string(cfg.connections_max) + " connections, 1 request in flight each, body " +
                  std::to_string(cfg.body_bytes_max) + " B, headers " + std::to_string(cfg.header_bytes_max) +
                  " B, request " + std::to_string(cfg.request_timeout_ms.count()) + " ms, idle " +
                  std::to_string(cfg.idle_timeout_ms.count()) + " ms, send " +
                  std::to_string(cfg.send_timeout_ms.count()) + " ms, " + std::to_string(cfg.queue_commands_max) +
                  " queued commands");

    // On SIGTERM/SIGINT: stop accepting, give open requests the shutdown timeout, then stop.
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    boost::asio::steady_timer deadline(io);
    signals.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      write_log(log_level::info, component, "shutting down");
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
    write_log(log_level::error, component, ex.what());
    return 1;
  }
  return 0;
}
