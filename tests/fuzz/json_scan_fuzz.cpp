// libFuzzer target for the request body scanner (core/json_scan.hpp), checked against
// nlohmann::json: the scan never crashes; what it refuses as bad grammar nlohmann refuses too;
// what it accepts nlohmann accepts once sanitize_for_dom has replaced the lone surrogate escapes
// and out-of-range numbers it alone refuses; on bodies both accept, the fields it reads equal
// nlohmann's; and splicing edits into an accepted body keeps it valid with the edits visible.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "tollgate/core/json_scan.hpp"

using namespace tollgate::core;
using Json = nlohmann::ordered_json;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Every field present exactly where nlohmann has the member, with the same value.
void check_fields(std::string_view body, const BodyFields& f, const Json& j) {
  for (std::size_t i = 0; i < kBodyFieldCount; ++i) {
    auto name = std::string(field_name(static_cast<BodyField>(i)));
    const auto& v = f.values[i];
    check(v.present() == j.contains(name));
    if (!v.present()) continue;
    const auto& want = j[name];
    check(Json::parse(v.span.of(body)) == want);
    if (want.is_string()) check(as_string(body, v) == want.get<std::string>());
    if (want.is_boolean()) check(as_bool(body, v) == want.get<bool>());
    if (want.is_number_integer() && !want.is_number_unsigned()) {
      check(as_int(body, v) == want.get<std::int64_t>());
    }
    if (want.is_array()) check(v.items == want.size());
    // An object's members as written; nlohmann keeps one of a repeated key.
    if (want.is_object()) check((v.items == 0) == want.empty() && v.items >= want.size());
  }
  const auto* so = j.contains("stream_options") ? &j["stream_options"] : nullptr;
  bool has_usage = so != nullptr && so->is_object() && so->contains("include_usage");
  check(f.include_usage.present() == has_usage);
  if (has_usage) check(Json::parse(f.include_usage.span.of(body)) == (*so)["include_usage"]);
}

// Edits like the gateway's: a model rewrite, a new member, include_usage set. The result scans
// clean and shows them.
void check_splice(std::string_view body, const BodyFields& f) {
  BodyEdits edits;
  if (f[BodyField::kModel].present()) edits.replace(f[BodyField::kModel].span, R"("dep\u00e9")");
  edits.insert_member(f.object, "fuzz_added", "[1,{}]");
  const auto& so = f[BodyField::kStreamOptions];
  if (f.include_usage.present()) {
    edits.replace(f.include_usage.span, "true");
  } else if (so.kind == JsonKind::kObject) {
    edits.insert_member(so, "include_usage", "true");
  }
  auto out = edits.apply(body);
  auto again = scan_body(out, ScanLimits{1u << 20});
  check(!again.error);
  const auto& g = again.fields;
  if (f[BodyField::kModel].present()) check(as_string(out, g[BodyField::kModel]) == "dep\xC3\xA9");
  if (so.kind == JsonKind::kObject) check(as_bool(out, g.include_usage) == true);
  check(!Json::parse(sanitize_for_dom(out), nullptr, false).is_discarded());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto scan = scan_body(in, ScanLimits{1u << 20});  // no depth bound: compare grammar only
  (void)scan_body(in);                              // the default bound
  auto raw = Json::parse(in, nullptr, false);
  if (!scan.error || scan.error->kind == ScanErrorKind::kNotObject) {
    auto clean = Json::parse(sanitize_for_dom(in), nullptr, false);
    check(!clean.is_discarded());
    if (!scan.error && !raw.is_discarded()) check_fields(in, scan.fields, raw);
    if (!scan.error) check_splice(in, scan.fields);
  } else if (scan.error->kind == ScanErrorKind::kSyntax &&
             in.find('\0') == std::string_view::npos) {
    // nlohmann takes a NUL byte for the end of its input (and ignores what follows): the scan
    // refuses a NUL outside strings, as RFC 8259 does.
    check(raw.is_discarded());
  }
  return 0;
}
