#include "credits/common/env.hpp"

#include <charconv>
#include <stdexcept>
#include <string_view>

namespace credits {

void env_reader::text(const char* name, std::string& out) const {
  if (const char* v = lookup_(name)) {
    if (*v == '\0') throw std::invalid_argument(std::string(name) + " is set but empty");
    out = v;
  }
}

std::int64_t env_reader::bounded(const char* name, const char* value, std::int64_t min, std::int64_t max) {
  std::int64_t n = 0;
  const std::string_view s(value);
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc{} || p != s.data() + s.size())
    throw std::invalid_argument(std::string(name) + "=" + value + " is not an integer");
  if (n < min || n > max)
    throw std::invalid_argument(std::string(name) + "=" + value + " is out of range [" + std::to_string(min) + ", " +
                                std::to_string(max) + "]");
  return n;
}

}  // namespace credits
