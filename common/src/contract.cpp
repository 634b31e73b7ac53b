#include "credits/common/contract.hpp"

#include "credits/common/assert.hpp"

namespace credits {

const event_type_info* find_event_type(std::string_view name) {
  for (const auto& t : event_types)
    if (t.name == name) return &t;
  return nullptr;
}

std::string cloudevents_type(const event_type_info& type) {
  return "dev.credits." + std::string(type.name) + ".v" + std::to_string(type.version);
}

std::string schema_uri(const event_type_info& type) {
  return "https://credits.dev/schemas/events/" + std::string(type.name) + ".v" + std::to_string(type.version) +
         ".schema.json";
}

header_list cloudevents_headers(const event& e, std::string_view source) {
  const auto* type = find_event_type(type_name(e.payload));
  CREDITS_ASSERT(type != nullptr, "an event type without a registry entry");
  return {{"ce_specversion", "1.0"},
          {"ce_id", e.event_id},
          {"ce_type", cloudevents_type(*type)},
          {"ce_source", std::string(source)},
          {"ce_time", format_time(e.occurred_at)},
          {"ce_subject", e.account_id},
          {"ce_dataschema", schema_uri(*type)},
          {"ce_partitionkey", e.account_id},
          {"content-type", "application/json"}};
}

}  // namespace credits
