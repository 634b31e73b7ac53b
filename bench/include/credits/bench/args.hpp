#pragma once

#include <string>

namespace credits::bench {

// The value of a command-line option that takes an integer in [min, max]; std::invalid_argument naming the
// option otherwise.
long number(const std::string& option, const char* text, long min, long max);

}  // namespace credits::bench
