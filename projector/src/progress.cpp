#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "credits/projector/operations.hpp"

namespace credits::ops {
namespace {

using clock = std::chrono::steady_clock;

// A terminal redraws the bar this often; more would only cost time.
constexpr std::chrono::milliseconds bar_interval_ms{200};

std::string duration_text(double seconds) {
  const auto s = static_cast<long long>(std::llround(std::max(0.0, seconds)));
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s / 60 % 60);
  return buf;
}

struct figures {
  double fraction = 0;  // 0..1
  double rate = 0;      // per second
  std::string eta;
};

figures figure(std::uint64_t done, std::uint64_t total, double elapsed_s) {
  figures f;
  f.fraction = total == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  f.rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0.0;
  if (done >= total)
    f.eta = "0s";
  else if (f.rate > 0)
    f.eta = duration_text(static_cast<double>(total - done) / f.rate);
  else
    f.eta = "?";
  return f;
}

}  // namespace

std::string progress_bar(std::uint64_t done, std::uint64_t total, double elapsed_s, std::size_t width) {
  const auto f = figure(done, total, elapsed_s);
  const auto filled = static_cast<std::size_t>(f.fraction * static_cast<double>(width));
  char tail[160];
  std::snprintf(tail, sizeof tail, "] %3.0f%%  %llu/%llu events  %.0f events/s  ETA %s", std::floor(f.fraction * 100),
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total), f.rate, f.eta.c_str());
  return "[" + std::string(filled, '#') + std::string(width - filled, '-') + tail;
}

std::string progress_line(std::uint64_t done, std::uint64_t total, double elapsed_s) {
  const auto f = figure(done, total, elapsed_s);
  char buf[160];
  std::snprintf(buf, sizeof buf, "%llu/%llu events (%.0f%%), %.0f events/s, ETA %s",
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                std::floor(f.fraction * 100), f.rate, f.eta.c_str());
  return buf;
}

progress_reporter::progress_reporter(std::FILE* to, std::string label, std::chrono::milliseconds line_interval)
    : to_(to),
      label_(std::move(label)),
      terminal_(isatty(fileno(to)) == 1),
      interval_(terminal_ ? bar_interval_ms : line_interval),
      started_(clock::now()),
      last_(started_) {}

void progress_reporter::update(std::uint64_t done, std::uint64_t total) {
  if (clock::now() - last_ < interval_) return;
  draw(done, total);
}

void progress_reporter::finish(std::uint64_t done, std::uint64_t total) {
  draw(done, total);
  if (terminal_) std::fputc('\n', to_);
  std::fflush(to_);
}

void progress_reporter::draw(std::uint64_t done, std::uint64_t total) {
  last_ = clock::now();
  const double elapsed = std::chrono::duration<double>(last_ - started_).count();
  constexpr std::size_t bar_width = 30;
  if (terminal_)
    std::fprintf(to_, "\r%s %s\033[K", label_.c_str(), progress_bar(done, total, elapsed, bar_width).c_str());
  else
    std::fprintf(to_, "%s: %s\n", label_.c_str(), progress_line(done, total, elapsed).c_str());
  std::fflush(to_);
}

}  // namespace credits::ops
