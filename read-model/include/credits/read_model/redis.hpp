#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// The Redis client of the read model: its writer (the projector) and its readers (the API's query side, verify)
// share it. Wraps hiredis; the rest of the code never touches a hiredis handle.
namespace credits::read_model {

// The highest database number CREDITS_REDIS_DB may name: the view owns a whole database (layout.hpp).
inline constexpr int redis_db_max = 1023;

// A command in Redis's wire form (RESP: an array of bulk strings), written word by word, for a writer of long
// commands that would rather not gather their words first: the header (the word count) goes in front at the end.
class resp_writer {
 public:
  void word(std::string_view w);
  std::size_t words() const { return words_; }
  std::string finish() &&;  // the whole command

 private:
  std::string body_;
  std::size_t words_ = 0;
};
// The same for a command given as its words.
std::string resp(const std::vector<std::string>& args);

// One synchronous connection to a Redis server or a Redis Cluster, whichever `host:port` turns out to be
// (INFO cluster). On a cluster it holds a hiredis connection per master it has used, sends each command to the
// master of its key's slot (keyless commands to the configured node), and follows MOVED, ASK and TRYAGAIN
// redirections, re-reading the slot map on MOVED. CLIENT SETNAME and SCRIPT LOAD go to every master and are
// replayed on nodes it connects to later; they may not be part of a pipeline there. Commands of one pipeline
// run in order per node; a redirected one runs after the rest of its pipeline. Not thread-safe: one owner at a
// time (see connection_pool).
class redis_connection {
 public:
  redis_connection(const std::string& host, int port, std::chrono::milliseconds timeout);
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  // Runs one command; throws std::runtime_error on a connection or protocol error. Integer replies come back
  // as their decimal text, nil as nullopt, arrays flattened into `array`.
  struct reply {
    std::optional<std::string> value;
    std::vector<std::optional<std::string>> array;
  };
  reply run(const std::vector<std::string>& args);

  // Sends all commands in one round trip and returns their replies in order.
  std::vector<reply> pipeline(const std::vector<std::vector<std::string>>& commands);

  // Like pipeline, but each error reply comes back in its command's place instead of being thrown, for
  // callers that expect some commands to be refused. I/O errors still throw.
  struct outcome {
    reply value;
    std::optional<std::string> error;  // Redis's error reply, e.g. "GAP ..."
  };
  std::vector<outcome> pipeline_each(const std::vector<std::vector<std::string>>& commands);
  // The same for commands already in their wire form (resp_writer). One server only: on a cluster, where each
  // command goes by its key, it throws std::logic_error.
  std::vector<outcome> pipeline_each_resp(const std::vector<std::string>& commands);
  // Writes one command in wire form to the socket at once, so Redis can run it while the caller prepares the
  // next; receive() reads its reply. One server only, as pipeline_each_resp.
  void send_resp(std::string_view command);

  // pipeline_each in two halves, so the caller can work while Redis executes: send() writes the commands,
  // receive() reads the replies of the `count` oldest commands not yet received.
  void send(const std::vector<std::vector<std::string>>& commands);
  std::vector<outcome> receive(std::size_t count);

  bool broken() const;     // true after an I/O error: discard and reconnect
  bool clustered() const;  // connected to a Redis Cluster
  // How many MOVED, ASK and TRYAGAIN replies this connection has followed (0 unless clustered).
  std::uint64_t redirections() const;

  // Every key matching `pattern` (SCAN MATCH, `count` per call), on every master of a cluster.
  std::vector<std::string> scan(std::string_view pattern, std::size_t count);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// An error reply from Redis (run and pipeline throw it): the connection is still usable, unlike after the
// plain std::runtime_error of an I/O error. The message starts with Redis's error code, e.g. "NOSCRIPT".
class reply_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Redis Cluster's key placement: the slot is CRC16 of the hash tag (the text between the first '{' and the
// next '}', when not empty; else the whole key) modulo 16384.
inline constexpr std::size_t cluster_slots = 16384;
std::string_view hash_tag(std::string_view key);
std::uint16_t cluster_slot(std::string_view key);
// The key a command is routed by: the first key of EVAL/EVALSHA, none for keyless commands (PING, INFO,
// CLIENT, SCRIPT, SELECT, SCAN, ...), otherwise its first argument.
std::optional<std::string_view> command_key(const std::vector<std::string>& args);

}  // namespace credits::read_model
