// libFuzzer target for the decoder of stored-object owner records read from the cluster's store
// (cluster/object_record.hpp): a value is never trusted. The decoder never crashes; whatever it
// accepts encodes back to exactly the same bytes (one encoding per record, nothing ignored), has
// a backend, and keeps every field within kMaxFieldBytes.

#include <cstdint>
#include <string_view>

#include "cluster/object_record.hpp"

using namespace tollgate::cluster;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view value(reinterpret_cast<const char*>(data), size);
  auto r = decode_object(value);
  if (!r) return 0;
  check(encode_object(*r) == value);
  const auto& o = r->owner;
  check(!o.backend.empty());
  for (const auto* f : {&o.backend, &o.deployment, &o.client, &o.tenant}) check(f->size() <= kMaxFieldBytes);
  check(decode_object(encode_object(*r)) == r);
  return 0;
}
