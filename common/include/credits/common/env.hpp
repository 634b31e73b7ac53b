#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace credits {

// How a program reads its environment: std::getenv in main, a map in tests.
using env_lookup = std::function<const char*(const char*)>;

// Reads CREDITS_* settings, each checked against its bounds: the one reader of the API's, the projector's and
// credits-admin's configuration, so that every program refuses a bad value in the same words. Each method
// leaves `out` as it is when the variable is unset, and throws std::invalid_argument with one sentence naming
// the variable when its value is not allowed. Lives only as long as the configuration is read.
class env_reader {
 public:
  explicit env_reader(const env_lookup& lookup) : lookup_(lookup) {}

  // The variable's value, or nullptr when unset; for settings with a shape of their own.
  const char* raw(const char* name) const { return lookup_(name); }

  // Set but empty is refused: an empty topic or host is always a mistake.
  void text(const char* name, std::string& out) const;

  // An integer in [min, max].
  template <class T>
  void number(const char* name, T& out, std::int64_t min, std::int64_t max) const {
    if (const char* v = lookup_(name)) out = static_cast<T>(bounded(name, v, min, max));
  }

  void millis(const char* name, std::chrono::milliseconds& out, std::int64_t min, std::int64_t max) const {
    if (const char* v = lookup_(name)) out = std::chrono::milliseconds(bounded(name, v, min, max));
  }

 private:
  static std::int64_t bounded(const char* name, const char* value, std::int64_t min, std::int64_t max);

  const env_lookup& lookup_;
};

}  // namespace credits
