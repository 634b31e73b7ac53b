#pragma once

namespace credits::bench {

// Bytes the allocator has handed out and the resident set: the difference of two of these is what a structure
// took. The allocator is the one the process runs with: jemalloc in release builds of credits-api (its
// stats.allocated, found at run time so that this builds without it), glibc's otherwise (mallinfo2, after giving
// back what it can); a sanitizer's allocator answers neither (0).
struct memory {
  double heap_bytes = 0;
  double rss_bytes = 0;
};
memory memory_now();
const char* allocator_name();

}  // namespace credits::bench
