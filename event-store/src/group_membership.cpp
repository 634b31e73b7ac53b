#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "credits/event_store/group_membership.hpp"
#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

using std::chrono::milliseconds;

using detail::error_ptr;
using detail::kafka_ptr;
using detail::make_client;
using detail::make_conf;
using detail::message_ptr;
using detail::partition_list_ptr;
using detail::queue_ptr;

constexpr milliseconds membership_poll_interval{100};  // how quickly the thread notices stop()

std::vector<std::int32_t> partitions_in(const rd_kafka_topic_partition_list_t* list) {
  std::vector<std::int32_t> out;
  for (int i = 0; i < list->cnt; ++i) out.push_back(list->elems[i].partition);
  return out;
}

}  // namespace

struct group_membership::impl {
  handlers on;
  kafka_ptr rk;
  std::atomic<bool> stopping{false};
  mutable std::mutex mutex;
  std::set<std::int32_t> owned;
  std::thread thread;

  static void rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* partitions,
                        void* opaque) {
    auto* self = static_cast<impl*>(opaque);
    const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE";
    const auto changed = partitions_in(partitions);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      // Nothing is read: start at the end and pause, so the membership fetches no records.
      for (int i = 0; i < partitions->cnt; ++i) partitions->elems[i].offset = RD_KAFKA_OFFSET_END;
      if (cooperative)
        error_ptr(rd_kafka_incremental_assign(rk, partitions));
      else
        rd_kafka_assign(rk, partitions);
      rd_kafka_pause_partitions(rk, partitions);
      {
        std::lock_guard lock(self->mutex);
        self->owned.insert(changed.begin(), changed.end());
      }
      if (!changed.empty()) self->on.assigned(changed);
      return;
    }
    // Revoked, lost, or an assignment error: stop owning them first, then let the group hand them on.
    std::vector<std::int32_t> gone = changed;
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
      std::lock_guard lock(self->mutex);
      gone.assign(self->owned.begin(), self->owned.end());
    }
    if (!gone.empty()) self->on.revoked(gone);
    {
      std::lock_guard lock(self->mutex);
      for (auto p : gone) self->owned.erase(p);
    }
    if (cooperative && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
      error_ptr(rd_kafka_incremental_unassign(rk, partitions));
    else
      rd_kafka_assign(rk, nullptr);
  }
};

group_membership::group_membership(const std::string& brokers, const std::string& group_id, const std::string& topic,
                                   const std::string& member_name, milliseconds session_timeout, handlers h,
                                   const settings& extra)
    : impl_(std::make_unique<impl>()) {
  impl_->on = std::move(h);
  auto conf =
      make_conf(brokers,
                {{"group.id", group_id},
                 {"client.id", member_name},
                 {"partition.assignment.strategy", "cooperative-sticky"},
                 {"session.timeout.ms", std::to_string(session_timeout.count())},
                 {"heartbeat.interval.ms", std::to_string(std::max<std::int64_t>(100, session_timeout.count() / 3))},
                 {"enable.auto.commit", "false"},
                 {"enable.auto.offset.store", "false"},
                 {"enable.partition.eof", "false"},
                 {"auto.offset.reset", "latest"}},
                extra);
  rd_kafka_conf_set_rebalance_cb(conf.get(), &impl::rebalance);
  rd_kafka_conf_set_opaque(conf.get(), impl_.get());
  impl_->rk = make_client(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(impl_->rk.get());
  partition_list_ptr subscription(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(subscription.get(), topic.c_str(), RD_KAFKA_PARTITION_UA);
  if (const auto err = rd_kafka_subscribe(impl_->rk.get(), subscription.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka subscribe: ") + rd_kafka_err2str(err));
  impl_->thread = std::thread([self = impl_.get()] {
    while (!self->stopping.load(std::memory_order_acquire))
      message_ptr(rd_kafka_consumer_poll(self->rk.get(), static_cast<int>(membership_poll_interval.count())));
    rd_kafka_consumer_close(self->rk.get());  // revokes what is owned (the callback runs here) and leaves
  });
}

group_membership::~group_membership() {
  impl_->stopping.store(true, std::memory_order_release);
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::vector<std::int32_t> group_membership::owned() const {
  std::lock_guard lock(impl_->mutex);
  return {impl_->owned.begin(), impl_->owned.end()};
}

struct group_observer::impl {
  kafka_ptr rk;
  queue_ptr results;
};

group_observer::group_observer(const std::string& brokers) : impl_(std::make_unique<impl>()) {
  impl_->rk = make_client(RD_KAFKA_PRODUCER, make_conf(brokers, {}, {}));
  impl_->results.reset(rd_kafka_queue_new(impl_->rk.get()));
}

group_observer::~group_observer() = default;

std::map<std::int32_t, std::string> group_observer::describe(const std::string& group_id, const std::string& topic,
                                                             milliseconds timeout) {
  const detail::admin_options_ptr options(
      rd_kafka_AdminOptions_new(impl_->rk.get(), RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS));
  char err[512];
  if (rd_kafka_AdminOptions_set_request_timeout(options.get(), static_cast<int>(timeout.count()), err, sizeof err))
    throw std::runtime_error(std::string("kafka admin options: ") + err);
  const char* groups[] = {group_id.c_str()};
  rd_kafka_DescribeConsumerGroups(impl_->rk.get(), groups, 1, options.get(), impl_->results.get());
  const detail::event_ptr event(rd_kafka_queue_poll(impl_->results.get(), static_cast<int>(timeout.count()) + 1000));
  if (!event) throw std::runtime_error("kafka describe group " + group_id + ": no answer in time");
  if (rd_kafka_event_error(event.get()))
    throw std::runtime_error("kafka describe group " + group_id + ": " + rd_kafka_event_error_string(event.get()));
  const auto* result = rd_kafka_event_DescribeConsumerGroups_result(event.get());
  if (!result) throw std::runtime_error("kafka describe group " + group_id + ": unexpected answer");
  std::size_t count = 0;
  const auto** descriptions = rd_kafka_DescribeConsumerGroups_result_groups(result, &count);
  std::map<std::int32_t, std::string> owners;
  for (std::size_t g = 0; g < count; ++g) {
    if (const auto* e = rd_kafka_ConsumerGroupDescription_error(descriptions[g]))
      throw std::runtime_error("kafka describe group " + group_id + ": " + rd_kafka_error_string(e));
    const auto members = rd_kafka_ConsumerGroupDescription_member_count(descriptions[g]);
    for (std::size_t m = 0; m < members; ++m) {
      const auto* member = rd_kafka_ConsumerGroupDescription_member(descriptions[g], m);
      const auto* assignment = rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(member));
      if (!assignment) continue;
      for (int i = 0; i < assignment->cnt; ++i)
        if (topic == assignment->elems[i].topic)
          owners[assignment->elems[i].partition] = rd_kafka_MemberDescription_client_id(member);
    }
  }
  return owners;
}

}  // namespace credits::store
