#pragma once
// Token estimates for OpenAI / Azure OpenAI request bodies, computed before forwarding.
// Rules and their sources: docs/design/tokenizer.md §Request estimation.
//
// Thread: all functions are pure; call them from any thread. Errors: a body of the wrong shape
// yields an Error naming the JSON path (e.g. "messages[2].content: expected a string or an
// array"); nothing throws except std::bad_alloc.

#include <cstdint>
#include <nlohmann/json_fwd.hpp>  // bodies are ordered_json: as the gateway parses them
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "tollgate/tokenize/encoding.hpp"
#include "tollgate/tokenize/result.hpp"

namespace tollgate::tokenize {

/// A token count and whether it is exact. `exact` is true only where the count follows a rule
/// verified against the API: tokenized text (completions prompt, embeddings input) and chat
/// messages whose content is plain text (the cookbook's 3-per-message formula). Tools, images,
/// audio, multi-part content and unknown fields make it an estimate.
struct TokenEstimate {
  std::uint64_t tokens = 0;
  bool exact = true;

  TokenEstimate& operator+=(const TokenEstimate& o) noexcept {
    tokens += o.tokens;
    exact = exact && o.exact;
    return *this;
  }
};

enum class RequestKind : std::uint8_t { kChat, kCompletions, kEmbeddings };

/// "chat" / "completions" / "embeddings".
std::optional<RequestKind> parse_request_kind(std::string_view name) noexcept;

/// Chat completions prompt: Σ_messages(3 + tokens of every string field + 1 if `name`) + 3,
/// plus tool/function definitions (cookbook approximation: func_init 7 for o200k models, 10
/// otherwise), image parts by the tile/patch formula of `model`, and response_format schemas.
/// `model` (the deployment's model, or the body's "model") selects the image cost table; when
/// empty the body's "model" field is used.
Result<TokenEstimate> estimate_chat_prompt(const Encoding& enc, const nlohmann::ordered_json& body,
                                           std::string_view model = {});

/// The chat prompt estimate of estimate_chat_prompt, its messages given one at a time, so that a
/// big body need not be one DOM (a DOM costs ~20x the bytes of a tiny message). `model`
/// selects the image cost table.
class ChatPromptCount {
 public:
  ChatPromptCount(const Encoding& enc, std::string_view model);
  /// Counts the next element of `messages`.
  std::optional<Error> add_message(const nlohmann::ordered_json& message);
  /// Counts the next element of `messages` without adding it (add() does; errors name it by
  /// its index).
  Result<TokenEstimate> count_message(const nlohmann::ordered_json& message) const;
  /// A message whose members are all strings, as (name, text) pairs with their JSON escapes
  /// decoded and no name twice: what count_message gives for it, without a DOM.
  TokenEstimate count_plain(std::span<const std::pair<std::string_view, std::string_view>> members) const;
  /// Adds the next message, counted already (count_message, count_plain or memoized).
  void add(const TokenEstimate& message) {
    total_ += message;
    ++index_;
  }
  /// The total: the messages added, plus the tool definitions and response_format schema of
  /// `body` (an object; its "messages" are not read).
  Result<TokenEstimate> finish(const nlohmann::ordered_json& body) const;

 private:
  const Encoding& enc_;
  std::string model_;
  TokenEstimate total_;
  std::size_t index_ = 0;
};

/// Completions prompt: string, array of strings, token array, or array of token arrays
/// (+ `suffix`). An absent prompt is the API's default "<|endoftext|>": 1 token.
Result<TokenEstimate> estimate_completions_prompt(const Encoding& enc, const nlohmann::ordered_json& body);

/// Embeddings input: string, array of strings, token array, or array of token arrays.
Result<TokenEstimate> estimate_embeddings_input(const Encoding& enc, const nlohmann::ordered_json& body);

/// Output allowance: max_completion_tokens (else max_tokens, else `default_max_tokens`, which
/// makes the result inexact) × max(n, best_of, 1). Zero for embeddings.
Result<TokenEstimate> estimate_output_allowance(RequestKind kind, const nlohmann::ordered_json& body,
                                                std::uint64_t default_max_tokens);

/// The prompt estimate for `kind` (dispatches to the three functions above).
Result<TokenEstimate> estimate_prompt(RequestKind kind, const Encoding& enc,
                                      const nlohmann::ordered_json& body, std::string_view model = {});

// ---- images (exposed for tests) -------------------------------------------------------------

struct ImageSize {
  std::uint32_t width = 0;
  std::uint32_t height = 0;
};

/// Width and height from the bytes of a PNG, GIF, JPEG or WebP file (only the header and, for
/// JPEG, the segment headers up to the frame header are read); nullopt if not recognised.
std::optional<ImageSize> sniff_image_size(std::string_view bytes);

/// Size of the image in a `data:image/...;base64,` URL (decoding only the header bytes needed);
/// nullopt for http(s) URLs, other encodings or unrecognised images.
std::optional<ImageSize> image_size_from_url(std::string_view url);

enum class ImageDetail : std::uint8_t { kLow, kHigh, kAuto };

/// Prompt tokens of one image for `model` (OpenAI vision pricing rules). nullopt size = the
/// worst case for that model (what a remote URL is charged, since the gateway does not fetch it).
std::uint64_t image_tokens(std::string_view model, std::optional<ImageSize> size,
                           ImageDetail detail);

}  // namespace tollgate::tokenize
