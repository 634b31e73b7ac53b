#include "credits/bench/args.hpp"

#include <cstdlib>
#include <stdexcept>

namespace credits::bench {

long number(const std::string& option, const char* text, long min, long max) {
  char* end = nullptr;
  const long n = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || n < min || n > max)
    throw std::invalid_argument(option + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) +
                                "]");
  return n;
}

}  // namespace credits::bench
