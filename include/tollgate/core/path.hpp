#pragma once
// The one canonical spelling of a request path, so that classification, policy and the backend
// all see the same operation however the client spelled it. Plain C++, no state. Thread: any.
// See docs/architecture.md ("Canonical paths").

#include <cstdint>
#include <string>
#include <string_view>

namespace tollgate::core {

/// Why a path has no canonical form (the request is refused with 400).
enum class PathError : std::uint8_t {
  kNone,
  kNotAbsolute,   // does not start with '/'
  kBadEscape,     // '%' not followed by two hex digits
  kEncodedSlash,  // %2F or %5C: a separator hidden in a segment
  kBackslash,     // a raw '\'
  kParameter,     // a ';' path parameter
  kControl,       // a NUL or another control character, raw or encoded
  kBadCharacter,  // a byte that may not appear raw in a path (space, non-ASCII, '"', ...)
  kAboveRoot,     // ".." climbs above '/'
};

/// A client-safe sentence for `e` (the message of the 400).
std::string_view describe(PathError e);

struct CanonicalPath {
  std::string path;  // valid when error == kNone
  PathError error = PathError::kNone;
  bool ok() const { return error == PathError::kNone; }
};

/// The canonical form of the path part of an origin-form target (no query): percent-escapes of
/// unreserved characters (ALPHA DIGIT - . _ ~) decoded and the others in upper-case hex, empty
/// segments dropped (`//` collapses), dot segments removed (RFC 3986 §5.2.4); a trailing '/' is
/// kept as one. Refuses the spellings listed in PathError. Idempotent: canonicalizing a
/// canonical path returns it unchanged. Case is kept (matching is the caller's business).
CanonicalPath canonicalize_path(std::string_view path);

}  // namespace tollgate::core
