#include "tollgate/tokenize/encoding.hpp"
#include "tollgate/tokenize/count_cache.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <system_error>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "encoding_impl.hpp"
#include "utf8.hpp"

#ifndef TOLLGATE_TOKENIZER_DIR
#define TOLLGATE_TOKENIZER_DIR "build/tokenizer-data"
#endif

namespace tollgate::tokenize {
namespace {

using detail::starts_with_ci;

constexpr std::string_view kCl100kSha256 =
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7";
constexpr std::string_view kO200kSha256 =
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d";

struct ThreadScratch {
  detail::MergeScratch merge;
  std::string repaired;  // the input with invalid UTF-8 replaced by U+FFFD
};

ThreadScratch& thread_scratch() {
  thread_local ThreadScratch scratch;
  return scratch;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return {};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

std::string fix_hint(EncodingKind kind) {
  return "expected " + rank_file_name(kind) + " with sha256 " + std::string(expected_sha256(kind)) +
         "; install it with scripts/fetch-tokenizer-data.sh DIR and point tokenizer.data_dir or "
         "TOLLGATE_TOKENIZER_DIR at DIR";
}

// With a non-UTF-8 input, the repaired copy is encoded instead (see encoding.hpp).
template <class Sink>
void encode_any(const Encoding::Impl& impl, std::string_view text, Sink&& sink) {
  ThreadScratch& ts = thread_scratch();
  if (detail::is_valid_utf8(text)) {
    impl.encode_valid(text, ts.merge, sink);
  } else {
    detail::repair_utf8(text, ts.repaired);
    impl.encode_valid(ts.repaired, ts.merge, sink);
    if (ts.repaired.capacity() > (1u << 20)) std::string().swap(ts.repaired);
  }
  ts.merge.trim();
}

}  // namespace

namespace detail {
MergeScratch& thread_merge_scratch() {
  return thread_scratch().merge;
}
}  // namespace detail

std::string_view encoding_name(EncodingKind kind) noexcept {
  return kind == EncodingKind::kCl100kBase ? "cl100k_base" : "o200k_base";
}

std::optional<EncodingKind> parse_encoding_name(std::string_view name) noexcept {
  if (name == "cl100k_base") return EncodingKind::kCl100kBase;
  if (name == "o200k_base") return EncodingKind::kO200kBase;
  return std::nullopt;
}

std::optional<EncodingKind> encoding_for_model(std::string_view model) noexcept {
  if (starts_with_ci(model, "ft:")) model.remove_prefix(3);
  // More specific prefixes first: "gpt-4o" and "gpt-4.1" before "gpt-4".
  static constexpr std::string_view kO200k[] = {"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5",
                                                "gpt-5",  "o1",         "o3",      "o4"};
  static constexpr std::string_view kCl100k[] = {"gpt-4",           "gpt-35-turbo", "gpt-3.5-turbo",
                                                 "text-embedding-", "davinci-002",  "babbage-002"};
  for (std::string_view p : kO200k) {
    if (starts_with_ci(model, p)) return EncodingKind::kO200kBase;
  }
  for (std::string_view p : kCl100k) {
    if (starts_with_ci(model, p)) return EncodingKind::kCl100kBase;
  }
  return std::nullopt;
}

std::string rank_file_name(EncodingKind kind) {
  return std::string(encoding_name(kind)) + ".tiktoken";
}

std::string_view expected_sha256(EncodingKind kind) noexcept {
  return kind == EncodingKind::kCl100kBase ? kCl100kSha256 : kO200kSha256;
}

std::string_view compiled_data_dir() noexcept {
  return TOLLGATE_TOKENIZER_DIR;
}

std::filesystem::path resolve_data_dir(std::string_view explicit_dir) {
  if (!explicit_dir.empty()) return std::filesystem::path(explicit_dir);
  if (const char* env = std::getenv("TOLLGATE_TOKENIZER_DIR"); env != nullptr && *env != '\0') {
    return std::filesystem::path(env);
  }
  return std::filesystem::path(std::string(compiled_data_dir()));
}

Encoding::Encoding(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Encoding::~Encoding() = default;

Result<std::shared_ptr<const Encoding>> Encoding::load(EncodingKind kind,
                                                       const std::filesystem::path& data_dir) {
  return load_file(kind, data_dir / rank_file_name(kind), HashCheck::kVerify);
}

namespace {
// Reads a rank file, checking its sha256 when asked.
Result<std::string> read_rank_file(EncodingKind kind, const std::filesystem::path& file,
                                   HashCheck check) {
  const std::string path = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    const int err = errno;
    return Error{"tokenizer: cannot open " + path + ": " + std::strerror(err) + " (" +
                 fix_hint(kind) + ")"};
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Error{"tokenizer: cannot read " + path + " (" + fix_hint(kind) + ")"};
  if (check == HashCheck::kVerify) {
    const std::string got = sha256_hex(text);
    if (got != expected_sha256(kind)) {
      return Error{"tokenizer: " + path + " is corrupt or the wrong file: sha256 " + got +
                   ", expected " + std::string(expected_sha256(kind)) + " (" + fix_hint(kind) +
                   ")"};
    }
  }
  return text;
}
}  // namespace

std::optional<Error> verify_data_dir(std::string_view explicit_dir) {
  const std::filesystem::path dir = resolve_data_dir(explicit_dir);
  for (EncodingKind kind : kAllEncodings) {
    auto text = read_rank_file(kind, dir / rank_file_name(kind), HashCheck::kVerify);
    if (!text) return text.error();
  }
  return std::nullopt;
}

Result<std::shared_ptr<const Encoding>> Encoding::load_file(EncodingKind kind,
                                                            const std::filesystem::path& file,
                                                            HashCheck check) {
  const std::string path = file.string();
  auto read = read_rank_file(kind, file, check);
  if (!read) return read.error();
  const std::string text = std::move(read).value();
  auto table = detail::RankTable::parse(text, path);
  if (!table) return Error{"tokenizer: " + table.error().message};
  auto pre = detail::PreTokenizer::create(kind);
  if (!pre) return pre.error();
  auto impl = std::make_unique<Impl>(Impl{kind, std::move(table).value(), std::move(pre).value()});
  return std::shared_ptr<const Encoding>(new Encoding(std::move(impl)));
}

EncodingKind Encoding::kind() const noexcept {
  return impl_->kind;
}
std::string_view Encoding::name() const noexcept {
  return encoding_name(impl_->kind);
}
std::size_t Encoding::token_count() const noexcept {
  return impl_->table.size();
}

void Encoding::encode(std::string_view text, std::vector<TokenId>& out) const {
  encode_any(*impl_, text, [&out](detail::Rank r) { out.push_back(r); });
}

std::vector<TokenId> Encoding::encode(std::string_view text) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 1);
  encode(text, out);
  return out;
}

std::size_t Encoding::count(std::string_view text) const {
  std::size_t n = 0;
  encode_any(*impl_, text, [&n](detail::Rank) { ++n; });
  return n;
}

bool Encoding::decode(std::span<const TokenId> ids, std::string& out) const {
  for (TokenId id : ids) {
    if (!impl_->table.has_rank(id)) return false;
    out += impl_->table.bytes_of(id);
  }
  return true;
}

std::optional<TokenId> Encoding::token_of(std::string_view bytes) const noexcept {
  if (bytes.empty()) return std::nullopt;
  const detail::Rank r =
      impl_->table.find(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  if (r == detail::kNoRank) return std::nullopt;
  return r;
}

std::size_t Encoding::memory_bytes() const noexcept {
  return impl_->table.memory_bytes();
}

struct Tokenizers::Missing {
  MissingReport report;
  std::atomic<bool> reported{false};
};

void Tokenizers::set_count_cache(std::size_t max_bytes) {
  count_cache_ = max_bytes > 0 ? std::make_shared<CountCache>(max_bytes) : nullptr;
}

void Tokenizers::on_missing(MissingReport report) {
  if (!missing_) missing_ = std::make_shared<Missing>();
  missing_->report = std::move(report);
}

Result<Tokenizers> Tokenizers::load(std::string_view explicit_dir, EncodingSet needed) {
  Tokenizers none;
  none.data_dir_ = resolve_data_dir(explicit_dir);
  none.missing_ = std::make_shared<Missing>();
  none.missing_->report = [](std::string_view message) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(message.size()), message.data());
  };
  return none.with(needed);
}

Result<Tokenizers> Tokenizers::with(EncodingSet needed) const {
  Tokenizers t = *this;
  bool loaded_any = false;
  for (EncodingKind kind : kAllEncodings) {
    auto& slot = t.encodings_[static_cast<std::size_t>(kind)];
    if (slot || !needed.contains(kind)) continue;
    auto enc = Encoding::load(kind, data_dir_);
    if (!enc) return enc.error();
    slot = std::move(enc).value();
    loaded_any = true;
  }
#if defined(__GLIBC__)
  // Loading parses ~2–4 MB of text per encoding through temporary buffers; hand them back to
  // the OS so the resident size is the tables', not the loader's peak.
  if (loaded_any) malloc_trim(0);
#else
  (void)loaded_any;
#endif
  return t;
}

EncodingSet Tokenizers::loaded() const noexcept {
  EncodingSet s;
  for (EncodingKind kind : kAllEncodings) {
    if (encodings_[static_cast<std::size_t>(kind)]) s.add(kind);
  }
  return s;
}

const Encoding* Tokenizers::find(EncodingKind kind) const noexcept {
  const Encoding* enc = encodings_[static_cast<std::size_t>(kind)].get();
  if (enc != nullptr || !missing_ || missing_->reported.exchange(true, std::memory_order_relaxed)) {
    return enc;
  }
  try {
    if (missing_->report) {
      missing_->report("tokenizer: " + std::string(encoding_name(kind)) +
                       " is not loaded: token counts with it are estimated at ~4 bytes per token "
                       "(reported once)");
    }
  } catch (...) {  // a report that fails (bad_alloc) must not fail the request
  }
  return enc;
}

const Encoding* Tokenizers::find_for_model(std::string_view model,
                                           EncodingKind fallback) const noexcept {
  return find(encoding_for_model(model).value_or(fallback));
}

const Encoding& Tokenizers::get(EncodingKind kind) const noexcept {
  return *encodings_[static_cast<std::size_t>(kind)];
}

const std::shared_ptr<const Encoding>& Tokenizers::shared(EncodingKind kind) const noexcept {
  return encodings_[static_cast<std::size_t>(kind)];
}

const Encoding& Tokenizers::for_model(std::string_view model,
                                      EncodingKind fallback) const noexcept {
  return get(encoding_for_model(model).value_or(fallback));
}

}  // namespace tollgate::tokenize
