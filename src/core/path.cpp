#include "tollgate/core/path.hpp"

#include <vector>

namespace tollgate::core {

std::string_view describe(PathError e) {
  switch (e) {
    case PathError::kNone:
      return "";
    case PathError::kNotAbsolute:
      return "the request path must start with '/'";
    case PathError::kBadEscape:
      return "the request path has a malformed percent-escape";
    case PathError::kEncodedSlash:
      return "the request path has an encoded '/' or '\\' (%2F, %5C) in a segment";
    case PathError::kBackslash:
      return "the request path has a '\\'";
    case PathError::kParameter:
      return "the request path has a ';' parameter";
    case PathError::kControl:
      return "the request path has a control character";
    case PathError::kBadCharacter:
      return "the request path has a character that must be percent-encoded";
    case PathError::kAboveRoot:
      return "the request path climbs above the root with '..'";
  }
  return "the request path is not valid";
}

namespace {

constexpr bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// RFC 3986 pchar without ';' (refused) and without the percent-escapes (handled apart).
constexpr bool is_plain_pchar(unsigned char c) {
  return is_unreserved(c) ||
         std::string_view("!$&'()*+,=:@").find(static_cast<char>(c)) != std::string_view::npos;
}

constexpr bool is_control(unsigned char c) {
  return c < 0x20 || c == 0x7f;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

PathError raw_error(unsigned char c) {
  if (c == ';') return PathError::kParameter;
  if (c == '\\') return PathError::kBackslash;
  if (is_control(c)) return PathError::kControl;
  return PathError::kBadCharacter;
}

PathError escape_error(unsigned char c) {
  if (c == '/' || c == '\\') return PathError::kEncodedSlash;
  if (c == 0 || is_control(c)) return PathError::kControl;
  return PathError::kNone;
}

// One segment with its escapes normalised: unreserved decoded, the rest upper-case hex.
PathError normalise_segment(std::string_view in, std::string& out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (std::size_t i = 0; i < in.size(); ++i) {
    auto c = static_cast<unsigned char>(in[i]);
    if (c != '%') {
      if (!is_plain_pchar(c)) return raw_error(c);
      out += static_cast<char>(c);
      continue;
    }
    if (i + 2 >= in.size()) return PathError::kBadEscape;
    int hi = hex_value(in[i + 1]);
    int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return PathError::kBadEscape;
    auto b = static_cast<unsigned char>(hi * 16 + lo);
    if (auto e = escape_error(b); e != PathError::kNone) return e;
    if (is_unreserved(b)) {
      out += static_cast<char>(b);
    } else {
      out += '%';
      out += kHex[b >> 4];
      out += kHex[b & 0xf];
    }
    i += 2;
  }
  return PathError::kNone;
}

}  // namespace

CanonicalPath canonicalize_path(std::string_view path) {
  CanonicalPath out;
  if (path.empty() || path.front() != '/') {
    out.error = PathError::kNotAbsolute;
    return out;
  }
  std::vector<std::string> segs;
  bool trailing = false;  // the path ends in a directory: "/a/", "/a/.", "/a/b/.."
  std::string seg;
  std::size_t pos = 1;
  while (pos <= path.size()) {
    auto slash = path.find('/', pos);
    auto raw =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    pos = slash == std::string_view::npos ? path.size() + 1 : slash + 1;
    seg.clear();
    if (auto e = normalise_segment(raw, seg); e != PathError::kNone) {
      out.error = e;
      return out;
    }
    // Decoded first, so %2E%2E is a dot segment too.
    if (seg.empty() || seg == ".") {
      trailing = true;
    } else if (seg == "..") {
      if (segs.empty()) {
        out.error = PathError::kAboveRoot;
        return out;
      }
      segs.pop_back();
      trailing = true;
    } else {
      segs.push_back(seg);
      trailing = false;
    }
  }
  out.path = "/";
  for (std::size_t i = 0; i < segs.size(); ++i) {
    if (i > 0) out.path += '/';
    out.path += segs[i];
  }
  if (trailing && !segs.empty()) out.path += '/';
  return out;
}

}  // namespace tollgate::core
