#include <hiredis/hiredis.h>
#include <sys/time.h>

#include "credits/read_model.hpp"

namespace credits::read_model {
namespace {

struct context_deleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using context_ptr = std::unique_ptr<redisContext, context_deleter>;

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

timeval to_timeval(std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(t.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>(t.count() % 1000 * 1000);
  return tv;
}

// hiredis takes argv as parallel arrays of pointers and lengths; the strings stay owned by the caller.
struct argv_view {
  std::vector<const char*> data;
  std::vector<std::size_t> sizes;

  explicit argv_view(const std::vector<std::string>& args) {
    data.reserve(args.size());
    sizes.reserve(args.size());
    for (const auto& a : args) {
      data.push_back(a.data());
      sizes.push_back(a.size());
    }
  }
  int count() const { return static_cast<int>(data.size()); }
};

// The first error reply anywhere in `r` (nested ones come from EXEC), or nullptr.
const redisReply* find_error(const redisReply* r) {
  if (r->type == REDIS_REPLY_ERROR) return r;
  if (r->type == REDIS_REPLY_ARRAY)
    for (std::size_t i = 0; i < r->elements; ++i)
      if (const auto* e = find_error(r->element[i])) return e;
  return nullptr;
}

void flatten(const redisReply* r, std::vector<std::optional<std::string>>& out) {
  switch (r->type) {
    case REDIS_REPLY_ARRAY:
      for (std::size_t i = 0; i < r->elements; ++i) flatten(r->element[i], out);
      break;
    case REDIS_REPLY_INTEGER:
      out.emplace_back(std::to_string(r->integer));
      break;
    case REDIS_REPLY_NIL:
      out.emplace_back(std::nullopt);
      break;
    default:
      out.emplace_back(std::string(r->str, r->len));
      break;
  }
}

redis_connection::reply convert(const redisReply* r) {
  redis_connection::reply out;
  switch (r->type) {
    case REDIS_REPLY_ARRAY:
      flatten(r, out.array);
      break;
    case REDIS_REPLY_INTEGER:
      out.value = std::to_string(r->integer);
      break;
    case REDIS_REPLY_NIL:
      break;
    default:  // string or status
      out.value = std::string(r->str, r->len);
      break;
  }
  return out;
}

}  // namespace

struct redis_connection::impl {
  context_ptr context;
  std::string where;  // host:port, for error messages
  bool broken = false;

  // After an I/O error hiredis leaves the context unusable; remember it so the owner reconnects.
  [[noreturn]] void fail_io() {
    broken = true;
    throw std::runtime_error("redis " + where + ": " + (context->err ? context->errstr : "no reply"));
  }
};

redis_connection::redis_connection(const std::string& host, int port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>()) {
  impl_->where = host + ":" + std::to_string(port);
  impl_->context.reset(redisConnectWithTimeout(host.c_str(), port, to_timeval(timeout)));
  if (!impl_->context) throw std::runtime_error("redis " + impl_->where + ": cannot allocate a connection");
  if (impl_->context->err) throw std::runtime_error("redis " + impl_->where + ": " + impl_->context->errstr);
  // The connect timeout covers only the connect; commands need their own, or a stalled Redis blocks forever.
  if (redisSetTimeout(impl_->context.get(), to_timeval(timeout)) != REDIS_OK)
    throw std::runtime_error("redis " + impl_->where + ": cannot set the command timeout");
  redisEnableKeepAlive(impl_->context.get());
}

redis_connection::~redis_connection() = default;

bool redis_connection::broken() const { return impl_->broken; }

redis_connection::reply redis_connection::run(const std::vector<std::string>& args) {
  argv_view argv(args);
  reply_ptr r(static_cast<redisReply*>(
      redisCommandArgv(impl_->context.get(), argv.count(), argv.data.data(), argv.sizes.data())));
  if (!r) impl_->fail_io();
  if (const auto* e = find_error(r.get())) throw reply_error(std::string(e->str, e->len));
  return convert(r.get());
}

std::vector<redis_connection::reply> redis_connection::pipeline(const std::vector<std::vector<std::string>>& commands) {
  auto outcomes = pipeline_each(commands);
  std::vector<reply> out;
  out.reserve(outcomes.size());
  for (auto& o : outcomes) {
    if (o.error) throw reply_error(*o.error);
    out.push_back(std::move(o.value));
  }
  return out;
}

std::vector<redis_connection::outcome> redis_connection::pipeline_each(
    const std::vector<std::vector<std::string>>& commands) {
  send(commands);
  return receive(commands.size());
}

void redis_connection::send(const std::vector<std::vector<std::string>>& commands) {
  redisContext* c = impl_->context.get();
  for (const auto& args : commands) {
    argv_view argv(args);
    if (redisAppendCommandArgv(c, argv.count(), argv.data.data(), argv.sizes.data()) != REDIS_OK) impl_->fail_io();
  }
  for (int done = 0; !done;)
    if (redisBufferWrite(c, &done) != REDIS_OK) impl_->fail_io();
}

std::vector<redis_connection::outcome> redis_connection::receive(std::size_t count) {
  // Every reply is read before returning, so the connection stays in step with its requests.
  std::vector<outcome> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    void* raw = nullptr;
    if (redisGetReply(impl_->context.get(), &raw) != REDIS_OK || !raw) impl_->fail_io();
    reply_ptr r(static_cast<redisReply*>(raw));
    if (const auto* e = find_error(r.get()))
      out.push_back(outcome{{}, std::string(e->str, e->len)});
    else
      out.push_back(outcome{convert(r.get()), std::nullopt});
  }
  return out;
}

}  // namespace credits::read_model
