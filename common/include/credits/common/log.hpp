#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "credits/common/events.hpp"  // time_ms

// Structured logs: one JSON object per line on stderr, so a log shipper can index the fields without
// parsing prose. Every line carries ts, level, component and msg first, then the caller's fields:
//   {"ts":"2026-11-29T19:50:01.123Z","level":"warn","component":"credits-api","msg":"...","requestId":"req_1"}
// The message stays a readable sentence; the fields carry what a machine would filter on (request id,
// account id, log position, batch size).
namespace credits {

enum class log_level { debug, info, warn, error };

std::string_view to_string(log_level level);

// One field's value: text, a whole number, a real number or a flag. Holds a view of text values, so a
// log_value must not outlive the string it was made from (fields are built and written in one statement).
class log_value {
 public:
  log_value(std::string_view text) : kind_(kind::text), text_(text) {}
  log_value(const char* text) : kind_(kind::text), text_(text) {}
  log_value(const std::string& text) : kind_(kind::text), text_(text) {}
  log_value(bool flag) : kind_(kind::flag), unsigned_(flag ? 1 : 0) {}
  log_value(double real) : kind_(kind::real), real_(real) {}
  template <std::signed_integral T>
  log_value(T n) : kind_(kind::signed_number), signed_(n) {}
  template <std::unsigned_integral T>
    requires(!std::same_as<T, bool>)
  log_value(T n) : kind_(kind::unsigned_number), unsigned_(n) {}

  // Appends the value as JSON (text quoted and escaped; bytes that are not UTF-8 become U+FFFD).
  void append_json(std::string& out) const;

 private:
  enum class kind { text, signed_number, unsigned_number, real, flag };
  kind kind_;
  std::string_view text_;
  std::int64_t signed_ = 0;
  std::uint64_t unsigned_ = 0;
  double real_ = 0;
};

struct log_field {
  std::string_view key;
  log_value value;
};

// The line for one log record, ending in '\n'. Pure: the time is given. Fields named like the fixed keys
// (ts, level, component, msg) are left out, so every line has each key once.
std::string format_log_line(time_ms ts, log_level level, std::string_view component, std::string_view msg,
                            std::span<const log_field> fields);

// Formats with the current time and writes the line to stderr in one write, so lines from several threads
// do not interleave.
void write_log(log_level level, std::string_view component, std::string_view msg, std::span<const log_field> fields);
inline void write_log(log_level level, std::string_view component, std::string_view msg,
                      std::initializer_list<log_field> fields = {}) {
  write_log(level, component, msg, std::span<const log_field>(fields.begin(), fields.size()));
}

// Lets at most `lines_max` lines through per second of wall-clock time and counts the rest, so that a burst of
// failures (every request answered 503 while Kafka is down) cannot flood the log. Thread-safe without a lock;
// two threads crossing into a new second together may let a line or two more through, which is harmless.
class log_rate_limit {
 public:
  explicit log_rate_limit(std::uint32_t lines_max) : lines_max_(lines_max) {}

  // Whether a line may be written at `now`. When it may, `dropped` is set to the number of lines refused since
  // the last one let through (to be reported in that line).
  bool admit(time_ms now, std::uint64_t& dropped);

 private:
  const std::uint32_t lines_max_;
  std::atomic<std::int64_t> second_{-1};
  std::atomic<std::uint32_t> used_{0};
  std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace credits
