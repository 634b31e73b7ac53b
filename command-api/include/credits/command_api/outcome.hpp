#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace credits::api {

// A position in the log, as clients see it: "<topic>:<partition>:<offset>".
struct log_position {
  std::string topic;
  std::int32_t partition = -1;
  std::int64_t offset = -1;

  std::string to_string() const;
  static std::optional<log_position> parse(std::string_view text);
};

// The answer to one command.
struct outcome {
  unsigned status = 200;
  nlohmann::json body;
  std::string position;   // where the command's event sits in the log; empty when nothing was written
  bool replayed = false;  // an Idempotency-Key retry answered from the first attempt
};

}  // namespace credits::api
