// Image token costs (OpenAI vision docs) and header sniffing for data: URLs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

#include "tollgate/tokenize/estimate.hpp"
#include "utf8.hpp"

namespace tollgate::tokenize {
namespace {

using detail::starts_with_ci;

// Reads image headers through `at(i)` (byte i, or -1 past the end / on a decoding error), so a
// base64 payload is decoded only where the header is.
template <class ByteAt>
std::optional<ImageSize> sniff(ByteAt&& at) {
  auto u8 = [&](std::size_t i) { return at(i); };
  auto be16 = [&](std::size_t i) -> long {
    const int a = u8(i), b = u8(i + 1);
    return a < 0 || b < 0 ? -1 : (a << 8) | b;
  };
  auto le16 = [&](std::size_t i) -> long {
    const int a = u8(i), b = u8(i + 1);
    return a < 0 || b < 0 ? -1 : (b << 8) | a;
  };
  auto be32 = [&](std::size_t i) -> long long {
    const long a = be16(i), b = be16(i + 2);
    return a < 0 || b < 0 ? -1 : (static_cast<long long>(a) << 16) | b;
  };
  auto le24 = [&](std::size_t i) -> long {
    const int a = u8(i), b = u8(i + 1), c = u8(i + 2);
    return a < 0 || b < 0 || c < 0 ? -1 : a | (b << 8) | (c << 16);
  };
  auto match = [&](std::size_t i, std::string_view sig) {
    for (std::size_t k = 0; k < sig.size(); ++k) {
      if (u8(i + k) != static_cast<unsigned char>(sig[k])) return false;
    }
    return true;
  };
  auto make = [](long long w, long long h) -> std::optional<ImageSize> {
    if (w <= 0 || h <= 0 || w > 0xFFFFFFFFll || h > 0xFFFFFFFFll) return std::nullopt;
    return ImageSize{static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(h)};
  };

  if (match(0, "\x89PNG\r\n\x1a\n") && match(12, "IHDR")) return make(be32(16), be32(20));
  if (match(0, "GIF87a") || match(0, "GIF89a")) return make(le16(6), le16(8));
  if (match(0, "RIFF") && match(8, "WEBP")) {
    if (match(12, "VP8 ") && match(23, "\x9d\x01\x2a")) {
      const long w = le16(26), h = le16(28);
      if (w < 0 || h < 0) return std::nullopt;
      return make(w & 0x3FFF, h & 0x3FFF);
    }
    if (match(12, "VP8L") && u8(20) == 0x2F) {
      const long lo = le16(21), hi = le16(23);
      if (lo < 0 || hi < 0) return std::nullopt;
      const unsigned long bits =
          static_cast<unsigned long>(lo) | (static_cast<unsigned long>(hi) << 16);
      return make(static_cast<long long>(bits & 0x3FFF) + 1,
                  static_cast<long long>((bits >> 14) & 0x3FFF) + 1);
    }
    if (match(12, "VP8X")) {
      const long w = le24(24), h = le24(27);
      if (w < 0 || h < 0) return std::nullopt;
      return make(static_cast<long long>(w) + 1, static_cast<long long>(h) + 1);
    }
    return std::nullopt;
  }
  if (u8(0) == 0xFF && u8(1) == 0xD8) {
    // Walk the marker segments up to the first frame header (SOFn).
    std::size_t pos = 2;
    for (int segments = 0; segments < 1024; ++segments) {
      if (u8(pos) != 0xFF) return std::nullopt;
      int marker = u8(pos + 1);
      while (marker == 0xFF) marker = u8(++pos + 1);  // fill bytes
      if (marker < 0) return std::nullopt;
      pos += 2;
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length
      if (marker == 0xD9 || marker == 0xDA) return std::nullopt;           // EOI / SOS first
      const long len = be16(pos);
      if (len < 2) return std::nullopt;
      const bool sof =
          marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) return make(be16(pos + 5), be16(pos + 3));
      pos += static_cast<std::size_t>(len);
    }
  }
  return std::nullopt;
}

int base64_value(char ch) noexcept {
  const unsigned char c = static_cast<unsigned char>(ch);
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

// Random access into base64 text without decoding all of it.
class LazyBase64 {
 public:
  explicit LazyBase64(std::string_view b64) : b64_(b64) {}

  int operator()(std::size_t i) {
    const std::size_t group = i / 3;
    if (group != cached_group_) {
      if (!decode_group(group)) return -1;
    }
    const std::size_t k = i % 3;
    return k < cached_len_ ? cached_[k] : -1;
  }

 private:
  bool decode_group(std::size_t group) {
    cached_group_ = group;
    cached_len_ = 0;
    const std::size_t at = group * 4;
    if (at >= b64_.size()) return false;
    std::uint32_t w = 0;
    std::size_t chars = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = at + k < b64_.size() ? b64_[at + k] : '=';
      if (c == '=') break;
      const int v = base64_value(c);
      if (v < 0) return false;
      w |= static_cast<std::uint32_t>(v) << (18 - 6 * k);
      ++chars;
    }
    if (chars < 2) return false;
    cached_[0] = static_cast<int>((w >> 16) & 0xFF);
    cached_[1] = static_cast<int>((w >> 8) & 0xFF);
    cached_[2] = static_cast<int>(w & 0xFF);
    cached_len_ = chars - 1;
    return true;
  }

  std::string_view b64_;
  std::size_t cached_group_ = ~std::size_t{0};
  std::size_t cached_len_ = 0;
  int cached_[3] = {0, 0, 0};
};

struct ImageRule {
  std::uint32_t base = 85;  // tile models
  std::uint32_t tile = 170;
  double patch_multiplier = 0;  // > 0: a patch model
};

ImageRule rule_for(std::string_view model) noexcept {
  if (starts_with_ci(model, "ft:")) model.remove_prefix(3);
  struct Entry {
    std::string_view prefix;
    ImageRule rule;
  };
  // Most specific first.
  static constexpr Entry kRules[] = {
      {"gpt-4.1-mini", {0, 0, 1.62}}, {"gpt-4.1-nano", {0, 0, 2.46}},
      {"o4-mini", {0, 0, 1.72}},      {"gpt-5-mini", {0, 0, 1.2}},
      {"gpt-5-nano", {0, 0, 1.5}},    {"gpt-4o-mini", {2833, 5667, 0}},
      {"o1", {75, 150, 0}},           {"o3", {75, 150, 0}},
      {"gpt-5", {70, 140, 0}},        {"computer-use", {65, 129, 0}},
  };
  for (const Entry& e : kRules) {
    if (starts_with_ci(model, e.prefix)) return e.rule;
  }
  return ImageRule{};
}

std::uint64_t ceil_div(double x, double d) {
  return static_cast<std::uint64_t>(std::ceil(x / d - 1e-9));
}

}  // namespace

std::optional<ImageSize> sniff_image_size(std::string_view bytes) {
  return sniff([bytes](std::size_t i) -> int {
    return i < bytes.size() ? static_cast<unsigned char>(bytes[i]) : -1;
  });
}

std::optional<ImageSize> image_size_from_url(std::string_view url) {
  if (!starts_with_ci(url, "data:")) return std::nullopt;
  const std::size_t comma = url.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  const std::string_view meta = url.substr(5, comma - 5);
  if (meta.size() < 7 || !starts_with_ci(meta.substr(meta.size() - 7), ";base64")) {
    return std::nullopt;
  }
  LazyBase64 bytes(url.substr(comma + 1));
  return sniff(bytes);
}

std::uint64_t image_tokens(std::string_view model, std::optional<ImageSize> size,
                           ImageDetail detail) {
  const ImageRule rule = rule_for(model);
  if (size && (size->width == 0 || size->height == 0)) size.reset();
  if (rule.patch_multiplier > 0) {
    constexpr double kMaxPatches = 1536;
    double patches = kMaxPatches;
    if (size) {
      double w = size->width, h = size->height;
      patches = static_cast<double>(ceil_div(w, 32) * ceil_div(h, 32));
      if (patches > kMaxPatches) {
        const double shrink = std::sqrt(32.0 * 32.0 * kMaxPatches / (w * h));
        const double ws = w * shrink / 32, hs = h * shrink / 32;
        const double adjusted = shrink * std::min(std::floor(ws) / ws, std::floor(hs) / hs);
        w = std::floor(w * adjusted);
        h = std::floor(h * adjusted);
        patches = static_cast<double>(ceil_div(w, 32) * ceil_div(h, 32));
      }
      patches = std::min(patches, kMaxPatches);
    }
    return static_cast<std::uint64_t>(std::ceil(patches * rule.patch_multiplier - 1e-9));
  }
  if (detail == ImageDetail::kLow) return rule.base;
  // Fit in 2048x2048, then shrink so the short side is at most 768; 512 px tiles. Without a
  // size, the worst case: 2048x768 = 4x2 tiles.
  std::uint64_t tiles = 8;
  if (size) {
    double w = size->width, h = size->height;
    if (w > 2048 || h > 2048) {
      const double s = 2048 / std::max(w, h);
      w *= s;
      h *= s;
    }
    if (std::min(w, h) > 768) {
      const double s = 768 / std::min(w, h);
      w *= s;
      h *= s;
    }
    tiles = ceil_div(w, 512) * ceil_div(h, 512);
  }
  return rule.base + rule.tile * tiles;
}

}  // namespace tollgate::tokenize
