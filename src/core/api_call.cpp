#include "tollgate/core/api_call.hpp"

#include "tollgate/core/objects.hpp"
#include "tollgate/core/path.hpp"

#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/pchars.hpp>
#include <boost/url/url_view.hpp>
#include <algorithm>
#include <array>

namespace tollgate::core {

std::string_view to_string(Operation op) {
  switch (op) {
    case Operation::kChatCompletions: return "chat";
    case Operation::kCompletions: return "completions";
    case Operation::kEmbeddings: return "embeddings";
    case Operation::kResponses: return "responses";
    case Operation::kModels: return "models";
    case Operation::kOther: return "other";
  }
  return "other";
}

namespace {

Operation op_from_path(std::string_view p) {
  if (p == "chat/completions") return Operation::kChatCompletions;
  if (p == "completions") return Operation::kCompletions;
  if (p == "embeddings") return Operation::kEmbeddings;
  if (p == "responses") return Operation::kResponses;
  return Operation::kOther;
}

bool is_json(std::string_view content_type) {
  auto semi = content_type.find(';');
  auto media = content_type.substr(0, semi);
  while (!media.empty() && media.back() == ' ') media.remove_suffix(1);
  if (media.size() < 4) return false;
  // application/json, application/*+json; case-insensitive.
  std::string lower(media);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "application/json" || lower.ends_with("+json");
}

HttpError method_not_allowed(std::string_view method) {
  return HttpError{405, "method_not_allowed",
                   "method " + std::string(method) + " is not allowed on this path", {}, {}};
}

HttpError resource_not_found() {
  return not_found("404", "Resource not found");
}

}  // namespace

namespace {

char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// `a` equals `b` ignoring ASCII case; `b` is in lower case.
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != b[i]) return false;
  }
  return true;
}

std::string lowered(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = ascii_lower(c);
  return out;
}

// Words of the operations the gateway knows, besides the stateful APIs' (core/objects.hpp).
constexpr std::array<std::string_view, 5> kInferenceWords = {"chat", "completions", "embeddings",
                                                             "responses", "models"};

// An operation segment is matched case-insensitively: the gateway's own words are spelled in
// lower case; anything else (ids, names) keeps the client's spelling.
std::string operation_segment(std::string_view seg) {
  auto lower = lowered(seg);
  bool word = std::find(kInferenceWords.begin(), kInferenceWords.end(), lower) !=
                  kInferenceWords.end() ||
              is_path_word(lower);
  return word ? lower : std::string(seg);
}

// The segments of the canonical path, as views into `path` (percent-escapes of reserved and
// non-ASCII bytes remain; unreserved characters are plain). Not copyable: the views would dangle.
struct Segments {
  static constexpr std::size_t kMax = 16;
  Segments() = default;
  Segments(const Segments&) = delete;
  Segments& operator=(const Segments&) = delete;
  std::string path;  // canonical, without its trailing '/'
  std::array<std::string_view, kMax> seg;
  std::size_t count = 0;
  // The operation path from segment `i`: the gateway's words in lower case.
  std::string op_path_from(std::size_t i) const {
    std::string p;
    for (; i < count; ++i) {
      if (!p.empty()) p += '/';
      p += operation_segment(seg[i]);
    }
    return p;
  }
};

// `/openai/deployments//op`: no deployment named (the canonical form would collapse the empty
// name away and read the operation's first word as one).
bool empty_deployment_segment(const boost::urls::url_view& url) {
  auto segs = url.encoded_segments();
  auto it = segs.begin();
  for (std::string_view word : {"openai", "deployments"}) {
    if (it == segs.end() || !iequals((*it).decode(), word)) return false;
    ++it;
  }
  return it != segs.end() && (*it).empty();
}

// The query, api-version and canonical path segments of an origin-form target.
std::optional<HttpError> parse_target(std::string_view target, ApiCall& call, Segments& segs) {
  auto parsed = boost::urls::parse_origin_form(target);
  if (!parsed) return bad_request("the request target is not a valid URL path");
  const auto& url = *parsed;
  call.query = std::string(url.encoded_query());
  for (auto param : url.params()) {
    if (param.key == "api-version") {
      call.api_version = param.value;
      break;
    }
  }
  if (empty_deployment_segment(url)) return resource_not_found();
  auto canonical = canonicalize_path(url.encoded_path());
  if (!canonical.ok()) return bad_request(std::string(describe(canonical.error)));
  segs.path = std::move(canonical.path);
  if (segs.path.size() > 1 && segs.path.back() == '/') segs.path.pop_back();  // one tolerated
  std::string_view rest(segs.path);
  rest.remove_prefix(1);
  while (!rest.empty()) {
    if (segs.count == Segments::kMax) return resource_not_found();
    auto slash = rest.find('/');
    segs.seg[segs.count++] = rest.substr(0, slash);
    rest.remove_prefix(slash == std::string_view::npos ? rest.size() : slash + 1);
  }
  return std::nullopt;
}

// The surface, operation and (for /openai/deployments/{d}/) deployment. `model_from_body`: the
// surface names the deployment in the body's "model". Surface words match in any case.
std::optional<HttpError> classify_path(std::string_view method, const Segments& s, ApiCall& call,
                                       bool& model_from_body) {
  const auto& seg = s.seg;
  bool openai = s.count >= 2 && iequals(seg[0], "openai");
  if (openai && s.count >= 4 && iequals(seg[1], "deployments")) {
    call.surface = Surface::kDeployment;
    call.deployment = boost::urls::make_pct_string_view(seg[2])->decode();
    call.op_path = s.op_path_from(3);
    call.op = op_from_path(call.op_path);
    if (call.op == Operation::kResponses) call.op = Operation::kOther;
    if (call.deployment.empty()) return resource_not_found();
    return std::nullopt;
  }
  model_from_body = true;
  bool azure_v1 = openai && s.count >= 3 && iequals(seg[1], "v1");
  if (azure_v1 || (s.count >= 2 && iequals(seg[0], "v1"))) {
    call.surface = azure_v1 ? Surface::kAzureV1 : Surface::kOpenAIV1;
    call.op_path = s.op_path_from(azure_v1 ? 2 : 1);
    call.op = op_from_path(call.op_path);
    if (call.op_path == "models") {
      if (method != "GET") return method_not_allowed(method);
      call.op = Operation::kModels;
    }
    return std::nullopt;
  }
  if (openai) {
    call.surface = Surface::kAzureOther;
    call.op_path = s.op_path_from(1);
    call.op = op_from_path(call.op_path);
    return std::nullopt;
  }
  return resource_not_found();
}

// The parameters an operation cannot do without.
std::optional<HttpError> check_required(const BodyFields& f, Operation op) {
  if (op == Operation::kChatCompletions) {
    const auto& m = f[BodyField::kMessages];
    if (!m.present()) return bad_request("missing required parameter: 'messages'", "messages");
    if (m.kind != JsonKind::kArray || m.items == 0) {
      return bad_request("'messages' must be a non-empty array", "messages");
    }
  } else if (op == Operation::kEmbeddings && !f[BodyField::kInput].present()) {
    return bad_request("missing required parameter: 'input'", "input");
  }
  return std::nullopt;
}

HttpError scan_error(const ScanError& e, const ScanLimits& limits) {
  switch (e.kind) {
    case ScanErrorKind::kNotObject: return bad_request("the request body must be a JSON object");
    case ScanErrorKind::kTooDeep:
      return bad_request("the request body nests JSON deeper than " + std::to_string(limits.max_depth) +
                         " levels (server.limits.max_json_depth)");
    case ScanErrorKind::kDuplicateKey:
      return HttpError{400, "duplicate_key",
                       "the request body has the member '" + std::string(e.key) +
                           "' more than once",
                       {}, std::string(e.key)};
    case ScanErrorKind::kSyntax: break;
  }
  return bad_request("the request body is not valid JSON");
}

// Scans a JSON body and reads the fields the gateway needs: stream flags, model.
std::optional<HttpError> read_json_body(std::string_view body, bool model_from_body,
                                        const ClassifyOptions& options, ApiCall& call) {
  auto scan = scan_body(body, options.json);
  if (scan.error) return scan_error(*scan.error, options.json);
  const auto& f = scan.fields;
  if (auto stream = as_bool(body, f[BodyField::kStream])) call.stream = *stream;
  if (auto usage = as_bool(body, f.include_usage)) call.include_usage = *usage;
  if (auto e = check_required(f, call.op)) return e;
  if (model_from_body) {
    if (auto model = as_string(body, f[BodyField::kModel])) {
      call.deployment = std::move(*model);
      call.model_in_body = true;
    }
  }
  call.body = body;
  call.fields = f;
  return std::nullopt;
}

std::optional<HttpError> classify_body(std::string_view method, std::string_view content_type,
                                       std::string_view body, bool model_from_body,
                                       const ClassifyOptions& options, ApiCall& call) {
  bool inference = is_inference(call.op);
  if (inference && method != "POST") return method_not_allowed(method);
  // Fine-tuning's "model" is the base model to train, not a deployment: such calls go to the
  // affinity deployment like the other stateful calls without one.
  if (call.op_path.rfind("fine_tuning", 0) == 0) model_from_body = false;
  bool json_body = !body.empty() && (is_json(content_type) || (content_type.empty() && inference));
  if (inference && body.empty()) return bad_request("the request body must be a JSON object");
  if (json_body) {
    if (auto e = read_json_body(body, model_from_body, options, call)) return e;
  } else if (inference) {
    return bad_request("the request body must be JSON (Content-Type: application/json)");
  }
  call.stateful = call.surface != Surface::kDeployment && core::is_stateful_path(call.op_path);
  if (model_from_body && call.deployment.empty() && (!call.stateful || inference)) {
    if (inference) return bad_request("missing required parameter: 'model'", "model");
    return resource_not_found();
  }
  return std::nullopt;
}

}  // namespace

Classified classify_target(std::string_view method, std::string_view target) {
  Classified out;
  Segments segs;
  bool model_from_body = false;
  out.error = parse_target(target, out.call, segs);
  if (!out.error) out.error = classify_path(method, segs, out.call, model_from_body);
  out.call.model_from_body = model_from_body;
  return out;
}

std::optional<HttpError> classify_content(ApiCall& call, std::string_view method,
                                          std::string_view content_type, std::string_view body,
                                          ClassifyOptions options) {
  if (call.op == Operation::kModels) return std::nullopt;
  return classify_body(method, content_type, body, call.model_from_body, options, call);
}

Classified classify(std::string_view method, std::string_view target,
                    std::string_view content_type, std::string_view body, ClassifyOptions options) {
  auto out = classify_target(method, target);
  if (!out.error) out.error = classify_content(out.call, method, content_type, body, options);
  return out;
}

std::string upstream_target(const ApiCall& call, const config::BackendConfig& backend) {
  std::string t = backend.endpoint.base_path;
  switch (call.surface) {
    case Surface::kDeployment:
      t += "/openai/deployments/";
      t += boost::urls::encode(backend.deployment, boost::urls::pchars);
      t += '/';
      break;
    case Surface::kAzureV1:
    case Surface::kOpenAIV1:
      t += "/openai/v1/";
      break;
    case Surface::kAzureOther:
      t += "/openai/";
      break;
  }
  t += call.op_path;
  if (!call.query.empty()) {
    t += '?';
    t += call.query;
  }
  return t;
}

std::optional<std::string> rewrite_body(const ApiCall& call, const config::BackendConfig& backend) {
  if (!call.fields) return std::nullopt;
  bool model = call.model_in_body && call.deployment != backend.deployment;
  if (!model && call.edits.empty()) return std::nullopt;
  if (!model) return call.edits.apply(call.body);
  auto edits = call.edits;
  edits.replace((*call.fields)[BodyField::kModel].span, json_quote(backend.deployment));
  return edits.apply(call.body);
}

nlohmann::ordered_json dom_of(std::string_view text) {
  auto j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    j = nlohmann::ordered_json::parse(sanitize_for_dom(text), nullptr, /*allow_exceptions=*/false);
  }
  return j;
}

std::optional<nlohmann::ordered_json> body_dom(const ApiCall& call) {
  if (!call.fields) return std::nullopt;
  auto j = dom_of(call.body);
  if (j.is_discarded()) return std::nullopt;  // not for a scanned body (the fuzz target checks)
  return j;
}

std::string models_list(const config::Config& config,
                        const std::function<bool(std::string_view)>& allowed) {
  std::string out = "{\"object\":\"list\",\"data\":[";
  bool first = true;
  for (const auto& d : config.deployments) {
    if (allowed && !allowed(d.name)) continue;
    if (!first) out += ',';
    first = false;
    out += "{\"id\":";
    out += json_quote(d.name);
    out += ",\"object\":\"model\",\"created\":0,\"owned_by\":\"tollgate\"}";
  }
  out += "]}";
  return out;
}

}  // namespace tollgate::core
