#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <mutex>
#include <vector>

#include "credits/api_config.hpp"
#include "credits/read_model.hpp"
#include "credits/writer.hpp"

namespace credits::api {

// Redis connections for the query endpoints, used from the blocking pool only.
class redis_pool {
 public:
  explicit redis_pool(const config& cfg) : cfg_(cfg) {}
  std::unique_ptr<read_model::redis_connection> acquire();
  void release(std::unique_ptr<read_model::redis_connection> c);

 private:
  const config& cfg_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<read_model::redis_connection>> idle_;
};

// The HTTP surface: a Beast server with one coroutine per connection (each on its own strand), routing to
// the writer for commands and to Redis for queries. Blocking Redis calls run on `blocking_`, never on the
// I/O threads. Lifecycle: construct, listen(), run the io_context; shutdown() closes the acceptor.
class http_api {
 public:
  http_api(const config& cfg, boost::asio::io_context& io, writer& w);
  ~http_api();

  // Binds and starts accepting; returns the bound port (useful with port 0).
  std::uint16_t listen();
  void shutdown();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace credits::api
