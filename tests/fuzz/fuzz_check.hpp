#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

// A failed property in a fuzz target: print why and abort, so libFuzzer saves the input as a crash.
#define FUZZ_CHECK(cond, msg)                                                                              \
  do {                                                                                                     \
    if (!(cond)) {                                                                                         \
      std::fprintf(stderr, "fuzz: property violated at %s:%d: %s (%s)\n", __FILE__, __LINE__, msg, #cond); \
      std::abort();                                                                                        \
    }                                                                                                      \
  } while (false)

// The lines of a fuzz input that is a log, one record a line, split at '\n' (a last line without one included).
inline std::vector<std::string_view> lines_of(std::string_view input) {
  std::vector<std::string_view> lines;
  for (std::size_t start = 0; start < input.size();) {
    auto end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    lines.push_back(input.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}
