#pragma once
// A validating, DOM-free scan of a JSON request body: one pass over the bytes that checks the
// whole text against RFC 8259 and records, for the top-level object, where the values of the
// members the gateway reads lie (byte spans), so classification reads them without a DOM and the
// gateway edits the body by splicing bytes (BodyEdits) instead of re-serialising it.
//
// What is accepted (the contract the fuzz target checks against nlohmann::json):
// - strict RFC 8259 grammar; whitespace is space, tab, CR, LF; a leading UTF-8 byte order mark is
//   skipped (as nlohmann does);
// - strings must be valid UTF-8 (RFC 3629: no overlongs, no encoded surrogates, nothing above
//   U+10FFFF) and contain no raw control character: the backends refuse such text anyway, and
//   this keeps the scanner's verdict equal to nlohmann's;
// - escapes are validated; a lone surrogate escape ("\ud800") is valid JSON and ACCEPTED;
// - numbers of any length are accepted by their grammar (no conversion);
// - nesting deeper than ScanLimits::max_depth containers is refused (kTooDeep);
// - a member the gateway reads (BodyField) appearing twice in the top-level object, or
//   include_usage twice in stream_options, is refused (kDuplicateKey): the gateway and the
//   backend could otherwise act on different values.
// Thread: any; no state. Allocation: none for bodies whose keys have no escapes.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::core {

/// A byte range of the body.
struct Span {
  std::size_t offset = 0;
  std::size_t length = 0;
  std::size_t end() const { return offset + length; }
  std::string_view of(std::string_view body) const { return body.substr(offset, length); }
};

enum class JsonKind : std::uint8_t { kAbsent, kNull, kBool, kNumber, kString, kArray, kObject };

/// One value of the body: its kind and its bytes (quotes and brackets included).
struct JsonValue {
  JsonKind kind = JsonKind::kAbsent;
  Span span;
  std::size_t items = 0;  // arrays: elements; objects: members (direct children only)

  bool present() const { return kind != JsonKind::kAbsent; }
  /// Splice point of an object: just after its '{'.
  std::size_t inside() const { return span.offset + 1; }
};

/// The top-level members the gateway reads.
enum class BodyField : std::uint8_t {
  kModel,
  kStream,
  kStreamOptions,
  kMaxTokens,
  kMaxCompletionTokens,
  kMaxOutputTokens,
  kN,
  kBestOf,
  kMessages,
  kInput,
  kStore,
  kBackground,  // Responses: answered before it runs; billed when its usage is seen
  kTools,  // counted into the prompt estimate
  kFunctions,
  kResponseFormat,
  kPrompt,  // completions: counted into the prompt estimate
  kSuffix,
  // Object ids (core/objects.hpp): strings ...
  kPreviousResponseId,
  kThreadId,
  kAssistantId,
  kFileId,
  kInputFileId,
  kVectorStoreId,
  kTrainingFile,
  kValidationFile,
  kConversation,
  // ... and lists of strings.
  kFileIds,
  kVectorStoreIds,
};
inline constexpr std::size_t kBodyFieldCount =
    static_cast<std::size_t>(BodyField::kVectorStoreIds) + 1;

/// The member name of `f` ("max_tokens").
std::string_view field_name(BodyField f);

/// What a scan found in a top-level object. Absent members have kind kAbsent.
struct BodyFields {
  std::array<JsonValue, kBodyFieldCount> values;
  JsonValue include_usage;  // stream_options.include_usage
  JsonValue object;         // the top-level value itself

  const JsonValue& operator[](BodyField f) const { return values[static_cast<std::size_t>(f)]; }
  JsonValue& operator[](BodyField f) { return values[static_cast<std::size_t>(f)]; }
};

struct ScanLimits {
  // Containers nested; the top-level object is depth 1. The scan recurses two frames per level
  // (a few hundred bytes of stack), so this also bounds its stack (config allows up to 1024).
  std::uint32_t max_depth = 64;
};

enum class ScanErrorKind : std::uint8_t { kSyntax, kTooDeep, kDuplicateKey, kNotObject };

struct ScanError {
  ScanErrorKind kind = ScanErrorKind::kSyntax;
  std::size_t offset = 0;  // where the scan stopped
  std::string_view key;    // kDuplicateKey: the member's name (static storage)
};

struct BodyScan {
  BodyFields fields;
  std::optional<ScanError> error;
};

/// Validates `body` and reads the fields of its top-level object. Never throws.
BodyScan scan_body(std::string_view body, ScanLimits limits = {});

// ---- decoded values (of values the scan returned; nullopt when the kind differs) ------------

std::optional<bool> as_bool(std::string_view body, const JsonValue& v);
/// An integer written without fraction or exponent. Beyond int64 it saturates to the nearest
/// bound (so a cap still applies to an absurd request).
std::optional<std::int64_t> as_int(std::string_view body, const JsonValue& v);
/// A string, unescaped; a lone surrogate escape becomes U+FFFD.
std::optional<std::string> as_string(std::string_view body, const JsonValue& v);
/// The string elements of an array, decoded (other elements skipped).
std::vector<std::string> string_elements(std::string_view body, const JsonValue& v);
/// Calls `f` with each element of the array `v` (of a scan of `body`) until it returns false.
void each_element(std::string_view body, const JsonValue& v,
                  const std::function<bool(const JsonValue&)>& f);

/// Calls `f` with the raw name (the bytes between its quotes, escapes not decoded) and the value
/// of each member of the object `v` (of a scan of `body`) until it returns false.
void each_member(std::string_view body, const JsonValue& v,
                 const std::function<bool(std::string_view, const JsonValue&)>& f);
/// A string's text as a view of `body` when it has no escape (nothing to decode); nullopt for an
/// escaped string (use as_string) or another kind.
std::optional<std::string_view> plain_string(std::string_view body, const JsonValue& v);

/// A copy of a body the scanner accepted that nlohmann::json also accepts: lone surrogate
/// escapes become \ufffd and numbers beyond a double's range become 0 (same length or shorter;
/// nothing else changes). For the token estimate only, never for forwarding.
std::string sanitize_for_dom(std::string_view body);

// ---- edits -------------------------------------------------------------------------------

/// Changes to a body, applied in one pass; every byte not covered by an edit stays as sent.
class BodyEdits {
 public:
  /// Replaces the bytes of `span` (a value) by `json` (a JSON text). A second replacement of
  /// the same span replaces the first.
  void replace(Span span, std::string json);
  /// Adds `"key":json` as the first member of `object` (an object value of the scan).
  void insert_member(const JsonValue& object, std::string_view key, std::string json);
  bool empty() const { return edits_.empty(); }
  /// `body` with the edits applied (spans must come from a scan of `body`).
  std::string apply(std::string_view body) const;

 private:
  struct Edit {
    Span span;
    std::string text;
    bool member = false;        // an inserted member (length 0): commas are added on apply
    bool object_empty = false;  // member: the object had no members
  };
  std::vector<Edit> edits_;  // in the order made; apply() orders them by offset, stably
};

}  // namespace tollgate::core
