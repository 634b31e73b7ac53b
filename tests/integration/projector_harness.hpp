#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "credits/common/ids.hpp"
#include "credits/projector/projector.hpp"

// What the projector's integration tests share: fresh ids, polling with a deadline, a projector on a thread.
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

}  // namespace credits::harness
