#pragma once

#include <string>

namespace credits::test {

// The value of the first exposition line that starts with `series` followed by a space, or -1.
inline double sample(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

}  // namespace credits::test
