#include "credits/common/clock.hpp"

#include <chrono>

namespace credits {

time_ms wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace credits
