#include <chrono>
#include <csignal>
#include <memory>
#include <thread>
#include <cstdio>
#include <cstdlib>

#include "credits/projector.hpp"

namespace {

// The one mutable global: a signal handler can reach nothing else. Lock-free, so setting it is
// async-signal-safe.
std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_stop_signal(int) { stop_requested.store(true, std::memory_order_relaxed); }

}  // namespace

int main() {
  auto parsed = credits::projector_config_from_env([](const char* name) { return std::getenv(name); });
  if (const auto* error = std::get_if<std::string>(&parsed)) {
    std::fprintf(stderr, "credits-projector: bad configuration: %s\n", error->c_str());
    return 2;
  }
  const auto& config = std::get<credits::projector_config>(parsed);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  // Kafka or Redis may still be starting (a fresh `up`, a reboot): keep trying for a bounded time.
  constexpr auto startup_timeout = std::chrono::seconds(120);
  constexpr auto startup_retry_interval = std::chrono::seconds(1);
  const auto deadline = std::chrono::steady_clock::now() + startup_timeout;
  std::unique_ptr<credits::projector> started;
  while (!started) {
    try {
      started = std::make_unique<credits::projector>(config);
    } catch (const std::exception& e) {
      if (std::chrono::steady_clock::now() >= deadline || stop_requested.load()) {
        std::fprintf(stderr, "credits-projector: %s\n", e.what());
        return 1;
      }
      std::fprintf(stderr, "credits-projector: not ready, retrying: %s\n", e.what());
      std::this_thread::sleep_for(startup_retry_interval);
    }
  }
  try {
    auto& projector = *started;
    std::fprintf(stderr, "credits-projector: kafka %s, redis %s:%d; resuming at %s\n", config.brokers.c_str(),
                 config.redis_host.c_str(), config.redis_port, credits::describe(projector.resume_points()).c_str());
    projector.run(stop_requested);
    const auto& stats = projector.stats();
    std::fprintf(stderr, "credits-projector: stopped after %llu events applied, %llu replayed, %llu poison\n",
                 static_cast<unsigned long long>(stats.applied), static_cast<unsigned long long>(stats.replayed),
                 static_cast<unsigned long long>(stats.poison));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "credits-projector: %s\n", e.what());
    return 1;
  }
}
