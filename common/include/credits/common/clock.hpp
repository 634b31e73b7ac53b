#pragma once

#include "credits/common/events.hpp"  // time_ms

namespace credits {

// Milliseconds since the Unix epoch by the system clock: the time events carry and logs print. The domain never
// calls it (decide takes `now` from its caller); the adapters stamp commands and log lines with it.
time_ms wall_clock_ms();

}  // namespace credits
