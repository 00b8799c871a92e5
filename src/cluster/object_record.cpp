#include "cluster/object_record.hpp"

#include <charconv>

namespace tollgate::cluster {

namespace {

void append_field(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
}

// Takes one `<len>:<bytes>` field off the front of `in`.
std::optional<std::string> take_field(std::string_view& in) {
  auto colon = in.find(':');
  constexpr std::size_t kMaxDigits = 4;  // kMaxFieldBytes has 4
  if (colon == std::string_view::npos || colon == 0 || colon > kMaxDigits) return std::nullopt;
  auto digits = in.substr(0, colon);
  if (digits.size() > 1 && digits.front() == '0') return std::nullopt;
  std::size_t len = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), len);
  if (ec != std::errc{} || end != digits.data() + digits.size()) return std::nullopt;
  if (len > kMaxFieldBytes || in.size() - colon - 1 < len) return std::nullopt;
  std::string field(in.substr(colon + 1, len));
  in.remove_prefix(colon + 1 + len);
  return field;
}

}  // namespace

std::string encode_object(const ObjectRecord& r) {
  const auto& o = r.owner;
  std::string out;
  out.reserve(kRecordVersion.size() + 1 + 4 * 5 + o.backend.size() + o.deployment.size() +
              o.client.size() + o.tenant.size());
  out += kRecordVersion;
  out += r.billing == routing::Billing::kPending ? kBillingPending : kBillingSettled;
  append_field(out, o.backend);
  append_field(out, o.deployment);
  append_field(out, o.client);
  append_field(out, o.tenant);
  return out;
}

std::optional<ObjectRecord> decode_object(std::string_view value) {
  if (value.size() <= kBillingOffset || !value.starts_with(kRecordVersion)) return std::nullopt;
  ObjectRecord r;
  switch (value[kBillingOffset]) {
    case kBillingSettled: r.billing = routing::Billing::kSettled; break;
    case kBillingPending: r.billing = routing::Billing::kPending; break;
    default: return std::nullopt;
  }
  auto rest = value.substr(kBillingOffset + 1);
  for (auto* field : {&r.owner.backend, &r.owner.deployment, &r.owner.client, &r.owner.tenant}) {
    auto f = take_field(rest);
    if (!f) return std::nullopt;
    *field = std::move(*f);
  }
  if (!rest.empty() || r.owner.backend.empty()) return std::nullopt;
  return r;
}

}  // namespace tollgate::cluster
