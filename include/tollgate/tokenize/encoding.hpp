#pragma once
// Exact tiktoken-compatible BPE encodings (cl100k_base, o200k_base).
// Design and invariants: docs/design/tokenizer.md.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/tokenize/result.hpp"

namespace tollgate::tokenize {

/// A token id (= BPE rank). Ids of ordinary tokens are < 2^24.
using TokenId = std::uint32_t;

enum class EncodingKind : std::uint8_t { kCl100kBase, kO200kBase };

inline constexpr EncodingKind kAllEncodings[] = {EncodingKind::kCl100kBase,
                                                 EncodingKind::kO200kBase};

/// The encoding of a model encoding_for_model() does not know (unless the caller picks another).
inline constexpr EncodingKind kFallbackEncoding = EncodingKind::kO200kBase;

/// A set of encodings: which ones a configuration needs, which ones are loaded.
class EncodingSet {
 public:
  constexpr EncodingSet() = default;
  static constexpr EncodingSet all() noexcept {
    EncodingSet s;
    for (EncodingKind kind : kAllEncodings) s.add(kind);
    return s;
  }
  constexpr void add(EncodingKind kind) noexcept { bits_ |= bit(kind); }
  constexpr bool contains(EncodingKind kind) const noexcept { return (bits_ & bit(kind)) != 0; }
  /// Whether every encoding of `other` is in this set.
  constexpr bool contains(EncodingSet other) const noexcept { return (other.bits_ & ~bits_) == 0; }
  constexpr bool empty() const noexcept { return bits_ == 0; }
  constexpr bool operator==(const EncodingSet&) const = default;

 private:
  static constexpr std::uint8_t bit(EncodingKind kind) noexcept {
    return static_cast<std::uint8_t>(1u << static_cast<unsigned>(kind));
  }
  std::uint8_t bits_ = 0;
};

/// "cl100k_base" / "o200k_base".
std::string_view encoding_name(EncodingKind kind) noexcept;

/// Parses "cl100k_base" / "o200k_base" (exact, lower case). nullopt for anything else.
std::optional<EncodingKind> parse_encoding_name(std::string_view name) noexcept;

/// tiktoken's model → encoding map, by prefix (case-insensitive): gpt-4o*, chatgpt-4o*, gpt-4.1*,
/// gpt-4.5*, gpt-5*, o1*, o3*, o4*, ft:gpt-4o* → o200k_base; gpt-4*, gpt-35-turbo*,
/// gpt-3.5-turbo*, text-embedding-*, davinci-002, babbage-002 (and their ft: forms) → cl100k_base.
/// nullopt for an unknown model: the caller picks the default (config `encoding` or o200k_base).
std::optional<EncodingKind> encoding_for_model(std::string_view model) noexcept;

/// File name of the rank file ("cl100k_base.tiktoken").
std::string rank_file_name(EncodingKind kind);

/// Checks that both rank files exist in resolve_data_dir(explicit_dir) with the pinned sha256,
/// without building the tables (cheap enough for start-up checks). nullopt when all is well.
std::optional<Error> verify_data_dir(std::string_view explicit_dir = {});

/// The sha256 (lower-case hex) the rank file must have (the value openai/tiktoken pins).
std::string_view expected_sha256(EncodingKind kind) noexcept;

/// The directory rank files are read from when no explicit one is given: the environment
/// variable TOLLGATE_TOKENIZER_DIR if set and non-empty, else the compiled-in default (CMake
/// cache variable TOLLGATE_TOKENIZER_DIR). `explicit_dir` (e.g. config `tokenizer.data_dir`)
/// wins over both when non-empty.
std::filesystem::path resolve_data_dir(std::string_view explicit_dir = {});

/// The compiled-in default directory.
std::string_view compiled_data_dir() noexcept;

/// Whether the rank file is checked against expected_sha256() while loading.
enum class HashCheck : std::uint8_t { kVerify, kSkip };

/// One loaded BPE encoding: rank table + pre-tokenizer.
///
/// Thread: all const member functions may be called concurrently from any number of threads on
/// one instance (per-thread scratch state lives in thread_local storage, never in the object).
/// Lifetime: immutable after load(); share it via the shared_ptr returned by load().
/// Errors: encode/count never throw except std::bad_alloc; input that is not valid UTF-8 is
/// first repaired the way a WHATWG/JS decoder does (each maximal invalid subsequence becomes
/// U+FFFD), so the result equals tiktoken's for the string a JSON/JS client would send.
/// Cost: linear-ish in the input (pre-tokenizer linear, BPE merge O(n log n) on long pieces),
/// so hostile input cannot make it quadratic.
class Encoding {
 public:
  ~Encoding();
  Encoding(const Encoding&) = delete;
  Encoding& operator=(const Encoding&) = delete;

  /// Loads `<data_dir>/<name>.tiktoken`, verifies its sha256 and compiles the pre-tokenizer.
  /// Errors name the path, the problem and the expected hash (missing, unreadable, hash
  /// mismatch, malformed line, PCRE2 failure). Takes ~0.1–0.3 s: call at startup.
  static Result<std::shared_ptr<const Encoding>> load(EncodingKind kind,
                                                      const std::filesystem::path& data_dir);

  /// Loads an explicit rank file. With HashCheck::kSkip any well-formed rank file is accepted
  /// (used by tests with tiny vocabularies); the gateway always verifies.
  static Result<std::shared_ptr<const Encoding>> load_file(EncodingKind kind,
                                                           const std::filesystem::path& file,
                                                           HashCheck check = HashCheck::kVerify);

  EncodingKind kind() const noexcept;
  std::string_view name() const noexcept;

  /// Number of ordinary tokens in the rank table.
  std::size_t token_count() const noexcept;

  /// Appends the token ids of `text` to `out` (tiktoken encode_ordinary: special-token text such
  /// as "<|endoftext|>" is ordinary text).
  void encode(std::string_view text, std::vector<TokenId>& out) const;
  std::vector<TokenId> encode(std::string_view text) const;

  /// Number of tokens encode() would produce, without materialising them.
  std::size_t count(std::string_view text) const;

  /// Appends the bytes of `ids` to `out`. Returns false (and appends nothing more) at the first
  /// id that is not an ordinary token of this encoding.
  bool decode(std::span<const TokenId> ids, std::string& out) const;

  /// The rank of exactly these bytes, if they are one token.
  std::optional<TokenId> token_of(std::string_view bytes) const noexcept;

  /// Heap bytes held by the rank table and its index (for memory reports).
  std::size_t memory_bytes() const noexcept;

  struct Impl;  // src/tokenize/encoding_impl.hpp; public for the module's own tests and fuzzers
  const Impl& impl() const noexcept { return *impl_; }

 private:
  explicit Encoding(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The encodings a process needs, loaded on the control thread (at start-up, or by a reload
/// whose configuration needs one more) and shared read-only by all workers.
/// Thread: const access from any thread; load(), with() and the setters on one thread, before
/// the object is shared. Lifetime: keep it alive while workers use it (a snapshot owns it).
class CountCache;

class Tokenizers {
 public:
  /// Loads the encodings of `needed` (all by default) from resolve_data_dir(explicit_dir), which
  /// with() reads from later. Fails on the first bad file, with a message naming the path and
  /// the expected hash. Takes ~0.1–0.3 s per encoding.
  static Result<Tokenizers> load(std::string_view explicit_dir = {},
                                 EncodingSet needed = EncodingSet::all());

  /// These Tokenizers plus the encodings of `needed` not loaded yet, read from load()'s
  /// directory. The loaded encodings, the count cache and the missing-encoding report are
  /// shared with this object, not copied.
  Result<Tokenizers> with(EncodingSet needed) const;

  /// The encodings loaded.
  EncodingSet loaded() const noexcept;

  /// The encoding `kind`, or null when it is not loaded (the caller then estimates ~4 bytes per
  /// token). Configurations load what they count with, so null is a bug: the first null
  /// answer of this object (and its with() copies) is reported through on_missing().
  const Encoding* find(EncodingKind kind) const noexcept;

  /// find() of the encoding for `model` (encoding_for_model), or `fallback` when unknown.
  const Encoding* find_for_model(std::string_view model,
                                 EncodingKind fallback = kFallbackEncoding) const noexcept;

  /// The encoding `kind`. Precondition: loaded (tools and tests that load every encoding).
  const Encoding& get(EncodingKind kind) const noexcept;
  const std::shared_ptr<const Encoding>& shared(EncodingKind kind) const noexcept;

  /// get() of the encoding for `model` (encoding_for_model), or `fallback` when the model is
  /// unknown. Precondition: that encoding is loaded.
  const Encoding& for_model(std::string_view model,
                            EncodingKind fallback = kFallbackEncoding) const noexcept;

  /// Memoize chat message counts in `max_bytes` (0: none). Before the Tokenizers are shared.
  void set_count_cache(std::size_t max_bytes);
  /// The memo of message counts (thread-safe), or null.
  CountCache* count_cache() const noexcept { return count_cache_.get(); }

  /// Where find() reports, at most once, an encoding it was asked for that is not loaded (by
  /// default a line on stderr). Before the Tokenizers are shared. Called from a worker thread.
  using MissingReport = std::function<void(std::string_view message)>;
  void on_missing(MissingReport report);

 private:
  struct Missing;  // the report and whether it was made (atomic)

  std::filesystem::path data_dir_;                // where with() loads from
  std::shared_ptr<const Encoding> encodings_[2];  // indexed by EncodingKind; null: not loaded
  std::shared_ptr<CountCache> count_cache_;       // internally synchronized
  std::shared_ptr<Missing> missing_;              // shared by with() copies
};

}  // namespace tollgate::tokenize
