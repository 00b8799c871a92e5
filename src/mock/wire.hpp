#pragma once
// Azure OpenAI wire shapes as the mock produces them (docs: /work/shared/aoai-wire.md §4–§6).
// Plain C++: no Asio, no Beast. Bodies on the hot path (chat, completions, SSE chunks,
// embeddings) are rendered by hand with keys in Azure's (alphabetical) order; everything else
// uses nlohmann::json.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::mock {

enum class Operation : std::uint8_t {
  ChatCompletions,
  Completions,
  Embeddings,
  ResponsesCreate,
  ResponsesGet,
  ResponsesDelete,
  FilesCreate,
  FilesGet,
  FilesDelete,
  FilesContent,     // GET files/{id}/content
  ResponsesCancel,  // POST responses/{id}/cancel (background responses)
  BatchesCreate,
  BatchesGet,
  BatchesCancel,
  FilesList,
};

/// Azure's operation id, as quoted in 429 messages ("ChatCompletions_Create").
std::string_view operation_id(Operation op);

/// One input of an embeddings request: its token estimate and a seed for its vector.
struct EmbeddingInput {
  std::uint64_t tokens = 0;
  std::uint64_t seed = 0;
};

/// What the mock needs from an inference request body. Produced by inspect_body().
struct InferenceParams {
  std::string model;  // body "model" ("" when absent)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::optional<std::uint64_t>
      max_tokens;  // max_completion_tokens | max_tokens | max_output_tokens
  unsigned n = 1;
  unsigned best_of = 0;
  std::uint64_t prompt_tokens = 0;    // reported usage (chat: ceil(chars/4) + 3/message + 3)
  std::uint64_t prompt_estimate = 0;  // TPM admission estimate of the prompt: ceil(chars/4)
  unsigned prompts = 1;               // completions: number of prompts (choices = prompts × n)
  std::string tool_call;              // chat: function to call instead of writing text ("" = text)
  // embeddings
  std::vector<EmbeddingInput> inputs;
  unsigned dimensions = 8;
  bool base64 = false;
  // responses
  std::string previous_response_id;
  bool store = true;
  bool background = false;  // answered "queued"; completed at the second read
};

/// A rendered error: status and Azure-shaped JSON body.
struct WireError {
  int status = 400;
  std::string body;
};

/// Validates and digests an inference body (chat, completions, embeddings, responses create).
/// Never throws; any malformed or invalid input yields a 400 WireError in Azure's shape.
/// Bodies nested deeper than 256 levels are rejected before parsing.
struct InspectResult {
  InferenceParams params;
  std::optional<WireError> error;
};
InspectResult inspect_body(Operation op, std::string_view body);

/// TPM admission estimate: prompt estimate + (max tokens or 16) × max(n, best_of, 1);
/// embeddings charge the prompt only.
std::uint64_t tpm_estimate(Operation op, const InferenceParams& p);

/// Everything needed to render a chat or text completion (non-streamed or streamed).
struct CompletionSpec {
  std::string_view id;           // chatcmpl-… / cmpl-…
  std::int64_t created = 0;      // unix seconds
  std::string_view model;        // underlying model, e.g. gpt-4o-2024-11-20
  std::string_view fingerprint;  // system_fingerprint
  unsigned choices = 1;          // total choices (completions: prompts × n)
  unsigned prompts = 1;          // prompt_filter_results entries
  unsigned tokens = 10;          // completion tokens per choice
  bool truncated = false;        // finish_reason "length" instead of "stop"
  std::uint64_t prompt_tokens = 0;
  std::string_view tool_call;     // chat: call this function (arguments {"text":"<words>"})
  std::string_view tool_call_id;  // call_…
};

/// The deterministic completion text made of `tokens` words ("This is a mock …").
std::string completion_text(unsigned tokens);

std::string chat_completion_body(const CompletionSpec& s);
std::string text_completion_body(const CompletionSpec& s);

/// SSE events of a streamed completion, each a complete event "data: …\n\n".
struct StreamPlan {
  std::vector<std::string> events;
  std::size_t first_content = 0;   // index of the first content event
  std::size_t content_events = 0;  // content events (paced; counted by close_after_chunks)
};

enum class StreamEnd : std::uint8_t {
  Normal,      // finish chunk, usage chunk when asked, [DONE]
  ErrorEvent,  // after the content: one {"error":{…}} event, no finish chunk, no [DONE]
};

StreamPlan chat_stream(const CompletionSpec& s, bool include_usage, StreamEnd end);
StreamPlan text_completion_stream(const CompletionSpec& s, bool include_usage, StreamEnd end);

/// Embeddings list; vectors are deterministic unit vectors derived from each input's seed.
std::string embeddings_body(const InferenceParams& p, std::string_view model);

/// The float32 vector of one embeddings input (what embeddings_body encodes).
std::vector<float> embedding_values(std::uint64_t seed, unsigned dimensions);

std::string base64_encode(std::string_view bytes);

/// Responses API object (status completed, one output message).
std::string response_object(std::string_view id, std::string_view message_id, std::int64_t created,
                            std::string_view model, const InferenceParams& p, unsigned tokens,
                            bool truncated);

// --- error bodies (aoai-wire.md §6) ---
std::string
error_resource_not_found();  // 404 {"error":{"code":"404","message":"Resource not found"}}
std::string error_deployment_not_found();  // 404 DeploymentNotFound
std::string error_invalid_key();           // 401 "Access denied due to invalid subscription key…"
std::string error_invalid_token();         // 401 {"statusCode":401,"message":"Unauthorized. …"}
std::string error_method_not_allowed();    // 405
std::string error_tpm_exceeded(Operation op, std::string_view api_version,
                               std::uint64_t retry_after_s);  // 429 classic TPM wording
std::string error_too_many_in_flight();                       // 429 "high demand" capacity wording
std::string error_server();                                   // 500 server_error
std::string error_operation_not_supported(Operation op);
/// Azure-shaped body for an arbitrary status (used by faults); 429 uses the TPM wording with
/// "Please retry after N seconds".
std::string error_for_status(int status, Operation op, std::string_view api_version,
                             std::uint64_t retry_after_s);
/// invalid_request_error with the given message and param (param may be empty = null).
std::string error_invalid_request(std::string_view message, std::string_view param = {},
                                  std::string_view code = {});
/// The event body sent by StreamEnd::ErrorEvent.
std::string_view stream_error_json();

/// Appends `s` as a JSON string literal (quoted, escaped; invalid UTF-8 bytes become U+FFFD).
void append_json_string(std::string& out, std::string_view s);

/// Number of UTF-8 code points in `s` (continuation bytes are not counted).
std::uint64_t utf8_length(std::string_view s);

/// True when `body` nests arrays/objects deeper than `limit` (strings are skipped).
bool json_too_deep(std::string_view body, unsigned limit);

/// Reason phrase for a status line ("Too Many Requests"); "Unknown" when not known.
std::string_view reason_phrase(int status);

}  // namespace tollgate::mock
