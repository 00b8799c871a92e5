#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretokenize.hpp"

#include <pcre2.h>

#include <memory>

namespace tollgate::tokenize::detail {

std::atomic<std::uint64_t> g_regex_fallbacks{0};

namespace {

// Rust regex's \s is Unicode White_Space; PCRE2+UCP's \s also matches U+180E (MONGOLIAN VOWEL
// SEPARATOR, White_Space until Unicode 6.3). Spelling the set out gives tiktoken's splits.
constexpr std::string_view kWhiteSpace =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// The pat_str of tiktoken@1.0.22's encoders/<name>.json, verbatim but for \s and \S.
// (Python tiktoken >= 0.8 rewrote cl100k's tail as `\s++$|\s*[\r\n]|\s+(?!\S)|\s`, which splits
// whitespace at the end of the text differently, e.g. "a\n " -> "a","\n " instead of
// "a","\n"," "; the npm package — our oracle — keeps the original form.)
constexpr std::string_view kCl100k = R"((?i:'s|'t|'re|'ve|'m|'ll|'d))"
                                     R"(|[^\r\n\p{L}\p{N}]?\p{L}+)"
                                     R"(|\p{N}{1,3})"
                                     R"(| ?[^@WS@\p{L}\p{N}]+[\r\n]*)"
                                     R"(|[@WS@]*[\r\n]+)"
                                     R"(|[@WS@]+(?![^@WS@]))"
                                     R"(|[@WS@]+)";
constexpr std::string_view kO200k =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+)"
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*)"
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3})"
    R"(| ?[^@WS@\p{L}\p{N}]+[\r\n/]*)"
    R"(|[@WS@]*[\r\n]+)"
    R"(|[@WS@]+(?![^@WS@]))"
    R"(|[@WS@]+)";

// 1 MB single pieces need far less; the stack is reserved lazily by PCRE2.
constexpr std::size_t kJitStackStart = 32 * 1024;
constexpr std::size_t kJitStackMax = 4 * 1024 * 1024;

// Per-thread PCRE2 state: match data and JIT stack must not be shared between threads.
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;

  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(kJitStackStart, kJitStackMax, nullptr);
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

std::size_t utf8_char_length(const unsigned char* s, std::size_t n, std::size_t pos) noexcept {
  const unsigned char b = s[pos];
  std::size_t len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  return len <= n - pos ? len : n - pos;
}

}  // namespace

std::string regex_pattern(EncodingKind kind) {
  std::string p(kind == EncodingKind::kCl100kBase ? kCl100k : kO200k);
  for (std::size_t at; (at = p.find("@WS@")) != std::string::npos;) p.replace(at, 4, kWhiteSpace);
  return p;
}

Result<PreTokenizer> PreTokenizer::create(EncodingKind kind) {
  const std::string pattern = regex_pattern(kind);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_ANCHORED,
                                   &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    return Error{"tokenizer: cannot compile the " + std::string(encoding_name(kind)) +
                 " pattern at offset " + std::to_string(offset) + ": " +
                 reinterpret_cast<const char*>(message)};
  }
  // Without JIT (e.g. a platform without it) the interpreter gives the same pieces, slower.
  const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return PreTokenizer(kind, code, jit);
}

PreTokenizer::~PreTokenizer() {
  pcre2_code_free(code_);
}

std::size_t PreTokenizer::regex_piece(const unsigned char* s, std::size_t n,
                                      std::size_t pos) const noexcept {
  ThreadMatchState& st = thread_match_state();
  if (st.data != nullptr) {
    int rc = jit_ ? pcre2_jit_match(code_, s, n, pos, PCRE2_NO_UTF_CHECK, st.data, st.context)
                  : PCRE2_ERROR_JIT_BADOPTION;
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // JIT stack exhausted (or no JIT): the interpreter keeps its backtracking state on the heap.
      rc = pcre2_match(code_, s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.data, st.context);
    }
    if (rc > 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
      if (ov[0] == pos && ov[1] > pos && ov[1] <= n) return ov[1] - pos;
    }
  }
  // Unreachable for valid UTF-8 (every character matches some alternative): stay exact-ish and
  // total rather than fail the request.
  g_regex_fallbacks.fetch_add(1, std::memory_order_relaxed);
  return utf8_char_length(s, n, pos);
}

}  // namespace tollgate::tokenize::detail
