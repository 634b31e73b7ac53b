#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "credits/http_api.hpp"

int main() {
  using namespace credits;
  api::config cfg;
  try {
    cfg = api::load_config([](const char* name) { return std::getenv(name); });
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "credits-api: bad configuration: %s\n", ex.what());
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
