#include "credits/common/log.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "credits/common/clock.hpp"

namespace credits {
namespace {

void append_string(std::string& out, std::string_view s) {
  // nlohmann's dump escapes quotes, backslashes and control characters, and (with `replace`) turns bytes that
  // are not UTF-8 into U+FFFD, so a line is always valid JSON whatever the message quotes.
  out += nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool reserved(std::string_view key) { return key == "ts" || key == "level" || key == "component" || key == "msg"; }

}  // namespace

std::string_view to_string(log_level level) {
  switch (level) {
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warn:
      return "warn";
    case log_level::error:
      return "error";
  }
  return "info";
}

void log_value::append_json(std::string& out) const {
  switch (kind_) {
    case kind::text:
      append_string(out, text_);
      return;
    case kind::signed_number:
      out += std::to_string(signed_);
      return;
    case kind::unsigned_number:
      out += std::to_string(unsigned_);
      return;
    case kind::flag:
      out += unsigned_ ? "true" : "false";
      return;
    case kind::real:
      // JSON has no NaN or infinity.
      out += std::isfinite(real_) ? nlohmann::json(real_).dump() : std::string("null");
      return;
  }
}

std::string format_log_line(time_ms ts, log_level level, std::string_view component, std::string_view msg,
                            std::span<const log_field> fields) {
  std::string out;
  out.reserve(96 + msg.size() + 32 * fields.size());
  out += "{\"ts\":\"";
  out += format_time(ts);
  out += "\",\"level\":\"";
  out += to_string(level);
  out += "\",\"component\":";
  append_string(out, component);
  out += ",\"msg\":";
  append_string(out, msg);
  for (const auto& f : fields) {
    if (reserved(f.key)) continue;
    out += ',';
    append_string(out, f.key);
    out += ':';
    f.value.append_json(out);
  }
  out += "}\n";
  return out;
}

bool log_rate_limit::admit(time_ms now, std::uint64_t& dropped) {
  const std::int64_t second = now / 1000;
  auto current = second_.load(std::memory_order_relaxed);
  if (second > current && second_.compare_exchange_strong(current, second, std::memory_order_relaxed))
    used_.store(0, std::memory_order_relaxed);
  if (used_.fetch_add(1, std::memory_order_relaxed) < lines_max_) {
    dropped = dropped_.exchange(0, std::memory_order_relaxed);
    return true;
  }
  dropped_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void write_log(log_level level, std::string_view component, std::string_view msg, std::span<const log_field> fields) {
  const auto line = format_log_line(wall_clock_ms(), level, component, msg, fields);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace credits
