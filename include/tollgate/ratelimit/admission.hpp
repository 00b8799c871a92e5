#pragma once
// Admission: what a request is expected to use (exact prompt tokens from the tokenizer, plus
// its output allowance capped and defaulted by the client's limits, times n / best_of), and
// the policy checks on n, best_of and max_tokens. Plain C++; thread: any.

#include <cstdint>
#include <optional>
#include <string_view>

#include "tollgate/config/config.hpp"
#include "tollgate/core/api_call.hpp"
#include "tollgate/core/errors.hpp"
#include "tollgate/tokenize/encoding.hpp"

namespace tollgate::ratelimit {

/// The allowance reserved for a request that asks for no output limit and whose client sets
/// no default (settling corrects it to the real use).
inline constexpr std::int64_t kDefaultAllowance = 1024;

struct Estimate {
  std::optional<core::HttpError> error;  // 400: n / best_of / max_tokens beyond the policy
  std::int64_t prompt = 0;               // prompt tokens (exact where the tokenizer can be)
  std::int64_t allowance = 0;            // output allowance × choices
  bool exact = true;
  std::int64_t total() const { return prompt + allowance; }
};

/// Whether admission counts the prompt: only a token limit or a budget reserves it, and an
/// exact count is the costliest step of admission (BPE over the whole prompt).
enum class PromptCount : std::uint8_t {
  kCount,  // Estimate::prompt is the prompt's tokens
  kSkip,   // Estimate::prompt is 0 (count later with prompt_tokens() if an answer lacks usage)
};

/// Checks and, where the policy says so, rewrites `call`'s body (clamping or defaulting the
/// output limit: an edit in call.edits), then estimates its tokens. `client` may be
/// null (anonymous). `model` is the deployment's model (tokenizer choice). When its encoding is
/// not loaded in `tokenizers` (a bug: Tokenizers::find reports it), the prompt is estimated at
/// ~4 bytes per token, not exact; likewise in prompt_tokens() and count_output().
Estimate admit(core::ApiCall& call, std::size_t body_bytes, const config::ClientConfig* client,
               const config::PolicyConfig& policy, const tokenize::Tokenizers& tokenizers,
               std::string_view model, PromptCount count = PromptCount::kCount);

/// The prompt's tokens as admit() counts them (exact where the tokenizer can be, else ~4
/// bytes per token). 0 for calls that are not inference.
std::int64_t prompt_tokens(const core::ApiCall& call, std::size_t body_bytes,
                           const tokenize::Tokenizers& tokenizers, std::string_view model);

/// Tokens of `text` (a stream's generated output) for `model`.
std::int64_t count_output(const tokenize::Tokenizers& tokenizers, std::string_view model,
                          std::string_view text);

}  // namespace tollgate::ratelimit
