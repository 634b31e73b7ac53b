#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "credits/event_store/event_store.hpp"
#include "credits/event_store/group_membership.hpp"
#include "credits/event_store/partitioner.hpp"
#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

using detail::error_ptr;
using detail::kafka_ptr;
using detail::make_client;
using detail::make_conf;
using detail::message_ptr;
using detail::partition_list_ptr;

std::int32_t count_partitions(rd_kafka_t* rk, const std::string& topic, milliseconds timeout) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  const auto err = rd_kafka_metadata(rk, 0, rkt, &md, static_cast<int>(timeout.count()));
  rd_kafka_topic_destroy(rkt);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka metadata for " + topic + ": " + rd_kafka_err2str(err));
  std::int32_t count = -1;
  if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) count = md->topics[0].partition_cnt;
  const auto topic_err = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
  rd_kafka_metadata_destroy(md);
  if (count <= 0) throw std::runtime_error("kafka topic " + topic + ": " + rd_kafka_err2str(topic_err));
  return count;
}

milliseconds remaining(clock::time_point deadline) {
  return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(deadline - clock::now()));
}

// The errors of a producer whose transactional id a newer producer has claimed (init_transactions).
bool is_fencing(rd_kafka_resp_err_t code) {
  return code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
         code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
}

// Filled by the delivery report callback, one per produced record.
struct delivery_slot {
  bool reported = false;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  position where;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  auto* slot = static_cast<delivery_slot*>(m->_private);
  if (!slot) return;
  slot->reported = true;
  slot->err = m->err;
  slot->where = position{m->partition, m->offset};
}

}  // namespace

struct transactional_producer::impl {
  std::vector<kafka_ptr> ids;  // one client per transactional id, used in turn
  std::size_t next = 0;
};

transactional_producer::transactional_producer(const std::string& brokers, const std::string& transactional_id,
                                               milliseconds transaction_timeout, milliseconds init_timeout,
                                               const settings& extra, std::size_t ids_in_turn)
    : impl_(std::make_unique<impl>()) {
  if (ids_in_turn == 0) throw std::invalid_argument("transactional_producer: ids_in_turn must be at least 1");
  // A broker that is still starting answers nothing for a while: retry for as long as the caller allows.
  const auto deadline = clock::now() + init_timeout;
  for (std::size_t i = 0; i < ids_in_turn; ++i) {
    auto conf = make_conf(brokers,
                          {{"transactional.id", i == 0 ? transactional_id : transactional_id + "." + std::to_string(i)},
                           {"enable.idempotence", "true"},
                           {"acks", "all"},
                           {"transaction.timeout.ms", std::to_string(transaction_timeout.count())},
                           // Same key to partition mapping as the Java clients.
                           {"partitioner", librdkafka_partitioner},
                           // The writer already batches a whole group commit; do not wait for more.
                           {"linger.ms", "0"}},
                          extra);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), on_delivery);
    auto rk = make_client(RD_KAFKA_PRODUCER, std::move(conf));
    for (;;) {
      error_ptr err(rd_kafka_init_transactions(rk.get(), static_cast<int>(transaction_timeout.count())));
      if (!err) break;
      if (!rd_kafka_error_is_retriable(err.get()) || remaining(deadline).count() == 0)
        throw std::runtime_error(std::string("kafka init_transactions: ") + rd_kafka_error_string(err.get()));
    }
    impl_->ids.push_back(std::move(rk));
  }
}

transactional_producer::~transactional_producer() = default;

std::int32_t transactional_producer::partition_count(const std::string& topic, milliseconds timeout) {
  return count_partitions(impl_->ids.front().get(), topic, timeout);
}

append_result transactional_producer::append(std::span<const record> records, milliseconds timeout) {
  rd_kafka_t* rk = impl_->ids[impl_->next].get();
  impl_->next = (impl_->next + 1) % impl_->ids.size();
  const auto deadline = clock::now() + timeout;
  append_result result;
  auto fail = [&](append_status status, const rd_kafka_error_t* e, const std::string& what) {
    result.status = status;
    result.error = what + (e ? std::string(": ") + rd_kafka_error_string(e) : std::string());
    if (e && rd_kafka_error_is_fatal(e)) result.producer_lost = true;
    if (e && is_fencing(rd_kafka_error_code(e))) result.fenced = result.producer_lost = true;
    return result;
  };
  // Aborting is only safe to report as "not in the log" if the abort itself succeeded.
  auto abort = [&](const std::string& what) {
    error_ptr abort_err(rd_kafka_abort_transaction(rk, static_cast<int>(remaining(deadline).count())));
    if (abort_err) {
      auto r = fail(append_status::unknown, abort_err.get(), what + "; abort failed");
      r.producer_lost = true;
      return r;
    }
    result.status = append_status::aborted;
    result.error = what;
    return result;
  };

  if (error_ptr err{rd_kafka_begin_transaction(rk)}) {
    auto r = fail(append_status::aborted, err.get(), "begin_transaction");
    r.producer_lost = true;  // a producer that cannot begin is in a state we do not try to repair
    return r;
  }

  std::vector<delivery_slot> slots(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    for (;;) {
      // producev takes ownership of the headers only when it succeeds.
      std::unique_ptr<rd_kafka_headers_t, decltype(&rd_kafka_headers_destroy)> headers(
          rd_kafka_headers_new(r.headers.size()), &rd_kafka_headers_destroy);
      for (const auto& [name, value] : r.headers)
        rd_kafka_header_add(headers.get(), name.data(), static_cast<ssize_t>(name.size()), value.data(),
                            static_cast<ssize_t>(value.size()));
      const auto err = rd_kafka_producev(
          rk, RD_KAFKA_V_TOPIC(r.topic.c_str()), RD_KAFKA_V_KEY(r.key.data(), r.key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(r.value.data()), r.value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_OPAQUE(&slots[i]), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        (void)headers.release();
        break;
      }
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && remaining(deadline).count() > 0) {
        rd_kafka_poll(rk, 5);
        continue;
      }
      return abort(std::string("produce: ") + rd_kafka_err2str(err));
    }
  }

  for (;;) {
    error_ptr err(rd_kafka_commit_transaction(rk, static_cast<int>(remaining(deadline).count())));
    if (!err) break;
    if (rd_kafka_error_is_fatal(err.get())) return fail(append_status::unknown, err.get(), "commit_transaction");
    if (rd_kafka_error_txn_requires_abort(err.get()))
      return abort(std::string("commit_transaction: ") + rd_kafka_error_string(err.get()));
    if (rd_kafka_error_is_retriable(err.get()) && remaining(deadline).count() > 0) continue;
    // Timed out while committing: the coordinator may still commit it. Only a new producer (whose
    // init_transactions completes or aborts it) and a read of the log can tell.
    auto r = fail(append_status::unknown, err.get(), "commit_transaction");
    r.producer_lost = true;
    return r;
  }

  // The commit flushed every record; serve the delivery reports that carry their offsets.
  rd_kafka_poll(rk, 0);
  for (auto& slot : slots) {
    while (!slot.reported && remaining(deadline).count() > 0) rd_kafka_poll(rk, 5);
    if (!slot.reported || slot.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Committed, so the records are in the log; only their offsets are unknown to us.
      result.status = append_status::unknown;
      result.error = "committed without a delivery report";
      result.producer_lost = true;
      return result;
    }
    result.positions.push_back(slot.where);
  }
  result.status = append_status::committed;
  return result;
}

struct consumer::impl {
  kafka_ptr rk;
};

consumer::consumer(const std::string& brokers, bool report_end_of_partition, const settings& extra)
    : impl_(std::make_unique<impl>()) {
  auto conf = make_conf(brokers,
                        {{"group.id", "credits-reader"},  // required by librdkafka; never joined or committed
                         {"enable.auto.commit", "false"},
                         {"enable.auto.offset.store", "false"},
                         {"isolation.level", "read_committed"},
                         {"enable.partition.eof", report_end_of_partition ? "true" : "false"},
                         {"auto.offset.reset", "earliest"}},
                        extra);
  impl_->rk = make_client(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(impl_->rk.get());
}

consumer::~consumer() {
  if (impl_ && impl_->rk) rd_kafka_consumer_close(impl_->rk.get());
}

std::int32_t consumer::partition_count(const std::string& topic, milliseconds timeout) {
  return count_partitions(impl_->rk.get(), topic, timeout);
}

void consumer::assign(const std::vector<start_point>& from) {
  partition_list_ptr list(rd_kafka_topic_partition_list_new(static_cast<int>(from.size())));
  for (const auto& p : from)
    rd_kafka_topic_partition_list_add(list.get(), p.topic.c_str(), p.partition)->offset =
        p.offset <= 0 ? RD_KAFKA_OFFSET_BEGINNING : p.offset;
  const auto err = rd_kafka_assign(impl_->rk.get(), list.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka assign: ") + rd_kafka_err2str(err));
}

std::vector<message> consumer::poll(std::size_t max, milliseconds timeout,
                                    const std::function<void(const std::string&, std::int32_t)>& on_end) {
  std::vector<message> out;
  int wait_ms = static_cast<int>(timeout.count());
  while (out.size() < max) {
    message_ptr m(rd_kafka_consumer_poll(impl_->rk.get(), wait_ms));
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

// ---- group membership -----------------------------------------------------------------------------------------

namespace credits::store {
namespace {

constexpr milliseconds membership_poll_interval{100};  // how quickly the thread notices stop()

struct queue_deleter {
  void operator()(rd_kafka_queue_t* q) const { rd_kafka_queue_destroy(q); }
};
using queue_ptr = std::unique_ptr<rd_kafka_queue_t, queue_deleter>;

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
  std::unique_ptr<rd_kafka_AdminOptions_t, decltype(&rd_kafka_AdminOptions_destroy)> options(
      rd_kafka_AdminOptions_new(impl_->rk.get(), RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS),
      &rd_kafka_AdminOptions_destroy);
  char err[512];
  if (rd_kafka_AdminOptions_set_request_timeout(options.get(), static_cast<int>(timeout.count()), err, sizeof err))
    throw std::runtime_error(std::string("kafka admin options: ") + err);
  const char* groups[] = {group_id.c_str()};
  rd_kafka_DescribeConsumerGroups(impl_->rk.get(), groups, 1, options.get(), impl_->results.get());
  std::unique_ptr<rd_kafka_event_t, decltype(&rd_kafka_event_destroy)> event(
      rd_kafka_queue_poll(impl_->results.get(), static_cast<int>(timeout.count()) + 1000), &rd_kafka_event_destroy);
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
