#pragma once

#include <array>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "credits/common/events.hpp"
#include "credits/common/keys.hpp"

// The published contract of the topics (docs/events/): the registry of event types with their versions, and
// the CloudEvents Kafka binding headers every event record carries.
namespace credits {

struct event_type_info {
  std::string_view name;  // the envelope's "type"
  int version;            // the envelope's "schemaVersion"; a breaking change gets a new version
  stream topic;
};

// Every event type the system writes: the ledger's and the key log's. A unit test checks that each has a schema
// in docs/events/ and each schema a type here, and the static_assert below that no payload type is missing.
inline constexpr std::array<event_type_info, 13> event_types{{
    {"AccountCreated", 1, stream::ledger},
    {"CreditsAdded", 1, stream::ledger},
    {"CreditsDeducted", 1, stream::ledger},
    {"CreditsReserved", 1, stream::ledger},
    {"ReservationConfirmed", 1, stream::ledger},
    {"ReservationCancelled", 1, stream::ledger},
    {"ReservationExpired", 1, stream::ledger},
    {"BalanceLow", 1, stream::ledger},
    {"TransactionReversed", 1, stream::ledger},
    {"EventVoided", 1, stream::ledger},
    {"UsageRecorded", 1, stream::usage},
    {"ApiKeyCreated", 1, stream::keys},
    {"ApiKeyRevoked", 1, stream::keys},
}};
static_assert(event_types.size() == std::variant_size_v<event_payload> + std::variant_size_v<key_event_payload>,
              "an event type is missing from the registry");

const event_type_info* find_event_type(std::string_view name);

// CloudEvents 1.0: "dev.credits.CreditsAdded.v1".
std::string cloudevents_type(const event_type_info& type);
// The event's JSON Schema, as its "$id" in docs/events/ names it.
std::string schema_uri(const event_type_info& type);

inline constexpr std::string_view default_event_source = "/credits/command-api";

using header_list = std::vector<std::pair<std::string, std::string>>;

// The CloudEvents Kafka protocol binding in binary content mode: attributes as ce_* headers, the record value
// (the JSON envelope) as the event data. ce_partitionkey is the partitioning extension (the record key).
header_list cloudevents_headers(const event& e, std::string_view source);

}  // namespace credits
