#include <algorithm>
#include <set>
#include <stdexcept>

#include "credits/event_store/event_store.hpp"
#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

milliseconds remaining(clock::time_point deadline) {
  return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(deadline - clock::now()));
}

}  // namespace

struct consumer::impl {
  detail::kafka_ptr rk;
};

consumer::consumer(const std::string& brokers, bool report_end_of_partition, const settings& extra)
    : impl_(std::make_unique<impl>()) {
  impl_->rk = detail::make_assigned_consumer(brokers, "credits-reader", report_end_of_partition, extra);
}

consumer::~consumer() {
  if (impl_ && impl_->rk) rd_kafka_consumer_close(impl_->rk.get());
}

std::int32_t consumer::partition_count(const std::string& topic, milliseconds timeout) {
  return detail::partition_count(impl_->rk.get(), topic, timeout);
}

void consumer::assign(const std::vector<start_point>& from) { detail::assign(impl_->rk.get(), from); }

std::vector<message> consumer::poll(std::size_t max, milliseconds timeout,
                                    const std::function<void(const std::string&, std::int32_t)>& on_end) {
  std::vector<message> out;
  int wait_ms = static_cast<int>(timeout.count());
  while (out.size() < max) {
    const detail::message_ptr m(rd_kafka_consumer_poll(impl_->rk.get(), wait_ms));
    if (!m) break;
    wait_ms = 0;  // only the first message is waited for
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (on_end) on_end(rd_kafka_topic_name(m->rkt), m->partition);
      continue;
    }
    if (detail::is_record(m.get())) out.push_back(detail::message_of(m.get()));
  }
  return out;
}

std::int64_t consumer::lag() {
  std::int64_t behind = 0;
  for (const auto& p : lag_by_partition()) behind += p.offsets;
  return behind;
}

std::vector<consumer::partition_lag> consumer::lag_by_partition() { return detail::assignment_lag(impl_->rk.get()); }

std::optional<message> consumer::read_at(const std::string& topic, std::int32_t partition, std::int64_t offset,
                                         milliseconds timeout) {
  assign({{topic, partition, offset}});
  const auto deadline = clock::now() + timeout;
  while (remaining(deadline).count() > 0) {
    for (auto& m : poll(1, std::min(remaining(deadline), milliseconds(100))))
      if (m.topic == topic && m.partition == partition && m.offset == offset) return std::move(m);
  }
  return std::nullopt;
}

void read_to_end(const std::string& brokers, const std::vector<std::string>& topics,
                 const std::function<void(const message&)>& on_message, milliseconds timeout, const start_offsets& from,
                 const std::vector<std::int32_t>& only_partitions) {
  consumer c(brokers, true);
  const auto deadline = clock::now() + timeout;
  std::vector<start_point> all;
  for (const auto& topic : topics) {
    const auto n = c.partition_count(topic, timeout);
    const auto known = from.find(topic);
    for (std::int32_t p = 0; p < n; ++p) {
      if (!only_partitions.empty() &&
          std::find(only_partitions.begin(), only_partitions.end(), p) == only_partitions.end())
        continue;
      const bool have = known != from.end() && static_cast<std::size_t>(p) < known->second.size();
      all.push_back({topic, p, have ? known->second[static_cast<std::size_t>(p)] : 0});
    }
  }
  c.assign(all);
  std::set<std::pair<std::string, std::int32_t>> open;
  for (const auto& p : all) open.emplace(p.topic, p.partition);
  while (!open.empty()) {
    if (remaining(deadline).count() == 0)
      throw std::runtime_error("reading the log: " + std::to_string(open.size()) +
                               " partitions not read to the end in time");
    for (const auto& m :
         c.poll(10'000, milliseconds(100), [&](const std::string& topic, std::int32_t p) { open.erase({topic, p}); }))
      on_message(m);
  }
}

}  // namespace credits::store
