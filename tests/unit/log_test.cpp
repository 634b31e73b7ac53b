#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "credits/common/env.hpp"
#include "credits/common/log.hpp"

namespace credits {
namespace {

using nlohmann::json;

constexpr time_ms some_time = 1'796'067'001'123;  // any instant with milliseconds

std::string line(std::string_view msg, std::initializer_list<log_field> fields = {}) {
  return format_log_line(some_time, log_level::warn, "credits-api", msg,
                         std::span<const log_field>(fields.begin(), fields.size()));
}

TEST(log_line, is_one_json_object_on_one_line_with_the_fixed_keys_first) {
  const auto text = line("listening");
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1);
  EXPECT_EQ(text.rfind("{\"ts\":\"", 0), 0u) << text;
  const auto j = json::parse(text);
  EXPECT_EQ(j["ts"], format_time(some_time));
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["component"], "credits-api");
  EXPECT_EQ(j["msg"], "listening");
  EXPECT_LT(text.find("\"level\""), text.find("\"component\""));
  EXPECT_LT(text.find("\"component\""), text.find("\"msg\""));
}

TEST(log_line, time_is_utc_with_milliseconds) {
  const auto j = json::parse(format_log_line(0, log_level::info, "c", "m", {}));
  EXPECT_EQ(j["ts"], "1970-01-01T00:00:00.000Z");
}

TEST(log_line, fields_keep_their_types) {
  const std::string request_id = "req_0123";
  const auto j = json::parse(line("m", {{"requestId", request_id},
                                        {"partition", std::int32_t{3}},
                                        {"offset", std::int64_t{-1}},
                                        {"events", std::size_t{512}},
                                        {"durationMs", 1.5},
                                        {"producerLost", true},
                                        {"route", std::string_view("/v1/accounts/get")}}));
  EXPECT_EQ(j["requestId"], "req_0123");
  EXPECT_EQ(j["partition"], 3);
  EXPECT_EQ(j["offset"], -1);
  EXPECT_EQ(j["events"], 512u);
  EXPECT_DOUBLE_EQ(j["durationMs"].get<double>(), 1.5);
  EXPECT_EQ(j["producerLost"], true);
  EXPECT_EQ(j["route"], "/v1/accounts/get");
}

TEST(log_line, quotes_backslashes_and_control_characters_are_escaped) {
  const std::string nasty = "say \"hi\"\\ then\nnew line\ttab\x01 and \x1f";
  const auto text = line(nasty, {{"field \"x\"", nasty}});
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "a newline in a message must not break the line";
  const auto j = json::parse(text);
  EXPECT_EQ(j["msg"], nasty);
  EXPECT_EQ(j["field \"x\""], nasty);
}

TEST(log_line, bytes_that_are_not_utf8_are_replaced_not_thrown) {
  const std::string bad = "caf\xc3 \xff\xfe";
  std::string text;
  ASSERT_NO_THROW(text = line(bad, {{"body", bad}}));
  const auto j = json::parse(text);
  EXPECT_NE(j["msg"].get<std::string>().find("\xef\xbf\xbd"), std::string::npos);  // U+FFFD
}

TEST(log_line, utf8_text_is_kept) {
  const auto j = json::parse(line("crédits ✓"));
  EXPECT_EQ(j["msg"], "crédits ✓");
}

TEST(log_line, non_finite_numbers_become_null) {
  const auto j = json::parse(line(
      "m", {{"ratio", std::numeric_limits<double>::quiet_NaN()}, {"rate", std::numeric_limits<double>::infinity()}}));
  EXPECT_TRUE(j["ratio"].is_null());
  EXPECT_TRUE(j["rate"].is_null());
}

TEST(log_line, fields_cannot_replace_the_fixed_keys) {
  const auto text = line("real", {{"msg", "fake"}, {"level", "debug"}, {"ts", "never"}, {"component", "x"}});
  const auto j = json::parse(text);
  EXPECT_EQ(j["msg"], "real");
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j.size(), 4u) << text;
}

TEST(log_rate_limit, lets_the_first_lines_of_each_second_through_and_counts_the_rest) {
  log_rate_limit limit(2);
  std::uint64_t dropped = 99;
  EXPECT_TRUE(limit.admit(10'000, dropped));
  EXPECT_EQ(dropped, 0u);
  EXPECT_TRUE(limit.admit(10'500, dropped));
  EXPECT_FALSE(limit.admit(10'600, dropped));
  EXPECT_FALSE(limit.admit(10'999, dropped));
  EXPECT_TRUE(limit.admit(11'000, dropped)) << "a new second";
  EXPECT_EQ(dropped, 2u) << "the line let through says how many were refused before it";
  EXPECT_TRUE(limit.admit(11'001, dropped));
  EXPECT_EQ(dropped, 0u);
}

TEST(log_rate_limit, a_clock_going_back_does_not_reopen_a_second) {
  log_rate_limit limit(1);
  std::uint64_t dropped = 0;
  EXPECT_TRUE(limit.admit(20'000, dropped));
  EXPECT_FALSE(limit.admit(19'000, dropped));
  EXPECT_FALSE(limit.admit(20'500, dropped));
  EXPECT_TRUE(limit.admit(21'000, dropped));
  EXPECT_EQ(dropped, 2u);
}

TEST(log_level_names, are_the_usual_words) {
  EXPECT_EQ(to_string(log_level::debug), "debug");
  EXPECT_EQ(to_string(log_level::info), "info");
  EXPECT_EQ(to_string(log_level::warn), "warn");
  EXPECT_EQ(to_string(log_level::error), "error");
}

TEST(env_reader, reads_bounded_settings_and_names_the_variable_it_refuses) {
  const std::map<std::string, std::string> env{
      {"CREDITS_A", "42"}, {"CREDITS_B", "7x"}, {"CREDITS_C", "100"}, {"CREDITS_D", ""}, {"CREDITS_E", "text"}};
  const env_lookup lookup = [&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  const env_reader r{lookup};
  int n = 1;
  r.number("CREDITS_A", n, 0, 50);
  EXPECT_EQ(n, 42);
  r.number("CREDITS_UNSET", n, 0, 50);
  EXPECT_EQ(n, 42);
  std::chrono::milliseconds ms{5};
  r.millis("CREDITS_A", ms, 0, 50);
  EXPECT_EQ(ms.count(), 42);
  std::string s = "default";
  r.text("CREDITS_E", s);
  EXPECT_EQ(s, "text");
  const auto refusal = [&](auto read) -> std::string {
    try {
      read();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "accepted";
  };
  EXPECT_EQ(refusal([&] { r.number("CREDITS_B", n, 0, 50); }), "CREDITS_B=7x is not an integer");
  EXPECT_EQ(refusal([&] { r.number("CREDITS_C", n, 0, 50); }), "CREDITS_C=100 is out of range [0, 50]");
  EXPECT_EQ(refusal([&] { r.text("CREDITS_D", s); }), "CREDITS_D is set but empty");
  EXPECT_EQ(n, 42);
}

}  // namespace
}  // namespace credits
