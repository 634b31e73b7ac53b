#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <deque>
#include <map>
#include <thread>

#include "credits/read_model/redis.hpp"

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

redis_connection::outcome outcome_of(const redisReply* r) {
  if (const auto* e = find_error(r)) return {{}, std::string(e->str, e->len)};
  return {convert(r), std::nullopt};
}

// CRC16-CCITT (XMODEM), the checksum Redis Cluster takes of a key's hash tag.
constexpr std::array<std::uint16_t, 256> crc16_table = [] {
  std::array<std::uint16_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t crc = i << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
    table[i] = static_cast<std::uint16_t>(crc);
  }
  return table;
}();

bool equals_upper(std::string_view word, std::string_view upper) {
  return word.size() == upper.size() && std::equal(word.begin(), word.end(), upper.begin(), [](char a, char b) {
           return std::toupper(static_cast<unsigned char>(a)) == b;
         });
}

// Commands a cluster client sends to every master, and replays on each node it connects to later: they set
// up the connection (its name, the scripts EVALSHA names) rather than touch a key.
bool is_session_command(const std::vector<std::string>& args) {
  return args.size() >= 2 && ((equals_upper(args[0], "CLIENT") && equals_upper(args[1], "SETNAME")) ||
                              (equals_upper(args[0], "SCRIPT") && equals_upper(args[1], "LOAD")));
}

// One hiredis connection to one Redis server.
struct node {
  context_ptr context;
  std::string where;  // host:port

  node(const std::string& host, int port, std::chrono::milliseconds timeout)
      : where(host + ":" + std::to_string(port)) {
    context.reset(redisConnectWithTimeout(host.c_str(), port, to_timeval(timeout)));
    if (!context) throw std::runtime_error("redis " + where + ": cannot allocate a connection");
    if (context->err) throw std::runtime_error("redis " + where + ": " + context->errstr);
    // The connect timeout covers only the connect; commands need their own, or a stalled Redis blocks forever.
    if (redisSetTimeout(context.get(), to_timeval(timeout)) != REDIS_OK)
      throw std::runtime_error("redis " + where + ": cannot set the command timeout");
    redisEnableKeepAlive(context.get());
  }

  [[noreturn]] void fail_io() const {
    throw std::runtime_error("redis " + where + ": " + (context->err ? context->errstr : "no reply"));
  }

  void append(const std::vector<std::string>& args) { append_resp(resp(args)); }

  void append_resp(std::string_view command) {
    if (redisAppendFormattedCommand(context.get(), command.data(), command.size()) != REDIS_OK) fail_io();
  }

  void flush() {
    for (int done = 0; !done;)
      if (redisBufferWrite(context.get(), &done) != REDIS_OK) fail_io();
  }

  reply_ptr read() {
    void* raw = nullptr;
    if (redisGetReply(context.get(), &raw) != REDIS_OK || !raw) fail_io();
    return reply_ptr(static_cast<redisReply*>(raw));
  }

  reply_ptr call(const std::vector<std::string>& args) {
    append(args);
    flush();
    return read();
  }
};

std::pair<std::string, int> split_address(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("redis: malformed node address " + address);
  return {address.substr(0, colon), std::stoi(address.substr(colon + 1))};
}

}  // namespace

std::string_view hash_tag(std::string_view key) {
  const auto open = key.find('{');
  if (open == std::string_view::npos) return key;
  const auto close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

std::uint16_t cluster_slot(std::string_view key) {
  std::uint16_t crc = 0;
  for (const char c : hash_tag(key))
    crc = static_cast<std::uint16_t>((crc << 8) ^ crc16_table[((crc >> 8) ^ static_cast<unsigned char>(c)) & 0xff]);
  return crc % cluster_slots;
}

std::optional<std::string_view> command_key(const std::vector<std::string>& args) {
  if (args.size() < 2) return std::nullopt;
  const auto& name = args[0];
  if (equals_upper(name, "EVAL") || equals_upper(name, "EVALSHA") || equals_upper(name, "EVAL_RO") ||
      equals_upper(name, "EVALSHA_RO")) {
    if (args.size() < 4 || args[2] == "0") return std::nullopt;
    return args[3];
  }
  for (const auto* keyless : {"PING", "INFO", "CLIENT", "SCRIPT", "SELECT", "SCAN", "CLUSTER", "FLUSHDB", "FLUSHALL",
                              "DBSIZE", "SWAPDB", "ECHO", "TIME", "CONFIG", "ASKING"})
    if (equals_upper(name, keyless)) return std::nullopt;
  return args[1];
}

// Standalone: every command goes to the one node. Cluster: each command goes to the master of its key's slot
// (keyless ones to the first node), redirections are followed, and session commands go to every master.
struct redis_connection::impl {
  // A reply that is a redirection is followed at most this many times before it is returned as an error.
  static constexpr int redirects_max = 5;
  static constexpr std::chrono::milliseconds tryagain_pause{25};

  std::chrono::milliseconds timeout;
  std::string seed;  // the configured node, host:port
  bool cluster = false;
  bool broken = false;
  std::uint64_t redirections = 0;
  std::map<std::string, std::unique_ptr<node>> nodes;  // host:port -> its connection
  std::vector<std::string> masters;                    // host:port of each master, from CLUSTER SLOTS
  std::vector<std::uint16_t> slot_master;              // slot -> index in masters
  std::vector<std::vector<std::string>> session;       // replayed on every new node connection

  struct sent {
    node* to = nullptr;
    std::vector<std::string> args;  // kept in a cluster, to follow a redirection
  };
  std::deque<sent> in_flight;  // sent, reply not yet read, oldest first
  struct received {
    outcome result;
    std::vector<std::string> args;
    bool redirected = false;
  };
  std::deque<received> ready;  // read, not yet returned

  // Runs `fn`, marking the connection broken if it throws an I/O error (a reply_error leaves it usable).
  template <class F>
  auto guarded(F fn) {
    try {
      return fn();
    } catch (const reply_error&) {
      throw;
    } catch (const std::runtime_error&) {
      broken = true;
      throw;
    }
  }

  node& connect(const std::string& address) {
    auto& slot = nodes[address];
    if (slot) return *slot;
    const auto [host, port] = split_address(address);
    auto made = std::make_unique<node>(host, port, timeout);
    for (const auto& args : session) {
      const auto r = made->call(args);
      if (const auto* e = find_error(r.get())) throw reply_error(std::string(e->str, e->len));
    }
    slot = std::move(made);
    return *slot;
  }

  // Reads the slot map from `from` (CLUSTER SLOTS: [start, end, [host, port, id], replicas...] per range).
  void load_slots(node& from) {
    const auto r = from.call({"CLUSTER", "SLOTS"});
    if (const auto* e = find_error(r.get())) throw reply_error(std::string(e->str, e->len));
    std::vector<std::string> found;
    std::vector<std::uint16_t> owner(cluster_slots, std::numeric_limits<std::uint16_t>::max());
    const auto host_of = [&](const redisReply* h) {
      const std::string text(h->str, h->len);
      // An empty or "?" host means the node we asked.
      return text.empty() || text == "?" ? split_address(from.where).first : text;
    };
    for (std::size_t i = 0; i < r->elements; ++i) {
      const auto* range = r->element[i];
      if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[2]->elements < 2)
        throw std::runtime_error("redis " + from.where + ": malformed CLUSTER SLOTS reply");
      const auto* master = range->element[2];
      const auto address = host_of(master->element[0]) + ":" + std::to_string(master->element[1]->integer);
      auto at = std::find(found.begin(), found.end(), address);
      if (at == found.end()) at = found.insert(found.end(), address);
      const auto index = static_cast<std::uint16_t>(at - found.begin());
      for (auto s = range->element[0]->integer;
           s <= range->element[1]->integer && s < static_cast<long long>(cluster_slots); ++s)
        owner[static_cast<std::size_t>(s)] = index;
    }
    if (found.empty()) throw std::runtime_error("redis " + from.where + ": the cluster serves no slots");
    masters = std::move(found);
    slot_master = std::move(owner);
  }

  node& route(const std::vector<std::string>& args) {
    if (!cluster) return *nodes.at(seed);
    const auto key = command_key(args);
    if (!key) return *nodes.at(seed);
    const auto owner = slot_master[cluster_slot(*key)];
    if (owner >= masters.size())
      throw std::runtime_error("redis: no master serves the slot of " + std::string(*key) + " (CLUSTERDOWN?)");
    return connect(masters[owner]);
  }

  void send(const std::vector<std::vector<std::string>>& commands) {
    std::vector<node*> written;
    for (const auto& args : commands) {
      if (cluster && is_session_command(args))
        throw std::logic_error("redis: " + args[0] + " " + args[1] + " must be run alone on a cluster");
      auto& to = route(args);
      to.append(args);
      if (std::find(written.begin(), written.end(), &to) == written.end()) written.push_back(&to);
      in_flight.push_back({&to, cluster ? args : std::vector<std::string>{}});
    }
    for (auto* n : written) n->flush();
  }

  void read_one() {
    auto s = std::move(in_flight.front());
    in_flight.pop_front();
    const auto r = s.to->read();
    auto result = outcome_of(r.get());
    const bool redirected = cluster && result.error && is_redirection(*result.error);
    ready.push_back({std::move(result), std::move(s.args), redirected});
  }

  static bool is_redirection(std::string_view error) {
    return error.starts_with("MOVED ") || error.starts_with("ASK ") || error.starts_with("TRYAGAIN");
  }

  // Follows one command's redirections. Only called when no node has a reply outstanding, so the replies read
  // here are this command's.
  outcome follow(const std::vector<std::string>& args, std::string error) {
    for (int attempt = 1; attempt <= redirects_max && is_redirection(error); ++attempt) {
      ++redirections;
      reply_ptr r;
      if (error.starts_with("MOVED ")) {
        auto& owner = connect(error.substr(error.rfind(' ') + 1));
        load_slots(owner);
        r = route(args).call(args);
      } else if (error.starts_with("ASK ")) {
        auto& target = connect(error.substr(error.rfind(' ') + 1));
        target.append({"ASKING"});
        target.append(args);
        target.flush();
        (void)target.read();
        r = target.read();
      } else {  // TRYAGAIN: the slot is migrating and the command's keys are split for now
        std::this_thread::sleep_for(tryagain_pause * attempt);
        r = route(args).call(args);
      }
      auto result = outcome_of(r.get());
      if (!result.error) return result;
      error = *result.error;
    }
    return {{}, std::move(error)};
  }

  std::vector<outcome> receive(std::size_t count) {
    while (ready.size() < count) read_one();
    const auto first = ready.begin();
    if (std::any_of(first, first + static_cast<std::ptrdiff_t>(count),
                    [](const received& r) { return r.redirected; })) {
      while (!in_flight.empty()) read_one();  // every node idle, so follow() reads only its own replies
      for (auto& r : ready)
        if (r.redirected) {
          r.result = follow(r.args, *r.result.error);
          r.redirected = false;
        }
    }
    std::vector<outcome> out;
    out.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      out.push_back(std::move(ready.front().result));
      ready.pop_front();
    }
    return out;
  }

  // A session command: run on every master (one reply: the first node's, or the first error), remembered for
  // nodes connected later.
  outcome run_everywhere(const std::vector<std::string>& args) {
    std::optional<outcome> first;
    for (const auto& address : masters) {
      auto result = outcome_of(connect(address).call(args).get());
      if (!first || (result.error && !first->error)) first = std::move(result);
    }
    if (!first->error) session.push_back(args);
    return std::move(*first);
  }
};

redis_connection::redis_connection(const std::string& host, int port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>()) {
  impl_->timeout = timeout;
  impl_->seed = host + ":" + std::to_string(port);
  auto& seed = *(impl_->nodes[impl_->seed] = std::make_unique<node>(host, port, timeout));
  const auto info = seed.call({"INFO", "cluster"});
  if (info->type == REDIS_REPLY_STRING &&
      std::string_view(info->str, info->len).find("cluster_enabled:1") != std::string_view::npos) {
    impl_->cluster = true;
    impl_->load_slots(seed);
  }
}

redis_connection::~redis_connection() = default;

bool redis_connection::broken() const { return impl_->broken; }

bool redis_connection::clustered() const { return impl_->cluster; }

std::uint64_t redis_connection::redirections() const { return impl_->redirections; }

redis_connection::reply redis_connection::run(const std::vector<std::string>& args) {
  auto result = impl_->guarded([&] {
    if (impl_->cluster && is_session_command(args)) return impl_->run_everywhere(args);
    impl_->send({args});
    return std::move(impl_->receive(1).front());
  });
  if (result.error) throw reply_error(*result.error);
  return std::move(result.value);
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

std::vector<redis_connection::outcome> redis_connection::pipeline_each_resp(const std::vector<std::string>& commands) {
  for (const auto& c : commands) send_resp(c);
  return receive(commands.size());
}

void redis_connection::send_resp(std::string_view command) {
  if (impl_->cluster) throw std::logic_error("redis: commands in wire form cannot be routed on a cluster");
  impl_->guarded([&] {
    auto& to = *impl_->nodes.at(impl_->seed);
    to.append_resp(command);
    impl_->in_flight.push_back({&to, {}});
    to.flush();
  });
}

void resp_writer::word(std::string_view w) {
  char digits[24];
  body_.push_back('$');
  body_.append(digits, std::to_chars(digits, digits + sizeof digits, w.size()).ptr).append("\r\n");
  body_.append(w).append("\r\n");
  ++words_;
}

std::string resp_writer::finish() && {
  char digits[24];
  std::string command;
  command.reserve(body_.size() + 24);
  command.push_back('*');
  command.append(digits, std::to_chars(digits, digits + sizeof digits, words_).ptr).append("\r\n").append(body_);
  return command;
}

std::string resp(const std::vector<std::string>& args) {
  std::size_t size = 16;
  for (const auto& a : args) size += a.size() + 24;
  std::string command;
  command.reserve(size);
  char digits[24];
  const auto count = [&](char kind, std::size_t n) {
    command.push_back(kind);
    command.append(digits, std::to_chars(digits, digits + sizeof digits, n).ptr).append("\r\n");
  };
  count('*', args.size());
  for (const auto& a : args) {
    count('$', a.size());
    command.append(a).append("\r\n");
  }
  return command;
}

void redis_connection::send(const std::vector<std::vector<std::string>>& commands) {
  impl_->guarded([&] { impl_->send(commands); });
}

std::vector<redis_connection::outcome> redis_connection::receive(std::size_t count) {
  // Every reply is read before returning, so the connection stays in step with its requests.
  return impl_->guarded([&] { return impl_->receive(count); });
}

std::vector<std::string> redis_connection::scan(std::string_view pattern, std::size_t count) {
  return impl_->guarded([&] {
    std::vector<std::string> out;
    const auto each_node = impl_->cluster ? impl_->masters : std::vector<std::string>{impl_->seed};
    for (const auto& address : each_node) {
      auto& n = impl_->connect(address);
      std::string cursor = "0";
      do {
        const auto r = n.call({"SCAN", cursor, "MATCH", std::string(pattern), "COUNT", std::to_string(count)});
        if (const auto* e = find_error(r.get())) throw reply_error(std::string(e->str, e->len));
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) throw std::runtime_error("redis: malformed SCAN reply");
        cursor.assign(r->element[0]->str, r->element[0]->len);
        const auto* keys = r->element[1];
        for (std::size_t i = 0; i < keys->elements; ++i) out.emplace_back(keys->element[i]->str, keys->element[i]->len);
      } while (cursor != "0");
    }
    return out;
  });
}

}  // namespace credits::read_model
