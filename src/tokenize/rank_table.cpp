#include "rank_table.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <string>

namespace tollgate::tokenize::detail {
namespace {

constexpr Rank kMaxRank = (1u << 24) - 1;

int base64_value(unsigned char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Decodes standard padded base64; false on any malformation.
bool decode_base64(std::string_view in, std::string& out) {
  if (in.empty() || in.size() % 4 != 0) return false;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const unsigned char c = static_cast<unsigned char>(in[i + k]);
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad != 0) return false;
      v[k] = base64_value(c);
      if (v[k] < 0) return false;
    }
    const std::uint32_t w =
        (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
        (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
    out.push_back(static_cast<char>(w >> 16));
    if (pad < 2) out.push_back(static_cast<char>((w >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<char>(w & 0xFF));
  }
  return true;
}

Error line_error(std::string_view origin, std::size_t line_no, std::string_view what) {
  return Error{std::string(origin) + ":" + std::to_string(line_no) +
               ": malformed rank file: " + std::string(what)};
}

}  // namespace

Result<RankTable> RankTable::parse(std::string_view text, std::string_view origin) {
  struct Entry {
    Rank rank;
    std::uint32_t offset;
    std::uint32_t length;
  };
  std::vector<Entry> entries;
  std::string arena;
  arena.reserve(text.size() / 2);
  entries.reserve(text.size() / 12);
  std::string decoded;

  std::size_t pos = 0;
  std::size_t line_no = 0;
  Rank max_rank = 0;
  while (pos < text.size()) {
    ++line_no;
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::size_t sp = line.find(' ');
    if (sp == std::string_view::npos)
      return line_error(origin, line_no, "expected \"base64 rank\"");
    decoded.clear();
    if (!decode_base64(line.substr(0, sp), decoded)) {
      return line_error(origin, line_no, "invalid base64 token");
    }
    const std::string_view num = line.substr(sp + 1);
    Rank rank = 0;
    const auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), rank);
    if (ec != std::errc{} || ptr != num.data() + num.size() || rank > kMaxRank) {
      return line_error(origin, line_no, "invalid rank");
    }
    entries.push_back(Entry{rank, static_cast<std::uint32_t>(arena.size()),
                            static_cast<std::uint32_t>(decoded.size())});
    arena += decoded;
    max_rank = std::max(max_rank, rank);
  }
  if (entries.empty()) return Error{std::string(origin) + ": malformed rank file: no tokens"};

  RankTable t;
  t.count_ = entries.size();
  // Re-lay the arena in rank order so offsets_ is a prefix-sum array.
  std::vector<std::uint32_t> length_of(static_cast<std::size_t>(max_rank) + 1, 0);
  std::vector<std::uint32_t> source_of(static_cast<std::size_t>(max_rank) + 1, 0);
  for (const Entry& e : entries) {
    if (length_of[e.rank] != 0) {
      return Error{std::string(origin) + ": malformed rank file: rank " + std::to_string(e.rank) +
                   " appears twice"};
    }
    length_of[e.rank] = e.length;
    source_of[e.rank] = e.offset;
  }
  t.offsets_.resize(static_cast<std::size_t>(max_rank) + 2);
  t.arena_.reserve(arena.size());
  for (Rank r = 0; r <= max_rank; ++r) {
    t.offsets_[r] = static_cast<std::uint32_t>(t.arena_.size());
    t.arena_.append(arena, source_of[r], length_of[r]);
  }
  t.offsets_[static_cast<std::size_t>(max_rank) + 1] = static_cast<std::uint32_t>(t.arena_.size());

  if (t.arena_.size() >= kMaxArenaBytes) {
    return Error{std::string(origin) + ": malformed rank file: tokens too large in total"};
  }
  const std::size_t slots = std::bit_ceil(entries.size() * 2);
  t.slots_.assign(slots, Slot{0, kNoRank, 0});
  t.mask_ = slots - 1;
  t.byte_rank_.fill(kNoRank);
  t.pair_rank_.assign(65536, kNoRank);
  const auto* base = reinterpret_cast<const unsigned char*>(t.arena_.data());
  for (Rank r = 0; r <= max_rank; ++r) {
    const std::uint32_t len = t.offsets_[r + 1] - t.offsets_[r];
    if (len == 0) continue;
    if (len > kMaxTokenBytes) {
      return Error{std::string(origin) + ": malformed rank file: token of rank " +
                   std::to_string(r) + " is longer than 255 bytes"};
    }
    const unsigned char* p = base + t.offsets_[r];
    if (t.probe(p, len) != kNoRank) {
      return Error{std::string(origin) + ": malformed rank file: token of rank " +
                   std::to_string(r) + " appears twice"};
    }
    if (len == 1) t.byte_rank_[p[0]] = r;
    if (len == 2) t.pair_rank_[p[0] | (static_cast<std::size_t>(p[1]) << 8)] = r;
    const std::uint64_t head = head8(p, len);
    std::size_t i = static_cast<std::size_t>(hash_span(p, len, head)) & t.mask_;
    while ((t.slots_[i].len_offset & 0xFF) != 0) i = (i + 1) & t.mask_;
    t.slots_[i] = Slot{head, r, len | (t.offsets_[r] << 8)};
  }
  for (int b = 0; b < 256; ++b) {
    if (t.byte_rank_[static_cast<std::size_t>(b)] == kNoRank) {
      return Error{std::string(origin) + ": malformed rank file: byte " + std::to_string(b) +
                   " has no token (every single byte must be one)"};
    }
  }
  return t;
}

}  // namespace tollgate::tokenize::detail
