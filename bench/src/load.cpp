// credits-bench-load: drives the running API (or credits-bench-static) over HTTP/1.1 with many keep-alive
// connections and prints one scenario's results as JSON on stdout.
//
// One thread, one io_context: every coroutine below runs on that thread, so the run state needs no locks.
// Each connection carries one request at a time (as the API serves them). With --rate 0 the load is closed-loop
// (each connection sends its next request as soon as the previous answer is in: the maximum the server
// accepts). With --rate R the load is open-loop: request k of connection c is due at start + (k + c/C) * C/R,
// and its latency is measured from that due time, not from when it was sent, so a server that falls behind is
// charged for the queue it builds (no coordinated omission).
//
// Projection lag: every --lag-every-th successful command is followed by a probe on a separate connection
// that polls GET /v1/accounts/balance for its account WITHOUT Credits-Min-Position until the answer reflects
// the write (not Credits-Stale and, where balances only grow, balance >= the command's balanceAfter). The lag
// is the time from the command's answer to that reflecting answer.
//
// Usage: credits-bench-load --scenario add|flow|balance|mix|static [--host H] [--port P] [--key K]
//          [--connections N] [--duration-s S] [--warmup-s S] [--rate R] [--accounts N] [--lag-every N]
//          [--lag-connections N] [--lag-timeout-ms MS] [--run-id ID]
#include <sys/resource.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/bench/histogram.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;
using clock_type = std::chrono::steady_clock;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

constexpr long connections_max = 16'384;
constexpr long accounts_max = 1'000'000;
constexpr long duration_s_max = 3600;
constexpr long setup_connections = 32;                       // account creation before the measurement
constexpr std::int64_t initial_credits = 1'000'000'000'000;  // so that no flow runs out of credits
constexpr std::chrono::milliseconds lag_repoll_ms{1};        // between two polls that did not reflect the write
constexpr std::chrono::milliseconds reconnect_backoff_ms{100};
constexpr std::uint32_t response_body_bytes_max = 1024 * 1024;
constexpr rlim_t descriptors_spare = 64;

enum class scenario { add, flow, balance, mix, fixed };  // fixed: the static server's ceiling
enum class op { add, reserve, confirm, usage, balance, fixed, count_ };
constexpr const char* op_names[] = {"add", "reserve", "confirm", "usage", "balance", "static"};

struct options {
  std::string host = "127.0.0.1";
  unsigned short port = 8080;
  std::string key = "ck_demo_key_123";
  scenario kind = scenario::add;
  long connections = 64;
  double duration_s = 10;
  double warmup_s = 2;
  double rate = 0;  // requests/s over all connections; 0: closed loop
  long accounts = 1000;
  long lag_every = 50;
  long lag_connections = 16;
  std::chrono::milliseconds lag_timeout_ms{10'000};  // a probe that waits longer counts as timed out
  std::string run_id;
};

double real(const std::string& name, const char* text, double min, double max) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (*text == '\0' || *end != '\0' || !(v >= min && v <= max))
    throw std::invalid_argument(name + " must be a number in [" + std::to_string(min) + ", " + std::to_string(max) +
                                "]");
  return v;
}

long integer(const std::string& name, const char* text, long min, long max) {
  const double v = real(name, text, static_cast<double>(min), static_cast<double>(max));
  if (v != static_cast<double>(static_cast<long>(v))) throw std::invalid_argument(name + " must be an integer");
  return static_cast<long>(v);
}

options parse(int argc, char** argv) {
  options o;
  o.run_id = std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--host")
      o.host = v;
    else if (a == "--port")
      o.port = static_cast<unsigned short>(integer(a, v, 1, 65535));
    else if (a == "--key")
      o.key = v;
    else if (a == "--connections")
      o.connections = integer(a, v, 1, connections_max);
    else if (a == "--duration-s")
      o.duration_s = real(a, v, 0.1, duration_s_max);
    else if (a == "--warmup-s")
      o.warmup_s = real(a, v, 0, duration_s_max);
    else if (a == "--rate")
      o.rate = real(a, v, 0, 10'000'000);
    else if (a == "--accounts")
      o.accounts = integer(a, v, 1, accounts_max);
    else if (a == "--lag-every")
      o.lag_every = integer(a, v, 0, 1'000'000'000);
    else if (a == "--lag-connections")
      o.lag_connections = integer(a, v, 1, 1024);
    else if (a == "--lag-timeout-ms")
      o.lag_timeout_ms = std::chrono::milliseconds(integer(a, v, 1, 600'000));
    else if (a == "--run-id")
      o.run_id = v;
    else if (a == "--scenario") {
      const std::string s = v;
      if (s == "add")
        o.kind = scenario::add;
      else if (s == "flow")
        o.kind = scenario::flow;
      else if (s == "balance")
        o.kind = scenario::balance;
      else if (s == "mix")
        o.kind = scenario::mix;
      else if (s == "static")
        o.kind = scenario::fixed;
      else
        throw std::invalid_argument("unknown scenario " + s);
    } else {
      throw std::invalid_argument("unknown option " + a);
    }
  }
  return o;
}

// Each connection needs a descriptor; raise the soft limit as far as the hard one allows.
void reserve_descriptors(long connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t needed = static_cast<rlim_t>(connections) + descriptors_spare;
  if (limit.rlim_cur >= needed) return;
  limit.rlim_cur = std::min(needed, limit.rlim_max);
  setrlimit(RLIMIT_NOFILE, &limit);
}

// One keep-alive HTTP connection, reconnected on demand. Lives on the run's single thread.
class connection {
 public:
  connection(asio::io_context& io, tcp::endpoint where) : stream_(io), where_(where) {}

  // The answer, or nullopt on any I/O error (the connection is closed and reopened by the next call).
  asio::awaitable<std::optional<response>> exchange(request& req) {
    if (!open_) {
      auto [cec] = co_await stream_.socket().async_connect(where_, asio::as_tuple(asio::use_awaitable));
      if (cec) {
        close();
        co_return std::nullopt;
      }
      stream_.socket().set_option(tcp::no_delay(true));
      open_ = true;
    }
    auto [wec, wn] = co_await http::async_write(stream_, req, asio::as_tuple(asio::use_awaitable));
    if (wec) {
      close();
      co_return std::nullopt;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(response_body_bytes_max);
    auto [rec, rn] = co_await http::async_read(stream_, buffer_, parser, asio::as_tuple(asio::use_awaitable));
    if (rec) {
      close();
      co_return std::nullopt;
    }
    auto res = parser.release();
    if (!res.keep_alive()) close();
    co_return res;
  }

 private:
  void close() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
    buffer_.clear();
    open_ = false;
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  tcp::endpoint where_;
  bool open_ = false;
};

struct account {
  std::string id;
};

// Everything one run measures. Owned by main, used only on the run's thread.
struct run_state {
  run_state(options o, asio::io_context& i, tcp::endpoint w) : opt(std::move(o)), io(i), where(w) {}

  options opt;
  asio::io_context& io;
  tcp::endpoint where;
  std::vector<account> accounts;
  clock_type::time_point measure_from;  // end of warm-up
  clock_type::time_point measure_until;
  bool stopping = false;

  credits::bench::histogram all;
  credits::bench::histogram per_op[static_cast<int>(op::count_)];
  std::uint64_t ok = 0, offered = 0, flows = 0, io_errors = 0;
  std::map<int, std::uint64_t> errors_by_status;
  std::vector<std::uint64_t> ok_per_second;

  credits::bench::histogram lag;
  std::uint64_t commands_answered = 0, lag_timeouts = 0, lag_skipped = 0;
  long probes_in_flight = 0;
  std::vector<std::unique_ptr<connection>> idle_probes;

  bool measuring(clock_type::time_point t) const { return t >= measure_from && t < measure_until; }
};

request make_request(const run_state& r, http::verb method, std::string target, std::string body) {
  request req{method, std::move(target), 11};
  req.set(http::field::host, r.opt.host);
  req.set("X-API-Key", r.opt.key);
  req.keep_alive(true);
  if (method == http::verb::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
  }
  return req;
}

json body_of(const response& res) { return json::parse(res.body(), nullptr, false); }

// Polls the balance until it reflects a write answered at `answered`; records the lag. Holds one probe slot.
asio::awaitable<void> probe_lag(run_state& r, std::string account_id, std::optional<std::int64_t> balance_at_least,
                                clock_type::time_point answered) {
  std::unique_ptr<connection> c;
  if (!r.idle_probes.empty()) {
    c = std::move(r.idle_probes.back());
    r.idle_probes.pop_back();
  } else {
    c = std::make_unique<connection>(r.io, r.where);
  }
  asio::steady_timer pause(r.io);
  for (;;) {
    auto req = make_request(r, http::verb::get, "/v1/accounts/balance?accountId=" + account_id, "");
    const auto res = co_await c->exchange(req);
    const auto now = clock_type::now();
    bool reflected = false;
    if (res && res->result_int() == 200 && (*res)["Credits-Stale"].empty()) {
      reflected = true;
      if (balance_at_least) {
        const auto j = body_of(*res);
        reflected = j.is_object() && j.value("balance", std::int64_t{-1}) >= *balance_at_least;
      }
    }
    if (reflected) {
      r.lag.record(
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(now - answered).count()));
      break;
    }
    if (now - answered > r.opt.lag_timeout_ms) {
      ++r.lag_timeouts;
      break;
    }
    pause.expires_after(lag_repoll_ms);
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  r.idle_probes.push_back(std::move(c));
  --r.probes_in_flight;
}

// Called after every successful command: samples one in lag_every for a lag probe.
void maybe_probe(run_state& r, const std::string& account_id, std::optional<std::int64_t> balance_at_least,
                 clock_type::time_point answered) {
  if (r.opt.lag_every == 0 || !r.measuring(answered)) return;
  if (++r.commands_answered % static_cast<std::uint64_t>(r.opt.lag_every) != 0) return;
  if (r.probes_in_flight >= r.opt.lag_connections) {
    ++r.lag_skipped;
    return;
  }
  ++r.probes_in_flight;
  asio::co_spawn(r.io, probe_lag(r, account_id, balance_at_least, answered), asio::detached);
}

// One load connection: builds the scenario's next request, sends it when due, records the answer.
asio::awaitable<void> worker(run_state& r, long index) {
  connection c(r.io, r.where);
  std::mt19937_64 rng(static_cast<std::uint64_t>(index) * 7919 + 1);
  asio::steady_timer timer(r.io);
  const bool open_loop = r.opt.rate > 0;
  const auto interval = std::chrono::duration_cast<clock_type::duration>(
      std::chrono::duration<double>(open_loop ? static_cast<double>(r.opt.connections) / r.opt.rate : 0.0));
  auto due = clock_type::now() + interval * index / r.opt.connections;
  int flow_step = 0;  // 0: not in a flow, 1: reserve next... see below
  std::string reservation_id, transaction_id;
  std::size_t account_index = 0;
  while (!r.stopping) {
    if (open_loop) {
      if (clock_type::now() < due) {
        timer.expires_at(due);
        co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (r.stopping) break;
      }
    } else {
      due = clock_type::now();
    }
    // Choose the operation.
    op kind = op::add;
    if (flow_step == 0) account_index = static_cast<std::size_t>(rng() % r.accounts.size());
    switch (r.opt.kind) {
      case scenario::add:
        kind = op::add;
        break;
      case scenario::fixed:
        kind = op::fixed;
        break;
      case scenario::balance:
        kind = op::balance;
        break;
      case scenario::flow:
        kind = flow_step == 0 ? op::reserve : flow_step == 1 ? op::confirm : op::usage;
        break;
      case scenario::mix: {
        if (flow_step != 0) {
          kind = flow_step == 1 ? op::confirm : op::usage;
        } else {
          const auto roll = rng() % 100;  // 60 % balance reads, 25 % adds, 15 % flows (3 commands each)
          kind = roll < 60 ? op::balance : roll < 85 ? op::add : op::reserve;
        }
        break;
      }
    }
    const auto& acc = r.accounts[account_index].id;
    request req;
    switch (kind) {
      case op::add:
      case op::fixed:
        req = make_request(r, http::verb::post, "/v1/accounts/credits/add",
                           R"({"accountId":")" + acc + R"(","amount":1,"description":"bench"})");
        break;
      case op::reserve:
        req = make_request(r, http::verb::post, "/v1/reservations/create",
                           R"({"accountId":")" + acc + R"(","amount":10})");
        break;
      case op::confirm:
        req = make_request(r, http::verb::post, "/v1/reservations/confirm",
                           R"({"reservationId":")" + reservation_id + R"(","actualAmount":7})");
        break;
      case op::usage:
        req = make_request(r, http::verb::post, "/v1/usage/record",
                           R"({"context":"customer","accountId":")" + acc + R"(","transactionId":")" + transaction_id +
                               R"(","modelId":"gpt-4o","usageType":"text","inputTokens":100,"outputTokens":7})");
        break;
      case op::balance:
        req = make_request(r, http::verb::get, "/v1/accounts/balance?accountId=" + acc, "");
        break;
      case op::count_:
        break;
    }
    const auto intended = due;
    due += interval;
    const auto res = co_await c.exchange(req);
    const auto now = clock_type::now();
    const bool counted = r.measuring(intended);
    if (counted) ++r.offered;
    if (!res) {
      if (counted) ++r.io_errors;
      flow_step = 0;
      timer.expires_after(reconnect_backoff_ms);
      co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    const int status = static_cast<int>(res->result_int());
    if (status != 200) {
      if (counted) ++r.errors_by_status[status];
      flow_step = 0;
      continue;
    }
    if (counted) {
      const auto us =
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(now - intended).count());
      r.all.record(us);
      r.per_op[static_cast<int>(kind)].record(us);
      ++r.ok;
      const auto second =
          static_cast<std::size_t>(std::chrono::duration_cast<std::chrono::seconds>(now - r.measure_from).count());
      if (second < r.ok_per_second.size()) ++r.ok_per_second[second];
    }
    switch (kind) {
      case op::add: {
        const auto j = body_of(*res);
        if (j.is_object() && j.contains("balance")) maybe_probe(r, acc, j["balance"].get<std::int64_t>(), now);
        break;
      }
      case op::reserve: {
        const auto j = body_of(*res);
        if (j.is_object() && j.contains("reservation")) {
          reservation_id = j["reservation"].value("id", "");
          flow_step = 1;
        }
        break;
      }
      case op::confirm: {
        const auto j = body_of(*res);
        transaction_id = j.is_object() ? j.value("transactionId", "") : "";
        flow_step = transaction_id.empty() ? 0 : 2;
        maybe_probe(r, acc, std::nullopt, now);  // a confirm lowers the balance: only the stale flag can tell
        break;
      }
      case op::usage:
        flow_step = 0;
        if (counted) ++r.flows;
        break;
      default:
        break;
    }
  }
}

// Creates the accounts the scenario uses (external ids derived from the run id) with plenty of credits.
asio::awaitable<void> setup_worker(run_state& r, long index, std::string& failure) {
  connection c(r.io, r.where);
  for (auto i = static_cast<std::size_t>(index); i < r.accounts.size(); i += setup_connections) {
    const auto external = "bench-" + r.opt.run_id + "-" + std::to_string(i);
    auto create = make_request(r, http::verb::post, "/v1/accounts/create",
                               R"({"name":"bench","externalId":")" + external + R"("})");
    auto res = co_await c.exchange(create);
    if (!res || (res->result_int() != 200 && res->result_int() != 409)) {
      failure = "creating account " + external + ": " + (res ? res->body() : std::string("connection failed"));
      co_return;
    }
    auto add = make_request(r, http::verb::post, "/v1/accounts/credits/add",
                            R"({"externalId":")" + external + R"(","amount":)" + std::to_string(initial_credits) + "}");
    res = co_await c.exchange(add);
    const auto j = res ? body_of(*res) : json();
    if (!res || res->result_int() != 200 || !j.is_object()) {
      failure = "adding credits to " + external + ": " + (res ? res->body() : std::string("connection failed"));
      co_return;
    }
    r.accounts[i].id = j.value("accountId", "");
  }
}

json summary(const credits::bench::histogram& h) {
  return {{"count", h.count()},         {"p50_us", h.percentile(50)},    {"p90_us", h.percentile(90)},
          {"p99_us", h.percentile(99)}, {"p999_us", h.percentile(99.9)}, {"max_us", h.max()},
          {"mean_us", h.mean()}};
}

const char* scenario_name(scenario s) {
  switch (s) {
    case scenario::add:
      return "add";
    case scenario::flow:
      return "flow";
    case scenario::balance:
      return "balance";
    case scenario::mix:
      return "mix";
    case scenario::fixed:
      return "static";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  try {
    opt = parse(argc, argv);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "credits-bench-load: %s\n", ex.what());
    return 2;
  }
  reserve_descriptors(opt.connections + opt.lag_connections + setup_connections);
  asio::io_context io(1);
  run_state r(opt, io, tcp::endpoint(asio::ip::make_address(opt.host), opt.port));
  r.accounts.resize(static_cast<std::size_t>(opt.kind == scenario::fixed ? 1 : opt.accounts));

  std::string failure;
  if (opt.kind == scenario::fixed) {
    r.accounts[0].id = "acc_0123456789abcdef01234567";
  } else {
    for (long i = 0; i < setup_connections; ++i) asio::co_spawn(io, setup_worker(r, i, failure), asio::detached);
    io.run();
    io.restart();
    if (!failure.empty()) {
      std::fprintf(stderr, "credits-bench-load: setup failed: %s\n", failure.c_str());
      return 1;
    }
  }

  const auto started = clock_type::now();
  r.measure_from =
      started + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(opt.warmup_s));
  r.measure_until =
      r.measure_from + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(opt.duration_s));
  r.ok_per_second.assign(static_cast<std::size_t>(opt.duration_s + 1), 0);
  for (long i = 0; i < opt.connections; ++i) asio::co_spawn(io, worker(r, i), asio::detached);
  asio::steady_timer stop(io);
  stop.expires_at(r.measure_until);
  stop.async_wait([&](const boost::system::error_code&) { r.stopping = true; });
  // Workers finish their request in flight; open-loop workers waiting for a due time are woken by this.
  io.run();

  const double seconds = opt.duration_s;
  json out{{"scenario", scenario_name(opt.kind)},
           {"connections", opt.connections},
           {"accounts", opt.kind == scenario::fixed ? 0 : opt.accounts},
           {"rate_target", opt.rate},
           {"mode", opt.rate > 0 ? "open" : "closed"},
           {"duration_s", seconds},
           // Open loop: what was scheduled; closed loop: what was sent (the clients offer as fast as answered).
           {"offered_per_s", opt.rate > 0 ? opt.rate : static_cast<double>(r.offered) / seconds},
           {"sent_per_s", static_cast<double>(r.offered) / seconds},
           {"accepted_per_s", static_cast<double>(r.ok) / seconds},
           {"ok", r.ok},
           {"flows", r.flows},
           {"io_errors", r.io_errors},
           {"latency", summary(r.all)},
           {"ok_per_second", r.ok_per_second}};
  json errors = json::object();
  std::uint64_t error_total = r.io_errors;
  for (const auto& [status, n] : r.errors_by_status) {
    errors[std::to_string(status)] = n;
    error_total += n;
  }
  out["errors_by_status"] = errors;
  out["errors"] = error_total;
  json ops = json::object();
  for (int k = 0; k < static_cast<int>(op::count_); ++k)
    if (r.per_op[k].count() > 0) ops[op_names[k]] = summary(r.per_op[k]);
  out["per_op"] = ops;
  out["lag"] = summary(r.lag);
  out["lag"]["timeouts"] = r.lag_timeouts;
  out["lag"]["skipped"] = r.lag_skipped;
  out["lag"]["every"] = opt.lag_every;
  out["lag"]["timeout_ms"] = opt.lag_timeout_ms.count();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
