#pragma once

#include <cstdio>
#include <cstdlib>

// A failed property in a fuzz target: print why and abort, so libFuzzer saves the input as a crash.
#define FUZZ_CHECK(cond, msg)                                                                              \
  do {                                                                                                     \
    if (!(cond)) {                                                                                         \
      std::fprintf(stderr, "fuzz: property violated at %s:%d: %s (%s)\n", __FILE__, __LINE__, msg, #cond); \
      std::abort();                                                                                        \
    }                                                                                                      \
  } while (false)
