#include "credits/event_store/consumer_group_member.hpp"

#include <librdkafka/rdkafka.h>

#include <stdexcept>

#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

using std::chrono::milliseconds;

using detail::message_ptr;
using detail::partition_list_ptr;

std::vector<topic_partition> partitions_of(const rd_kafka_topic_partition_list_t* list) {
  std::vector<topic_partition> out;
  if (!list) return out;
  for (int i = 0; i < list->cnt; ++i) out.push_back({list->elems[i].topic, list->elems[i].partition});
  return out;
}

}  // namespace

struct consumer_group_member::impl {
  callbacks on_rebalance;
  detail::kafka_ptr rk;
  std::uint64_t rebalances = 0;  // bumped by every callback, so poll() can tell a batch spans one

  // librdkafka calls this from inside rd_kafka_consumer_poll (or rd_kafka_consumer_close), on the thread that
  // polls. Nothing may throw through librdkafka's C frames: the callbacks are noexcept by contract, and a
  // failing assign is left to librdkafka, which reports it through poll as a consumer error.
  static void rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* list, void* opaque) {
    auto& self = *static_cast<impl*>(opaque);
    ++self.rebalances;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      const auto from = self.on_rebalance.on_assigned(partitions_of(list));
      if (!from) {
        // Nothing is fetched until the caller knows where to start (assign()); the group still counts these
        // partitions as this member's. Empty rather than null keeps librdkafka's join state, as it asks.
        partition_list_ptr none(rd_kafka_topic_partition_list_new(0));
        rd_kafka_assign(rk, none.get());
        return;
      }
      for (const auto& p : *from)
        if (auto* e = rd_kafka_topic_partition_list_find(list, p.topic.c_str(), p.partition))
          e->offset = p.offset <= 0 ? RD_KAFKA_OFFSET_BEGINNING : p.offset;
      rd_kafka_assign(rk, list);
      return;
    }
    // Revocation, a lost assignment (no poll within max.poll.interval.ms), or an error: give everything up.
    self.on_rebalance.on_revoked(partitions_of(list));
    rd_kafka_assign(rk, nullptr);
  }
};

consumer_group_member::consumer_group_member(const std::string& brokers, const std::string& group_id,
                                             const std::vector<std::string>& topics, callbacks on_rebalance,
                                             const group_limits& limits, const settings& extra)
    : impl_(std::make_unique<impl>()) {
  impl_->on_rebalance = std::move(on_rebalance);
  // Heartbeats at a third of the session timeout, as Kafka's own clients default to.
  constexpr std::int64_t heartbeats_per_session = 3;
  const settings base{
      {"group.id", group_id},
      // Positions live with the caller (in Redis for the projector), never in Kafka.
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"isolation.level", "read_committed"},
      {"enable.partition.eof", "false"},
      {"auto.offset.reset", "earliest"},
      // Eager: every member gives up everything, then the leader deals out the whole set again. Round robin
      // over all partitions of both topics, so members get equal counts even when a topic has fewer
      // partitions than there are members.
      {"partition.assignment.strategy", "roundrobin"},
      {"session.timeout.ms", std::to_string(limits.session_timeout.count())},
      {"heartbeat.interval.ms", std::to_string(limits.session_timeout.count() / heartbeats_per_session)},
      {"max.poll.interval.ms", std::to_string(limits.max_poll_interval.count())},
  };
  auto conf = detail::make_conf(brokers, base, extra);
  rd_kafka_conf_set_rebalance_cb(conf.get(), impl::rebalance);
  rd_kafka_conf_set_opaque(conf.get(), impl_.get());
  impl_->rk = detail::make_client(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_t* rk = impl_->rk.get();
  rd_kafka_poll_set_consumer(rk);
  partition_list_ptr subscription(rd_kafka_topic_partition_list_new(static_cast<int>(topics.size())));
  for (const auto& t : topics) rd_kafka_topic_partition_list_add(subscription.get(), t.c_str(), RD_KAFKA_PARTITION_UA);
  if (const auto e = rd_kafka_subscribe(rk, subscription.get()); e != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka subscribe: ") + rd_kafka_err2str(e));
}

consumer_group_member::~consumer_group_member() {
  // Leaves the group now (running on_revoked), instead of letting the session time out.
  if (impl_ && impl_->rk) rd_kafka_consumer_close(impl_->rk.get());
}

std::vector<message> consumer_group_member::poll(std::size_t max, milliseconds timeout) {
  std::vector<message> out;
  int wait_ms = static_cast<int>(timeout.count());
  while (out.size() < max) {
    const auto rebalances_before = impl_->rebalances;
    message_ptr m(rd_kafka_consumer_poll(impl_->rk.get(), wait_ms));
    // What was read under the previous assignment is dropped: the new one starts where the caller said,
    // which re-reads whatever of it is still owned.
    if (impl_->rebalances != rebalances_before) out.clear();
    if (!m) break;
    wait_ms = 0;  // only the first message is waited for
    if (detail::is_record(m.get())) out.push_back(detail::message_of(m.get()));
  }
  return out;
}

void consumer_group_member::assign(const std::vector<start_point>& from) {
  // A new assignment starts a new fetch version: nothing fetched under the old one is returned by poll().
  detail::assign(impl_->rk.get(), from);
}

std::vector<topic_partition> consumer_group_member::assignment() {
  rd_kafka_topic_partition_list_t* raw = nullptr;
  if (rd_kafka_assignment(impl_->rk.get(), &raw) != RD_KAFKA_RESP_ERR_NO_ERROR || !raw) return {};
  partition_list_ptr assigned(raw);
  return partitions_of(assigned.get());
}

std::int32_t consumer_group_member::partition_count(const std::string& topic, milliseconds timeout) {
  return detail::partition_count(impl_->rk.get(), topic, timeout);
}

std::vector<consumer::partition_lag> consumer_group_member::lag_by_partition() {
  return detail::assignment_lag(impl_->rk.get());
}

}  // namespace credits::store
