#pragma once
// The value of a stored object's owner record in the cluster's store (`<prefix>object:<id>`):
// routing::ObjectOwner and routing::Billing in a compact, versioned text. A value read back is
// never trusted: anything that is not exactly one valid record decodes as nothing (a miss).
//
//   o1<billing><len>:<backend><len>:<deployment><len>:<client><len>:<tenant>
//
// <billing> is 's' (settled) or 'p' (pending) at a fixed offset (kBillingOffset), so the claim
// script can read and flip it without decoding the rest; <len> is the decimal byte count of the
// field that follows (no sign, no leading zero unless 0, at most kMaxFieldBytes). Thread: any.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "tollgate/routing/affinity.hpp"

namespace tollgate::cluster {

/// What the store holds for one object.
struct ObjectRecord {
  routing::ObjectOwner owner;
  routing::Billing billing = routing::Billing::kSettled;
  bool operator==(const ObjectRecord&) const = default;
};

inline constexpr std::string_view kRecordVersion = "o1";
inline constexpr std::size_t kBillingOffset = kRecordVersion.size();  // 0-based
inline constexpr char kBillingSettled = 's';
inline constexpr char kBillingPending = 'p';
/// Longest field accepted (names are far shorter; the bound keeps a bad value cheap to reject).
inline constexpr std::size_t kMaxFieldBytes = 1024;

/// The value for `r`. A field longer than kMaxFieldBytes makes a value decode_object refuses
/// (the caller then finds nothing, as for an unknown id): config names never are.
std::string encode_object(const ObjectRecord& r);
/// The record `value` holds; nullopt unless it is exactly one valid record with a backend.
std::optional<ObjectRecord> decode_object(std::string_view value);

}  // namespace tollgate::cluster
