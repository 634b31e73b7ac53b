#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <stdexcept>

#include "credits/event_store/idempotent_producer.hpp"
#include "credits/event_store/partition_reader.hpp"
#include "credits/event_store/topics.hpp"
#include "credits/projector/operations.hpp"

namespace credits::ops {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr std::string_view export_format = "credits-export";
// Version 2 added the key log (keysTopic) and the records' headers; version 1 files still import.
constexpr int export_version = 2;
constexpr int export_version_min = 1;
constexpr milliseconds metadata_timeout_ms{10'000};
constexpr milliseconds create_topics_timeout_ms{30'000};
constexpr milliseconds poll_timeout_ms{500};
constexpr std::size_t export_line_bytes_max = 64 * 1024 * 1024;  // far above Kafka's 1 MiB default record

constexpr char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct file_closer {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using file_ptr = std::unique_ptr<std::FILE, file_closer>;

bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();  // the strict error handler throws on invalid UTF-8
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

// A key or value as JSON: the text itself when it is UTF-8 (events always are), base64 otherwise.
void put_bytes(json& line, const char* field, const std::string& bytes) {
  if (valid_utf8(bytes))
    line[field] = bytes;
  else
    line[std::string(field) + "Base64"] = base64_encode(bytes);
}

std::string get_bytes(const json& line, const char* field) {
  if (const auto it = line.find(field); it != line.end() && it->is_string()) return it->get<std::string>();
  const auto b64 = std::string(field) + "Base64";
  if (const auto it = line.find(b64); it != line.end() && it->is_string()) {
    auto decoded = base64_decode(it->get<std::string>());
    if (!decoded) throw std::runtime_error(b64 + " is not base64");
    return *decoded;
  }
  throw std::runtime_error(std::string("no ") + field);
}

std::int64_t get_int(const json& line, const char* field) {
  const auto it = line.find(field);
  if (it == line.end() || !it->is_number_integer()) throw std::runtime_error(std::string("no integer ") + field);
  return it->get<std::int64_t>();
}

void say(std::FILE* out, const std::string& line) {
  std::fprintf(out, "%s\n", line.c_str());
  std::fflush(out);
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const auto n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                   static_cast<unsigned char>(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out.push_back(base64_alphabet[n >> shift & 63]);
  }
  if (i < bytes.size()) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out.push_back(base64_alphabet[n >> 18 & 63]);
    out.push_back(base64_alphabet[n >> 12 & 63]);
    out.push_back(i + 1 < bytes.size() ? base64_alphabet[n >> 6 & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const int pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=') : 0;
    std::uint32_t n = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const int v = k >= 4 - static_cast<std::size_t>(pad) ? 0 : value(text[i + k]);
      if (v < 0) return std::nullopt;
      n = n << 6 | static_cast<std::uint32_t>(v);
    }
    out.push_back(static_cast<char>(n >> 16 & 0xff));
    if (pad < 2) out.push_back(static_cast<char>(n >> 8 & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(n & 0xff));
  }
  return out;
}

json export_header(const std::string& ledger_topic, const std::string& usage_topic, const std::string& keys_topic,
                   const std::map<std::string, std::int32_t>& partitions) {
  return {{"format", export_format},   {"version", export_version}, {"ledgerTopic", ledger_topic},
          {"usageTopic", usage_topic}, {"keysTopic", keys_topic},   {"partitions", partitions}};
}

json export_line(const store::message& r) {
  json line{{"topic", r.topic}, {"partition", r.partition}, {"offset", r.offset}};
  put_bytes(line, "key", r.key);
  put_bytes(line, "value", r.value);
  if (r.timestamp_ms >= 0) line["timestamp"] = r.timestamp_ms;
  if (!r.headers.empty()) {
    auto& headers = line["headers"] = json::array();
    for (const auto& [name, value] : r.headers) {
      json h = json::object();
      put_bytes(h, "name", name);
      put_bytes(h, "value", value);
      headers.push_back(std::move(h));
    }
  }
  return line;
}

store::message parse_export_line(const json& line) {
  if (!line.is_object()) throw std::runtime_error("not a JSON object");
  store::message r;
  const auto topic = line.find("topic");
  if (topic == line.end() || !topic->is_string()) throw std::runtime_error("no topic");
  r.topic = topic->get<std::string>();
  const auto partition = get_int(line, "partition");
  if (partition < 0 || partition > INT32_MAX) throw std::runtime_error("partition out of range");
  r.partition = static_cast<std::int32_t>(partition);
  r.offset = get_int(line, "offset");
  r.key = get_bytes(line, "key");
  r.value = get_bytes(line, "value");
  r.timestamp_ms = line.contains("timestamp") ? get_int(line, "timestamp") : -1;
  if (const auto headers = line.find("headers"); headers != line.end()) {
    if (!headers->is_array()) throw std::runtime_error("headers is not an array");
    for (const auto& h : *headers) {
      if (!h.is_object()) throw std::runtime_error("a header is not a JSON object");
      r.headers.emplace_back(get_bytes(h, "name"), get_bytes(h, "value"));
    }
  }
  return r;
}

int export_log(const projector_config& config, const std::string& path, std::FILE* out) {
  store::partition_reader reader(config.brokers);
  std::map<std::string, std::int32_t> partitions;
  std::vector<store::start_point> from;
  std::set<std::pair<std::string, std::int32_t>> open;
  // The key log goes with the events: without it a restore would forget every ck_live_ key and every
  // revocation, and revoked bootstrap keys would work again.
  for (const auto& topic : {config.ledger_topic, config.usage_topic, config.keys_topic}) {
    if (!reader.topic_exists(topic, metadata_timeout_ms))
      throw std::runtime_error("export: topic " + topic + " does not exist" +
                               (topic == config.keys_topic ? " (the API key log, CREDITS_KEYS_TOPIC)" : ""));
    partitions[topic] = reader.partition_count(topic, metadata_timeout_ms);
    for (std::int32_t p = 0; p < partitions[topic]; ++p) {
      from.push_back({topic, p, 0});
      open.emplace(topic, p);
    }
  }
  // Written beside the target and renamed at the end, so a file at `path` is always a complete export.
  const auto partial = path + ".partial";
  file_ptr file(std::fopen(partial.c_str(), "w"));
  if (!file) throw std::runtime_error("cannot write " + partial);
  std::fprintf(file.get(), "%s\n",
               export_header(config.ledger_topic, config.usage_topic, config.keys_topic, partitions).dump().c_str());
  reader.assign(from);
  std::map<std::string, std::uint64_t> counts;
  std::uint64_t total = 0;
  const auto deadline = std::chrono::steady_clock::now() + milliseconds(config.log_read_timeout_ms);
  // Each partition is written up to where it first reported its end; what arrives later on it is written too
  // until every partition has ended, which keeps every partition a gap-free prefix of the log.
  while (!open.empty()) {
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("export: the log was not read to its end within the time limit");
    const auto r =
        reader.poll(poll_timeout_ms, [&](const std::string& topic, std::int32_t p) { open.erase({topic, p}); });
    if (!r) continue;
    std::fprintf(file.get(), "%s\n", export_line(*r).dump().c_str());
    ++counts[r->topic];
    ++total;
  }
  std::fprintf(file.get(), "%s\n",
               json{{"format", std::string(export_format) + "-end"}, {"records", total}}.dump().c_str());
  if (std::fflush(file.get()) != 0 || fsync(fileno(file.get())) != 0)
    throw std::runtime_error("cannot write " + partial);
  file.reset();
  if (std::rename(partial.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot rename " + partial + " to " + path);
  say(out, "export: " + std::to_string(total) + " records (" + config.ledger_topic + " " +
               std::to_string(counts[config.ledger_topic]) + ", " + config.usage_topic + " " +
               std::to_string(counts[config.usage_topic]) + ", " + config.keys_topic + " " +
               std::to_string(counts[config.keys_topic]) + ") written to " + path);
  return 0;
}

namespace {

struct checked_export {
  std::map<std::string, std::string> topic_map;    // exported topic -> configured topic
  std::map<std::string, std::int32_t> partitions;  // configured topic -> partition count
  bool has_keys = false;                           // a version 1 file has no key log
  std::uint64_t records = 0;
};

// The header's topics mapped to the configured ones, with their partition counts.
void read_export_header(const projector_config& config, const json& line, const std::string& where,
                        checked_export& out) {
  const auto version = line.value("version", 0);
  if (line.value("format", "") != export_format || version < export_version_min || version > export_version)
    throw std::runtime_error(where + "not a credits export (versions " + std::to_string(export_version_min) + " to " +
                             std::to_string(export_version) + ")");
  std::vector<std::pair<std::string, std::string>> names{{line.value("ledgerTopic", ""), config.ledger_topic},
                                                         {line.value("usageTopic", ""), config.usage_topic}};
  out.has_keys = version >= 2;
  if (out.has_keys) names.emplace_back(line.value("keysTopic", ""), config.keys_topic);
  const auto counts = line.find("partitions");
  if (counts == line.end() || !counts->is_object()) throw std::runtime_error(where + "no partitions");
  for (const auto& [from, to] : names) {
    if (from.empty() || !out.topic_map.emplace(from, to).second)
      throw std::runtime_error(where + "the header names a topic twice or not at all");
    const auto n = counts->value(from, 0);
    if (n <= 0) throw std::runtime_error(where + "no partition count for " + from);
    out.partitions[to] = n;
  }
}

// Reads the whole file once before anything is written: a truncated or damaged export is refused whole.
checked_export check_export(const projector_config& config, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  checked_export out;
  std::string text;
  std::uint64_t line_number = 0;
  bool ended = false;
  std::map<std::pair<std::string, std::int32_t>, std::int64_t> last_offset;
  while (std::getline(in, text)) {
    ++line_number;
    const auto where = path + ":" + std::to_string(line_number) + ": ";
    if (text.size() > export_line_bytes_max) throw std::runtime_error(where + "line too long");
    if (ended) throw std::runtime_error(where + "data after the end line");
    const auto line = json::parse(text, nullptr, false);
    if (line.is_discarded()) throw std::runtime_error(where + "not JSON");
    if (line_number == 1) {
      read_export_header(config, line, where, out);
      continue;
    }
    if (line.value("format", "") == std::string(export_format) + "-end") {
      if (line.value("records", std::uint64_t{0}) != out.records)
        throw std::runtime_error(where + "the end line counts " + std::to_string(line.value("records", 0)) +
                                 " records, the file has " + std::to_string(out.records));
      ended = true;
      continue;
    }
    store::message r;
    try {
      r = parse_export_line(line);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(where + e.what());
    }
    const auto mapped = out.topic_map.find(r.topic);
    if (mapped == out.topic_map.end()) throw std::runtime_error(where + "topic " + r.topic + " is not in the header");
    if (r.partition >= out.partitions[mapped->second]) throw std::runtime_error(where + "partition out of range");
    auto [it, fresh] = last_offset.try_emplace({r.topic, r.partition}, r.offset);
    if (!fresh) {
      if (r.offset <= it->second) throw std::runtime_error(where + "offsets of a partition out of order");
      it->second = r.offset;
    }
    ++out.records;
  }
  if (line_number == 0) throw std::runtime_error(path + ": empty");
  if (!ended) throw std::runtime_error(path + ": no end line (a truncated export?)");
  return out;
}

}  // namespace

int import_log(const projector_config& config, const std::string& path, std::FILE* out) {
  const auto checked = check_export(config, path);
  store::partition_reader probe(config.brokers);
  auto partitions = checked.partitions;
  partitions[dead_letter_topic(config)] = checked.partitions.at(config.ledger_topic);
  std::vector<store::topic_spec> missing;
  if (!checked.has_keys)
    say(out, "import: this export (version 1) has no API key log; " + config.keys_topic +
                 " is left as it is: create the keys again with credits-admin, and revoke the bootstrap keys again");
  for (const auto& [topic, count] : partitions) {
    if (!probe.topic_exists(topic, metadata_timeout_ms)) {
      // The log is the source of truth: it never ages out.
      missing.push_back({topic, count, {{"retention.ms", "-1"}, {"retention.bytes", "-1"}}});
      continue;
    }
    const auto have = probe.partition_count(topic, metadata_timeout_ms);
    if (have != count)
      throw std::runtime_error("topic " + topic + " has " + std::to_string(have) + " partitions, the export " +
                               std::to_string(count) + ": records would change partition");
    if (topic == dead_letter_topic(config)) continue;
    for (std::int32_t p = 0; p < have; ++p)
      if (probe.query_watermarks(topic, p, metadata_timeout_ms).high != 0)
        throw std::runtime_error("topic " + topic + " is not empty; import writes only into empty topics");
  }
  store::create_topics(config.brokers, missing, create_topics_timeout_ms);
  for (const auto& t : missing)
    say(out, "import: created topic " + t.name + " (" + std::to_string(t.partitions) + " partitions)");

  store::idempotent_producer producer(config.brokers);
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);  // the header, checked above
  std::uint64_t written = 0;
  progress_reporter progress(stderr, "import", milliseconds(config.progress_interval_ms));
  while (std::getline(in, text)) {
    const auto line = json::parse(text);
    if (line.contains("format")) break;  // the end line
    const auto r = parse_export_line(line);
    // The original partition, explicitly: a key's events must stay in one partition, in order, and the
    // projector checks that they sit where the partitioner would put them.
    producer.produce(checked.topic_map.at(r.topic), r.partition, r.key, r.value, r.headers, r.timestamp_ms);
    progress.update(++written, checked.records);
  }
  producer.flush(milliseconds(config.log_read_timeout_ms));
  progress.finish(written, checked.records);
  say(out, "import: " + std::to_string(written) + " records written to " + config.ledger_topic + ", " +
               config.usage_topic + (checked.has_keys ? " and " + config.keys_topic : std::string()) +
               "; build the view with `credits-projector rebuild`, then `verify`");
  return 0;
}

}  // namespace credits::ops
