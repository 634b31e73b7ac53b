#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "credits/common/ids.hpp"
#include "credits/projector/projector.hpp"

extern char** environ;

// What the projector's integration tests share: fresh ids, polling with a deadline, a projector on a thread, a
// credits-projector process to kill.
namespace credits::harness {

inline constexpr std::chrono::seconds catch_up_timeout{60};

// As the executables do (projector/src/main.cpp): a Redis connection the server closed must fail its write, not
// end the test process with SIGPIPE (some tests kill the projector's connection on purpose).
inline const bool sigpipe_ignored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

inline std::mt19937_64& rng() {
  static std::mt19937_64 gen{std::random_device{}()};
  return gen;
}

inline std::string fresh_account() { return account_id_from_bits(rng()(), static_cast<std::uint32_t>(rng()())); }

inline std::string hex_suffix() {
  std::ostringstream s;
  s << std::hex << rng()();
  return s.str();
}

// Polls `done` until it holds or the deadline passes; the caller asserts on the result.
template <class F>
bool eventually(F&& done, std::chrono::seconds timeout = catch_up_timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

// A projector on its own thread, stopped and joined on destruction (which, in a group, also leaves it).
class running_projector {
 public:
  explicit running_projector(projector_config config) : projector_(std::move(config)) {
    thread_ = std::thread([this] {
      try {
        projector_.run(stop_);
      } catch (const std::exception& e) {
        error_ = e.what();
      }
    });
  }
  ~running_projector() { stop(); }
  running_projector(const running_projector&) = delete;
  running_projector& operator=(const running_projector&) = delete;

  std::size_t owned() const { return projector_.owned_partitions(); }

  // Stops the thread and returns the projector's counters, which are safe to read only once it has stopped.
  projector_stats stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    EXPECT_EQ(error_, "") << "the projector thread threw";
    return projector_.stats();
  }

 private:
  projector projector_;
  std::atomic<bool> stop_{false};
  std::string error_;
  std::thread thread_;
};

// The CREDITS_* settings that make a credits-projector process fold what `config` names (Kafka, Redis and its
// databases, the topics, the group), with no metrics port; a caller adds or replaces what its test needs.
inline std::map<std::string, std::string> projector_settings(const projector_config& config) {
  return {{"CREDITS_KAFKA_BROKERS", config.brokers},
          {"CREDITS_REDIS_HOST", config.redis_host},
          {"CREDITS_REDIS_PORT", std::to_string(config.redis_port)},
          {"CREDITS_REDIS_DB", std::to_string(config.redis_db)},
          {"CREDITS_REDIS_REBUILD_DB", std::to_string(config.redis_rebuild_db)},
          {"CREDITS_LEDGER_TOPIC", config.ledger_topic},
          {"CREDITS_USAGE_TOPIC", config.usage_topic},
          {"CREDITS_DLQ_TOPIC", config.dlq_topic},
          {"CREDITS_PROJECTOR_METRICS_PORT", "0"},
          {"CREDITS_PROJECTOR_GROUP_ID", config.group_id}};
}

#ifdef CREDITS_PROJECTOR_BINARY
// credits-projector run as a child process (`run`) with the test's environment and `settings` over it, killed with
// SIGKILL on destruction unless it was already: a projector that crashes, or vanishes from its group, mid-work.
class projector_process {
 public:
  explicit projector_process(const std::map<std::string, std::string>& settings) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string_view entry(*e);
      const auto name = std::string(entry.substr(0, entry.find('=')));
      if (!settings.contains(name)) env.emplace_back(entry);
    }
    for (const auto& [k, v] : settings) env.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string path = CREDITS_PROJECTOR_BINARY;
    std::string run = "run";
    char* argv[] = {path.data(), run.data(), nullptr};
    if (posix_spawn(&pid_, path.c_str(), nullptr, nullptr, argv, envp.data()) != 0) pid_ = -1;
  }
  ~projector_process() { kill(); }
  projector_process(const projector_process&) = delete;
  projector_process& operator=(const projector_process&) = delete;

  bool started() const { return pid_ > 0; }

  // SIGKILL, and waits until it is gone. True if the process was still running (it did not exit on its own).
  bool kill() {
    if (pid_ <= 0) return false;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }

 private:
  pid_t pid_ = -1;
};
#endif

}  // namespace credits::harness
