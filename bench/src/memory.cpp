#include "credits/bench/memory.hpp"

#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>

namespace credits::bench {

using mallctl_fn = int (*)(const char*, void*, std::size_t*, void*, std::size_t);

const char* allocator_name() { return dlsym(RTLD_DEFAULT, "mallctl") != nullptr ? "jemalloc" : "glibc"; }

memory memory_now() {
  double heap = 0;
  if (const auto mallctl = reinterpret_cast<mallctl_fn>(dlsym(RTLD_DEFAULT, "mallctl"))) {
    std::uint64_t epoch = 1;
    std::size_t size = sizeof epoch;
    mallctl("epoch", &epoch, &size, &epoch, size);  // refreshes the statistics
    std::size_t allocated = 0;
    size = sizeof allocated;
    if (mallctl("stats.allocated", &allocated, &size, nullptr, 0) == 0) heap = static_cast<double>(allocated);
  } else {
    malloc_trim(0);
    const auto m = mallinfo2();
    heap = static_cast<double>(m.uordblks + m.hblkhd);
  }
  long pages = 0, resident = 0;
  std::ifstream("/proc/self/statm") >> pages >> resident;
  return {heap, static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE))};
}

}  // namespace credits::bench
