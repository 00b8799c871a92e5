#pragma once
// Classification of an inbound request into an API call, done once per request by the session.
// Plain C++ (no Beast): the session passes method, target and body as views.

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "tollgate/config/config.hpp"
#include "tollgate/core/errors.hpp"
#include "tollgate/core/json_scan.hpp"

namespace tollgate::core {

enum class Operation : std::uint8_t {
  kChatCompletions,
  kCompletions,
  kEmbeddings,
  kResponses,
  kModels,  // GET /openai/v1/models, /v1/models: answered by the gateway
  kOther,   // any other /openai/... call routed to a deployment's first backend
};
std::string_view to_string(Operation op);
/// Calls that produce tokens (billed, limited, counted): chat, completions, embeddings, responses.
constexpr bool is_inference(Operation op) {
  return op == Operation::kChatCompletions || op == Operation::kCompletions ||
         op == Operation::kEmbeddings || op == Operation::kResponses;
}

enum class Surface : std::uint8_t {
  kDeployment,  // /openai/deployments/{deployment}/{op}?api-version=...
  kAzureV1,     // /openai/v1/{op} (model in the body)
  kOpenAIV1,    // /v1/{op} (model in the body)
  kAzureOther,  // /openai/{op} with the model in the body (e.g. /openai/responses)
};

struct ApiCall {
  Surface surface = Surface::kDeployment;
  Operation op = Operation::kOther;
  std::string deployment;   // the client-facing deployment name
  std::string op_path;      // encoded path after the deployment (or after v1/): "chat/completions"
  std::string query;        // encoded query without '?', forwarded unchanged
  std::string api_version;  // decoded api-version parameter, may be empty
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage set by the client
  bool model_from_body = false;  // the surface names the deployment in the body's "model"
  bool model_in_body = false;    // routing used the body's "model"
  bool stateful = false;       // a stateful API (responses, files, threads, ...): affinity applies
  // The client's body bytes: a view of the request's body, which outlives the call.
  std::string_view body;
  std::optional<BodyFields> fields;  // the members the gateway reads, when the body is JSON
  BodyEdits edits;                   // the gateway's changes (admission policy, include_usage)
};

/// The body as a DOM, for the consumers that need one (the prompt token estimate). Built on
/// demand, never stored: a body the scanner accepted but nlohmann refuses (a lone surrogate
/// escape, a number beyond a double) is parsed from sanitize_for_dom's copy. nullopt when the
/// body is not JSON. Never throws but std::bad_alloc.
std::optional<nlohmann::ordered_json> body_dom(const ApiCall& call);

/// `text` (JSON the scanner accepted: the body or a value's span) as a DOM, through
/// sanitize_for_dom's copy when nlohmann refuses it. Discarded only if `text` was not scanned.
nlohmann::ordered_json dom_of(std::string_view text);

struct Classified {
  ApiCall call;
  std::optional<HttpError> error;
};

struct ClassifyOptions {
  ScanLimits json;  // server.limits.max_json_depth
};

/// Classifies a request from its method and target alone (surface, operation, the deployment
/// a path names): what authorization needs before any body byte is read. Never throws.
Classified classify_target(std::string_view method, std::string_view target);
/// Completes `call` (from classify_target) with its body: stream flags, the model of the v1
/// surfaces, required parameters. `content_type` decides whether the body is scanned as JSON.
/// The call keeps a view of `body`: it must outlive the call.
std::optional<HttpError> classify_content(ApiCall& call, std::string_view method,
                                          std::string_view content_type, std::string_view body,
                                          ClassifyOptions options = {});
/// Both steps at once. Never throws.
Classified classify(std::string_view method, std::string_view target,
                    std::string_view content_type, std::string_view body,
                    ClassifyOptions options = {});

/// The origin-form target to send to `backend` for `call`.
std::string upstream_target(const ApiCall& call, const config::BackendConfig& backend);

/// The body to send upstream: nullopt when the client's bytes go unchanged, else those bytes
/// with call.edits spliced in and, when the v1 surface routed by the body's "model", its value
/// replaced by the backend's deployment name. Every other byte stays as the client sent it.
std::optional<std::string> rewrite_body(const ApiCall& call, const config::BackendConfig& backend);

/// The OpenAI-shaped model list for GET /v1/models: the configured deployments, or those of
/// them `allowed` accepts.
std::string models_list(const config::Config& config,
                        const std::function<bool(std::string_view)>& allowed = {});

}  // namespace tollgate::core
