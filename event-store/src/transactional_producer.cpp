#include <algorithm>
#include <stdexcept>

#include "credits/common/assert.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/event_store/partitioner.hpp"
#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

using detail::error_ptr;
using detail::kafka_ptr;

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

// A producer with one transactional id, its older holders fenced and their open Kafka transaction aborted.
// Retries init_transactions while it fails retriably, until `deadline`.
kafka_ptr claim_transactional_id(const std::string& brokers, const std::string& id, milliseconds transaction_timeout,
                                 clock::time_point deadline, const settings& extra) {
  auto conf = detail::make_conf(brokers,
                                {{"transactional.id", id},
                                 {"enable.idempotence", "true"},
                                 {"acks", "all"},
                                 {"transaction.timeout.ms", std::to_string(transaction_timeout.count())},
                                 // Same key to partition mapping as the Java clients.
                                 {"partitioner", librdkafka_partitioner},
                                 // The writer already batches a whole group commit; do not wait for more.
                                 {"linger.ms", "0"}},
                                extra);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), on_delivery);
  auto rk = detail::make_client(RD_KAFKA_PRODUCER, std::move(conf));
  for (;;) {
    error_ptr err(rd_kafka_init_transactions(rk.get(), static_cast<int>(transaction_timeout.count())));
    if (!err) return rk;
    if (!rd_kafka_error_is_retriable(err.get()) || remaining(deadline).count() == 0)
      throw std::runtime_error(std::string("kafka init_transactions: ") + rd_kafka_error_string(err.get()));
  }
}

// One append's Kafka transaction on one producer, step by step: begin, produce, commit, then the positions.
// A step that ends the append returns its result; nullopt means the next step follows. Lives inside one
// append() call, on the writer's thread; the delivery slots it owns must outlive the delivery reports it waits
// for.
class transaction_attempt {
 public:
  transaction_attempt(rd_kafka_t* rk, clock::time_point deadline) : rk_(rk), deadline_(deadline) {}

  std::optional<append_result> begin() {
    if (error_ptr err{rd_kafka_begin_transaction(rk_)}) {
      auto r = fail(append_status::aborted, err.get(), "begin_transaction");
      r.producer_lost = true;  // a producer that cannot begin is in a state we do not try to repair
      return r;
    }
    return std::nullopt;
  }

  std::optional<append_result> produce(std::span<const record> records) {
    slots_.resize(records.size());
    for (std::size_t i = 0; i < records.size(); ++i)
      if (const auto err = produce_one(records[i], slots_[i]); err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return abort(std::string("produce: ") + rd_kafka_err2str(err));
    return std::nullopt;
  }

  std::optional<append_result> commit() {
    for (;;) {
      error_ptr err(rd_kafka_commit_transaction(rk_, static_cast<int>(remaining(deadline_).count())));
      if (!err) return std::nullopt;
      if (rd_kafka_error_is_fatal(err.get())) return fail(append_status::unknown, err.get(), "commit_transaction");
      if (rd_kafka_error_txn_requires_abort(err.get()))
        return abort(std::string("commit_transaction: ") + rd_kafka_error_string(err.get()));
      if (rd_kafka_error_is_retriable(err.get()) && remaining(deadline_).count() > 0) continue;
      // Timed out while committing: the coordinator may still commit it. Only a new producer (whose
      // init_transactions completes or aborts it) and a read of the log can tell.
      auto r = fail(append_status::unknown, err.get(), "commit_transaction");
      r.producer_lost = true;
      return r;
    }
  }

  // After the commit, which flushed every record: serve the delivery reports that carry their offsets.
  append_result positions() {
    rd_kafka_poll(rk_, 0);
    for (auto& slot : slots_) {
      while (!slot.reported && remaining(deadline_).count() > 0) rd_kafka_poll(rk_, 5);
      if (!slot.reported || slot.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        // Committed, so the records are in the log; only their offsets are unknown to us.
        result_.status = append_status::unknown;
        result_.error = "committed without a delivery report";
        result_.producer_lost = true;
        return result_;
      }
      result_.positions.push_back(slot.where);
    }
    result_.status = append_status::committed;
    return result_;
  }

 private:
  // Queues one record, waiting for room while the queue is full and time remains.
  rd_kafka_resp_err_t produce_one(const record& r, delivery_slot& slot) {
    for (;;) {
      auto headers = detail::headers_for(r.headers);
      const auto err = rd_kafka_producev(
          rk_, RD_KAFKA_V_TOPIC(r.topic.c_str()), RD_KAFKA_V_KEY(r.key.data(), r.key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(r.value.data()), r.value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_OPAQUE(&slot), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        (void)headers.release();
        return err;
      }
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || remaining(deadline_).count() == 0) return err;
      rd_kafka_poll(rk_, 5);
    }
  }

  append_result fail(append_status status, const rd_kafka_error_t* e, const std::string& what) {
    result_.status = status;
    result_.error = what + (e ? std::string(": ") + rd_kafka_error_string(e) : std::string());
    if (e && rd_kafka_error_is_fatal(e)) result_.producer_lost = true;
    if (e && is_fencing(rd_kafka_error_code(e))) result_.fenced = result_.producer_lost = true;
    return result_;
  }

  // Aborting is only safe to report as "not in the log" if the abort itself succeeded.
  append_result abort(const std::string& what) {
    error_ptr abort_err(rd_kafka_abort_transaction(rk_, static_cast<int>(remaining(deadline_).count())));
    if (abort_err) {
      auto r = fail(append_status::unknown, abort_err.get(), what + "; abort failed");
      r.producer_lost = true;
      return r;
    }
    result_.status = append_status::aborted;
    result_.error = what;
    return result_;
  }

  rd_kafka_t* rk_;
  clock::time_point deadline_;
  append_result result_;
  std::vector<delivery_slot> slots_;
};

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
  for (std::size_t i = 0; i < ids_in_turn; ++i)
    impl_->ids.push_back(claim_transactional_id(brokers,
                                                i == 0 ? transactional_id : transactional_id + "." + std::to_string(i),
                                                transaction_timeout, deadline, extra));
}

transactional_producer::~transactional_producer() = default;

std::int32_t transactional_producer::partition_count(const std::string& topic, milliseconds timeout) {
  return detail::partition_count(impl_->ids.front().get(), topic, timeout);
}

append_result transactional_producer::append(std::span<const record> records, milliseconds timeout) {
  rd_kafka_t* rk = impl_->ids[impl_->next].get();
  impl_->next = (impl_->next + 1) % impl_->ids.size();
  transaction_attempt attempt(rk, clock::now() + timeout);
  if (auto ended = attempt.begin()) return *ended;
  if (auto ended = attempt.produce(records)) return *ended;
  if (auto ended = attempt.commit()) return *ended;
  auto result = attempt.positions();
  // The writer pairs positions with its records by index: a committed append hands on one for each.
  CREDITS_ASSERT(result.status != append_status::committed || result.positions.size() == records.size(),
                 "a committed append without a position for every record");
  return result;
}

}  // namespace credits::store
