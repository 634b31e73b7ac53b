#include <prometheus/exposer.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <thread>

#include "credits/common/log.hpp"
#include "credits/projector/operations.hpp"
#include "credits/projector/projector.hpp"

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

constexpr std::string_view component = "credits-projector";

using credits::log_level;
using credits::write_log;

// Serves /metrics on the configured address from civetweb's thread (prometheus-cpp-pull). A port that cannot
// be bound is logged and the projector runs on without metrics: keeping the read model current matters more.
std::unique_ptr<prometheus::Exposer> serve_metrics(const credits::projector_config& config,
                                                   const credits::projector& projector) {
  if (config.metrics_port == 0) return nullptr;
  const auto& host = config.metrics_address;
  const auto bind =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(config.metrics_port);
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(bind, 1);
    exposer->RegisterCollectable(projector.metrics_registry());
    write_log(log_level::info, component, "metrics at http://" + bind + "/metrics",
              {{"address", host}, {"port", config.metrics_port}});
    return exposer;
  } catch (const std::exception& e) {
    write_log(log_level::error, component,
              "metrics not served: cannot listen on " + bind + ": " + e.what() + "; running without them",
              {{"address", host}, {"port", config.metrics_port}});
    return nullptr;
  }
}

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
        write_log(log_level::error, component, e.what());
        return 1;
      }
      write_log(log_level::warn, component, std::string("not ready, retrying: ") + e.what());
      std::this_thread::sleep_for(startup_retry_interval);
    }
  }
  auto& projector = *started;
  write_log(log_level::info, component,
            "kafka " + config.brokers + ", redis " + config.redis_host + ":" + std::to_string(config.redis_port) +
                " db " + std::to_string(config.redis_db) + "; dead letters to " + credits::dead_letter_topic(config) +
                (!config.group_id.empty() ? "; member " + projector.instance_id() + " of group " + config.group_id +
                                                " (partitions as the group assigns them)"
                 : projector.view_ready()
                     ? "; view " + projector.view_id() + ", resuming at " + credits::describe(projector.resume_points())
                     : "; the view is being rebuilt from the log first"));
  const auto exposer = serve_metrics(config, projector);
  projector.run(stop_requested);
  const auto& stats = projector.stats();
  write_log(log_level::info, component,
            "stopped after " + std::to_string(stats.applied) + " events applied, " + std::to_string(stats.replayed) +
                " replayed, " + std::to_string(stats.poison) + " poison (" + std::to_string(stats.dead_lettered) +
                " dead-letter copies)",
            {{"applied", stats.applied},
             {"replayed", stats.replayed},
             {"poison", stats.poison},
             {"deadLettered", stats.dead_lettered}});
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
    write_log(log_level::error, component, "bad configuration: " + *error);
    return 2;
  }
  const auto& config = std::get<credits::projector_config>(parsed);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  // hiredis writes with write(): a Redis that closed the connection (restart, CLIENT KILL, timeout) would kill
  // the process with SIGPIPE instead of failing the write, which the projector answers by reconnecting.
  std::signal(SIGPIPE, SIG_IGN);
  try {
    if (command == "run") return run_projector(config);
    int code = 0;
    if (command == "rebuild") code = credits::ops::rebuild(config, stop_requested, stdout);
    if (command == "verify") code = credits::ops::verify(config, stop_requested, stdout);
    if (command == "export") code = credits::ops::export_log(config, argv[2], stdout);
    if (command == "import") code = credits::ops::import_log(config, argv[2], stdout);
    if (code == credits::ops::exit_stopped) write_log(log_level::info, component, std::string(argv[1]) + " stopped");
    return code;
  } catch (const std::exception& e) {
    write_log(log_level::error, component, e.what());
    return 1;
  }
}
