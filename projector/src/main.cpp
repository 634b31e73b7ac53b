#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <thread>

#include "credits/operations.hpp"
#include "credits/projector.hpp"

namespace {

// The one mutable global: a signal handler can reach nothing else. Lock-free, so setting it is
// async-signal-safe.
std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_stop_signal(int) { stop_requested.store(true, std::memory_order_relaxed); }

constexpr const char* usage_text =
    "usage: credits-projector [run]        fold the topics into the Redis view until SIGTERM\n"
    "       credits-projector rebuild      build the view afresh beside the live one, then switch to it\n"
    "       credits-projector verify       compare the view with an independent fold of the log\n"
    "       credits-projector export FILE  write both topics to FILE as JSON lines\n"
    "       credits-projector import FILE  write an export into empty topics\n"
    "Configuration: CREDITS_* environment variables (README.md, docs/operations.md).\n";

int run_projector(const credits::projector_config& config) {
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
  auto& projector = *started;
  std::fprintf(stderr, "credits-projector: kafka %s, redis %s:%d db %d; dead letters to %s; resuming at %s\n",
               config.brokers.c_str(), config.redis_host.c_str(), config.redis_port, config.redis_db,
               credits::dead_letter_topic(config).c_str(), credits::describe(projector.resume_points()).c_str());
  projector.run(stop_requested);
  const auto& stats = projector.stats();
  std::fprintf(stderr,
               "credits-projector: stopped after %llu events applied, %llu replayed, %llu poison (%llu dead-letter "
               "copies)\n",
               static_cast<unsigned long long>(stats.applied), static_cast<unsigned long long>(stats.replayed),
               static_cast<unsigned long long>(stats.poison), static_cast<unsigned long long>(stats.dead_lettered));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view command = argc > 1 ? argv[1] : "run";
  const bool takes_file = command == "export" || command == "import";
  const bool known = command == "run" || command == "rebuild" || command == "verify" || takes_file;
  if (!known || argc != (takes_file ? 3 : argc > 1 ? 2 : 1)) {
    std::fputs(usage_text, command == "help" || command == "--help" ? stdout : stderr);
    return command == "help" || command == "--help" ? 0 : 2;
  }
  auto parsed = credits::projector_config_from_env([](const char* name) { return std::getenv(name); });
  if (const auto* error = std::get_if<std::string>(&parsed)) {
    std::fprintf(stderr, "credits-projector: bad configuration: %s\n", error->c_str());
    return 2;
  }
  const auto& config = std::get<credits::projector_config>(parsed);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  try {
    if (command == "run") return run_projector(config);
    int code = 0;
    if (command == "rebuild") code = credits::ops::rebuild(config, stop_requested, stdout);
    if (command == "verify") code = credits::ops::verify(config, stop_requested, stdout);
    if (command == "export") code = credits::ops::export_log(config, argv[2], stdout);
    if (command == "import") code = credits::ops::import_log(config, argv[2], stdout);
    if (code == credits::ops::exit_stopped) std::fprintf(stderr, "credits-projector: %s stopped\n", argv[1]);
    return code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "credits-projector: %s\n", e.what());
    return 1;
  }
}
