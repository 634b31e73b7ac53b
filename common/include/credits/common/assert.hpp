#pragma once

#include <cstdio>
#include <cstdlib>

// Always-on assertion for money invariants: a ledger that keeps running with a broken invariant does more
// harm than one that stops. Never use it on external input; validate that instead.
#define CREDITS_ASSERT(cond, msg)                                                                              \
  do {                                                                                                         \
    if (!(cond)) {                                                                                             \
      std::fprintf(stderr, "credits: invariant violated at %s:%d: %s (%s)\n", __FILE__, __LINE__, msg, #cond); \
      std::abort();                                                                                            \
    }                                                                                                          \
  } while (false)
