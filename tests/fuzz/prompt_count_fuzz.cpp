// libFuzzer target for admission's prompt count (ratelimit::prompt_tokens), which reads the
// body through the scanner (plain messages from their bytes, memoized messages, completions
// and embeddings without a DOM), checked against tokenize::estimate_prompt over an nlohmann DOM
// of the same body: on every body both accept, the counts are equal, for chat (with and
// without the count cache, twice so the second pass hits), completions and embeddings.

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

#include "tollgate/core/api_call.hpp"
#include "tollgate/ratelimit/admission.hpp"
#include "tollgate/tokenize/count_cache.hpp"
#include "tollgate/tokenize/estimate.hpp"

using namespace tollgate;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

tokenize::Tokenizers load(std::size_t cache) {
  const char* dir = std::getenv("TOLLGATE_TOKENIZER_DIR");
  auto t = tokenize::Tokenizers::load(dir != nullptr ? dir : TOLLGATE_TOKENIZER_DIR);
  if (!t) throw std::runtime_error(t.error().message);
  auto out = std::move(t).value();
  out.set_count_cache(cache);
  return out;
}

struct Kind {
  const char* target;
  tokenize::RequestKind kind;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static auto plain = load(0);
  static auto cached = load(1 << 20);
  std::string_view body(reinterpret_cast<const char*>(data), size);
  auto dom = nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (dom.is_discarded() || !dom.is_object()) return 0;
  for (auto k : {Kind{"/openai/deployments/d/chat/completions?api-version=2024-10-21", tokenize::RequestKind::kChat},
                 Kind{"/openai/deployments/d/completions?api-version=2024-10-21", tokenize::RequestKind::kCompletions},
                 Kind{"/openai/deployments/d/embeddings?api-version=2024-10-21", tokenize::RequestKind::kEmbeddings}}) {
    auto c = core::classify("POST", k.target, "application/json", body);
    if (c.error || !c.call.fields) continue;  // refused before admission
    const auto& enc = plain.for_model("gpt-4o");
    auto want = tokenize::estimate_prompt(k.kind, enc, dom, "gpt-4o");
    auto fallback = static_cast<std::int64_t>((body.size() + 3) / 4);
    auto expected = want ? static_cast<std::int64_t>(want->tokens) : fallback;
    check(ratelimit::prompt_tokens(c.call, body.size(), plain, "gpt-4o") == expected);
    for (int pass = 0; pass < 2; ++pass) {
      check(ratelimit::prompt_tokens(c.call, body.size(), cached, "gpt-4o") == expected);
    }
  }
  return 0;
}
