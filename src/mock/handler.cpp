#include "mock/handler.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace tollgate::mock {
namespace {

using json = nlohmann::json;
using Overrides = std::span<const std::pair<std::string, std::string>>;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::optional<std::string_view> find_header(const RequestView& req, std::string_view name) {
  for (const auto& h : req.headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return std::nullopt;
}

// Value of query parameter `name` (raw), or nullopt.
std::optional<std::string_view> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    }
  }
  return std::nullopt;
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t x = (state += 0x9e3779b97f4a7c15ULL);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Random (v4) UUID text, 36 chars.
std::string uuid4(std::uint64_t& rng) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t a = splitmix64(rng);
  std::uint64_t b = splitmix64(rng);
  a = (a & ~0xF000ULL) | 0x4000ULL;                         // version 4
  b = (b & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // variant 10
  std::string s(36, '-');
  int pos = 0;
  auto put = [&](std::uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) {
      if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
      s[pos++] = kHex[(v >> (i * 4)) & 15];
    }
  };
  put(a, 16);
  put(b, 16);
  return s;
}

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, p);
}

const std::string& http_date(WorkerContext& w, std::int64_t unix_ms) {
  std::int64_t sec = unix_ms / 1000;
  if (sec != w.date_second) {
    std::time_t t = static_cast<std::time_t>(sec);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    w.date.assign(buf, n);
    w.date_second = sec;
  }
  return w.date;
}

// Renders a status line and headers. Headers named in `overrides` (fault headers) replace the
// defaults of the same name; they are appended at the end.
class Head {
 public:
  Head(std::string& out, int status, Overrides overrides, std::span<const std::string> removed = {})
      : out_(out), overrides_(overrides), removed_(removed) {
    out_.reserve(768);
    out_ += "HTTP/1.1 ";
    append_uint(out_, static_cast<std::uint64_t>(status));
    out_ += ' ';
    out_ += reason_phrase(status);
    out_ += "\r\n";
  }
  void add(std::string_view name, std::string_view value) {
    for (const auto& [n, v] : overrides_) {
      if (iequals(n, name)) return;
    }
    for (const auto& n : removed_) {
      if (iequals(n, name)) return;
    }
    raw(name, value);
  }
  void add(std::string_view name, std::uint64_t value) {
    char buf[24];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, value);
    add(name, std::string_view(buf, static_cast<std::size_t>(p - buf)));
  }
  // Framing headers: never overridden.
  void raw(std::string_view name, std::string_view value) {
    out_ += name;
    out_ += ": ";
    out_ += value;
    out_ += "\r\n";
  }
  void end() {
    for (const auto& [n, v] : overrides_) raw(n, v);
    out_ += "\r\n";
  }

 private:
  std::string& out_;
  Overrides overrides_;
  std::span<const std::string> removed_;
};

std::string mock_error(std::string_view code, std::string_view message) {
  std::string out = R"({"error":{"code":)";
  append_json_string(out, code);
  out += R"(,"message":)";
  append_json_string(out, message);
  out += "}}";
  return out;
}

enum class Surface : std::uint8_t { Deployment, V1, Classic };

// Content between `name="purpose"` and the next CRLF of a multipart body; "" when absent.
std::string multipart_field(std::string_view body, std::string_view field) {
  std::string marker = "name=\"" + std::string(field) + "\"";
  auto at = body.find(marker);
  if (at == std::string_view::npos) return {};
  auto start = body.find("\r\n\r\n", at);
  if (start == std::string_view::npos) return {};
  start += 4;
  auto stop = body.find("\r\n", start);
  return std::string(body.substr(start, std::min<std::size_t>(stop - start, 256)));
}

std::string multipart_filename(std::string_view body) {
  auto at = body.find("filename=\"");
  if (at == std::string_view::npos) return "upload.jsonl";
  at += 10;
  auto stop = body.find('"', at);
  if (stop == std::string_view::npos) return "upload.jsonl";
  return std::string(body.substr(at, std::min<std::size_t>(stop - at, 256)));
}

// The bytes of the multipart part named "file" (up to the next boundary line).
std::string multipart_file(std::string_view body) {
  auto at = body.find("name=\"file\"");
  if (at == std::string_view::npos) return {};
  auto start = body.find("\r\n\r\n", at);
  if (start == std::string_view::npos) return {};
  start += 4;
  auto stop = body.find("\r\n--", start);
  return std::string(body.substr(start, stop == std::string_view::npos ? stop : stop - start));
}

// A stored object's body with another status; without its result (output, usage, output file)
// unless `keep_result`.
std::string with_status(std::string_view body, std::string_view status, bool keep_result) {
  auto j = nlohmann::ordered_json::parse(body, nullptr, false);
  if (!j.is_object()) return std::string(body);
  j["status"] = status;
  if (!keep_result) {
    if (j.contains("output")) j["output"] = nlohmann::ordered_json::array();
    if (j.contains("usage")) j["usage"] = nullptr;
    if (j.contains("output_file_id")) j["output_file_id"] = nullptr;
  }
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// GET files, as OpenAI lists them: newest first by created_at (`order=asc`: oldest first), from
// the object after the `after` id (none when no file has it), at most `limit` (default and
// most 10,000), with has_more, first_id and last_id. `bodies`: the instance's stored files.
std::string files_list(const std::vector<std::string>& bodies, std::string_view query) {
  using ojson = nlohmann::ordered_json;
  std::vector<ojson> files;
  for (const auto& b : bodies) files.push_back(ojson::parse(b, nullptr, false));
  // Ties within a second in creation order: this instance's ids differ only in their counter.
  auto key = [](const ojson& f) {
    auto id = f["id"].get<std::string>();
    return std::tuple(f["created_at"].get<std::int64_t>(), id.size(), id);
  };
  std::sort(files.begin(), files.end(),
            [&](const ojson& a, const ojson& b) { return key(a) < key(b); });
  if (query_param(query, "order").value_or("desc") != "asc")
    std::reverse(files.begin(), files.end());
  std::size_t start = 0;
  if (auto after = query_param(query, "after")) {
    auto id = percent_decode(*after);
    auto it =
        std::find_if(files.begin(), files.end(), [&](const ojson& f) { return f["id"] == id; });
    start = it == files.end() ? files.size() : static_cast<std::size_t>(it - files.begin()) + 1;
  }
  std::size_t limit = 10'000;
  if (auto v = query_param(query, "limit")) {
    std::size_t n = 0;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec == std::errc{} && n > 0) limit = std::min<std::size_t>(n, 10'000);
  }
  auto end = std::min(files.size(), start + limit);
  ojson page = ojson::array();
  for (auto i = start; i < end; ++i) page.push_back(files[i]);
  ojson out = {{"object", "list"},
               {"data", page},
               {"first_id", page.empty() ? ojson() : page.front()["id"]},
               {"last_id", page.empty() ? ojson() : page.back()["id"]},
               {"has_more", end < files.size()}};
  return out.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

}  // namespace

std::optional<std::string> Handler::create_batch(std::string_view body, std::int64_t created) {
  using ojson = nlohmann::ordered_json;
  auto req = json::parse(body, nullptr, false);
  if (!req.is_object() || !req.contains("input_file_id") || !req["input_file_id"].is_string()) {
    return std::nullopt;
  }
  std::string input = req["input_file_id"].get<std::string>();
  auto lines = input.starts_with("file-") ? state_.objects.get(input + "/content") : std::nullopt;
  if (!lines) return std::nullopt;
  // What the batch writes: one answer line per request line, keeping its custom_id.
  std::string output;
  std::uint64_t count = 0;
  for (std::size_t at = 0; at < lines->size();) {
    auto stop = std::min(lines->find('\n', at), lines->size());
    auto line = json::parse(lines->substr(at, stop - at), nullptr, false);
    at = stop + 1;
    if (!line.is_object()) continue;
    ++count;
    ojson answer = {{"id", "batch_req_" + std::to_string(count)},
                    {"custom_id", line.value("custom_id", "")},
                    {"response", {{"status_code", 200}, {"body", ojson::object()}}},
                    {"error", nullptr}};
    output += answer.dump() + "\n";
  }
  std::string out_id = state_.objects.new_file_id();
  ojson file = {{"bytes", output.size()}, {"created_at", created}, {"filename", "batch_output.jsonl"},
                {"id", out_id},           {"object", "file"},       {"purpose", "batch_output"},
                {"status", "processed"}};
  state_.objects.put(out_id, file.dump());
  state_.objects.put(out_id + "/content", output);
  std::string id = state_.objects.new_batch_id();
  ojson batch = {{"id", id},
                 {"object", "batch"},
                 {"endpoint", req.value("endpoint", "/chat/completions")},
                 {"errors", nullptr},
                 {"input_file_id", input},
                 {"completion_window", req.value("completion_window", "24h")},
                 {"status", "completed"},
                 {"output_file_id", out_id},
                 {"error_file_id", nullptr},
                 {"created_at", created},
                 {"request_counts", {{"total", count}, {"completed", count}, {"failed", 0}}},
                 {"metadata", nullptr}};
  auto done = batch.dump();
  auto queued = with_status(done, "validating", /*keep_result=*/false);
  state_.objects.defer(id, done, 2);  // completed at its second read
  state_.objects.put(id, queued);
  return queued;
}

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

Clock Clock::system() {
  return Clock{[] {
                 return std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                     .count();
               },
               [] {
                 return std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                     .count();
               }};
}

struct Handler::Route {
  enum class Kind : std::uint8_t { NotFound, MethodNotAllowed, Ok };
  Kind kind = Kind::NotFound;
  Operation op = Operation::ChatCompletions;
  Surface surface = Surface::V1;
  std::string deployment;  // decoded, deployment surface only
  std::string id;          // responses/{id}, files/{id}
  std::string_view allow;  // for 405
};

struct Handler::Ctx {
  const RequestView& req;
  WorkerContext& w;
  std::uint64_t seq = 0;
  std::int64_t unix_ms = 0;
  std::string apim_id;
  std::string request_id;
  std::string_view client_request_id;
  std::string deployment;  // for x-ms-deployment-name ("" = omit)
  std::string model;
  std::string_view api_version;
  bool has_api_version = false;
  Overrides overrides;
  std::span<const std::string> removed;
  std::optional<TpmWindow::Admission> limits;  // rate-limit header values already computed
};

Handler::Handler(const Options& options, State& state, Clock clock)
    : options_(options), state_(state), clock_(std::move(clock)) {
  // Stable per instance name, so two runs of the same instance look alike.
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : options_.name) h = (h ^ ch) * 0x100000001b3ULL;
  char buf[32];
  std::snprintf(buf, sizeof buf, "fp_%010llx",
                static_cast<unsigned long long>(h & 0xffffffffffULL));
  fingerprint_ = buf;
  std::snprintf(buf, sizeof buf, "d%03u-20241120000000", static_cast<unsigned>(h % 1000));
  session_id_ = buf;
}

Reply Handler::handle(const RequestView& req, WorkerContext& w) {
  std::string_view target = req.target;
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  if (path == "/_mock" || path.starts_with("/_mock/")) {
    try {
      return control(req, path, query, w);
    } catch (const std::exception& e) {
      return internal_error(e.what());
    }
  }
  std::int64_t in_flight = state_.enter();
  Reply r;
  try {
    r = inference(req, path, query, in_flight, w);
  } catch (const std::exception& e) {
    // Not expected (the handler reports errors as replies); keeps in_flight balanced regardless.
    r = internal_error(e.what());
  }
  r.tracked = true;
  if (r.kind == Reply::Kind::Full || r.kind == Reply::Kind::Stream) w.stats.count_status(r.status);
  return r;
}

Reply Handler::internal_error(std::string_view what) {
  Reply r;
  r.status = 500;
  r.body = mock_error("MockInternalError", what);
  r.close = true;
  Head h(r.head, 500, {});
  h.raw("content-type", "application/json");
  h.raw("content-length", std::to_string(r.body.size()));
  h.raw("x-mock-instance", options_.name);
  h.raw("connection", "close");
  h.end();
  return r;
}

void Handler::finish(const Reply& reply, Outcome outcome, WorkerContext& w) noexcept {
  if (reply.tracked) state_.leave();
  if (reply.kind != Reply::Kind::Stream) return;
  switch (outcome) {
    case Outcome::Done:
      w.stats.streams_completed.fetch_add(1, std::memory_order_relaxed);
      break;
    case Outcome::ClientGone:
      w.stats.streams_aborted.fetch_add(1, std::memory_order_relaxed);
      break;
    case Outcome::FaultClosed:
      w.stats.streams_faulted.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

Reply Handler::inference(const RequestView& req, std::string_view path, std::string_view query,
                         std::int64_t in_flight, WorkerContext& w) {
  w.stats.requests_total.fetch_add(1, std::memory_order_relaxed);
  w.stats.count_path(path);
  Ctx c{req, w};
  c.seq = state_.seq.fetch_add(1, std::memory_order_relaxed) + 1;
  c.unix_ms = clock_.unix_ms();
  if (state_.captures.enabled()) {
    state_.captures.push(c.seq, c.unix_ms, req.method, req.target, req.headers, req.body);
  }
  c.apim_id = uuid4(w.rng);
  c.request_id = uuid4(w.rng);
  c.client_request_id = find_header(req, "x-ms-client-request-id").value_or(c.apim_id);
  if (auto v = query_param(query, "api-version")) {
    c.api_version = *v;
    c.has_api_version = !v->empty();
  }

  auto render = [&](Reply& r, std::string_view content_type,
                    std::initializer_list<std::pair<std::string_view, std::string>> extra) {
    Head h(r.head, r.status, c.overrides, c.removed);
    h.add("content-type", content_type);
    if (r.kind == Reply::Kind::Stream) {
      if (r.chunked) h.raw("transfer-encoding", "chunked");
      h.add("x-accel-buffering", "no");
    } else {
      h.raw("content-length", std::to_string(r.body.size()));
    }
    h.add("date", http_date(w, c.unix_ms));
    h.add("apim-request-id", c.apim_id);
    h.add("x-request-id", c.request_id);
    h.add("x-ms-client-request-id", c.client_request_id);
    h.add("x-ms-region", options_.region);
    if (!c.deployment.empty()) h.add("x-ms-deployment-name", c.deployment);
    h.add("azureml-model-session", session_id_);
    h.add("x-content-type-options", "nosniff");
    h.add("strict-transport-security", "max-age=31536000; includeSubDomains; preload");
    h.add("cache-control", "no-cache, must-revalidate");
    h.add("access-control-allow-origin", "*");
    if (state_.tpm) {
      if (!c.limits) c.limits = state_.tpm->peek(clock_.steady_ms());
      h.add("x-ratelimit-limit-requests", state_.tpm->limit_requests());
      h.add("x-ratelimit-limit-tokens", state_.tpm->limit_tokens());
      h.add("x-ratelimit-remaining-requests", c.limits->remaining_requests);
      h.add("x-ratelimit-remaining-tokens", c.limits->remaining_tokens);
    } else {
      h.add("x-ratelimit-limit-requests", std::uint64_t{60000});
      h.add("x-ratelimit-limit-tokens", std::uint64_t{10000000});
      h.add("x-ratelimit-remaining-requests", std::uint64_t{10000});
      h.add("x-ratelimit-remaining-tokens", std::uint64_t{10000000});
    }
    if (options_.ptu) {
      double u = 0;
      if (state_.tpm) {
        u = state_.tpm->utilization(clock_.steady_ms());
      } else if (options_.max_in_flight) {
        u = 100.0 * static_cast<double>(in_flight) / options_.max_in_flight;
      }
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.1f%%", u);
      h.add("azure-openai-deployment-utilization", buf);
    }
    for (const auto& [n, v] : extra) h.add(n, v);
    h.add("x-mock-instance", options_.name);
    h.add("x-mock-seq", c.seq);
    if (r.close) {
      h.raw("connection", "close");
    } else if (req.http10) {
      h.raw("connection", "keep-alive");
    }
    h.end();
  };
  auto json_reply =
      [&](int status, std::string body,
          std::initializer_list<std::pair<std::string_view, std::string>> extra = {}) {
        Reply r;
        r.status = status;
        r.body = std::move(body);
        r.close = !req.keep_alive;
        render(r, "application/json", extra);
        return r;
      };

  if (options_.max_in_flight && in_flight > static_cast<std::int64_t>(options_.max_in_flight)) {
    return json_reply(429, error_too_many_in_flight(),
                      {{"retry-after-ms", "100"}, {"retry-after", "1"}});
  }

  // --- route ---
  Route route;
  auto method_is = [&](std::string_view m) { return req.method == m; };
  auto post_only = [&](Operation op) {
    route.op = op;
    route.allow = "POST";
    route.kind = method_is("POST") ? Route::Kind::Ok : Route::Kind::MethodNotAllowed;
  };
  auto object_ops = [&](std::string_view rest, std::string_view collection, Operation create,
                        Operation get, Operation del, std::optional<Operation> list = {}) {
    if (rest == collection) {
      post_only(create);
      if (list && method_is("GET")) {
        route.op = *list;
        route.kind = Route::Kind::Ok;
      }
      if (list) route.allow = "GET, POST";
      return true;
    }
    if (rest.size() > collection.size() + 1 && rest.starts_with(collection) &&
        rest[collection.size()] == '/') {
      std::string_view id = rest.substr(collection.size() + 1);
      if (id.find('/') != std::string_view::npos) return false;
      route.id = percent_decode(id);
      route.allow = "GET, DELETE";
      if (method_is("GET")) {
        route.op = get;
        route.kind = Route::Kind::Ok;
      } else if (method_is("DELETE")) {
        route.op = del;
        route.kind = Route::Kind::Ok;
      } else {
        route.kind = Route::Kind::MethodNotAllowed;
      }
      return true;
    }
    return false;
  };
  // files/{id}/content, responses/{id}/cancel, batches[/{id}[/cancel]].
  auto nested_ops = [&](std::string_view rest) {
    std::vector<std::string_view> seg;
    for (std::size_t at = 0; at <= rest.size();) {
      auto slash = std::min(rest.find('/', at), rest.size());
      seg.push_back(rest.substr(at, slash - at));
      at = slash + 1;
    }
    if (seg.size() >= 2) route.id = percent_decode(seg[1]);
    if (seg.size() == 3 && seg[0] == "files" && seg[2] == "content") {
      route.op = Operation::FilesContent;
      route.allow = "GET";
      route.kind = method_is("GET") ? Route::Kind::Ok : Route::Kind::MethodNotAllowed;
    } else if (seg.size() == 3 && seg[0] == "responses" && seg[2] == "cancel") {
      post_only(Operation::ResponsesCancel);
    } else if (seg.size() == 1 && seg[0] == "batches") {
      post_only(Operation::BatchesCreate);
    } else if (seg.size() == 2 && seg[0] == "batches") {
      route.op = Operation::BatchesGet;
      route.allow = "GET";
      route.kind = method_is("GET") ? Route::Kind::Ok : Route::Kind::MethodNotAllowed;
    } else if (seg.size() == 3 && seg[0] == "batches" && seg[2] == "cancel") {
      post_only(Operation::BatchesCancel);
    } else {
      return false;
    }
    return true;
  };
  auto inference_ops = [&](std::string_view rest) {
    if (rest == "chat/completions") {
      post_only(Operation::ChatCompletions);
    } else if (rest == "completions") {
      post_only(Operation::Completions);
    } else if (rest == "embeddings") {
      post_only(Operation::Embeddings);
    } else {
      return false;
    }
    return true;
  };
  if (path.starts_with("/openai/deployments/")) {
    std::string_view rest = path.substr(20);
    auto slash = rest.find('/');
    if (slash != std::string_view::npos && slash > 0 && inference_ops(rest.substr(slash + 1))) {
      route.surface = Surface::Deployment;
      route.deployment = percent_decode(rest.substr(0, slash));
    }
  } else if (path.starts_with("/openai/v1/")) {
    std::string_view rest = path.substr(11);
    route.surface = Surface::V1;
    if (!inference_ops(rest) && !nested_ops(rest) &&
        !object_ops(rest, "responses", Operation::ResponsesCreate,
                                            Operation::ResponsesGet, Operation::ResponsesDelete)) {
      object_ops(rest, "files", Operation::FilesCreate, Operation::FilesGet, Operation::FilesDelete,
                 Operation::FilesList);
    }
  } else if (path.starts_with("/openai/")) {
    std::string_view rest = path.substr(8);
    route.surface = Surface::Classic;
    if (!nested_ops(rest) &&
        !object_ops(rest, "responses", Operation::ResponsesCreate, Operation::ResponsesGet,
                    Operation::ResponsesDelete)) {
      object_ops(rest, "files", Operation::FilesCreate, Operation::FilesGet, Operation::FilesDelete,
                 Operation::FilesList);
    }
  }
  const bool json_op =
      route.kind == Route::Kind::Ok &&
      (route.op == Operation::ChatCompletions || route.op == Operation::Completions ||
       route.op == Operation::Embeddings || route.op == Operation::ResponsesCreate);

  // --- fault (header first; the queue is consulted once the deployment is known) ---
  std::optional<Fault> fault;
  if (auto spec = find_header(req, "x-mock-fault")) {
    json j = json_too_deep(*spec, 32) ? json(nullptr) : json::parse(*spec, nullptr, false);
    if (j.is_discarded() || j.is_null()) {
      return json_reply(400, mock_error("InvalidMockFault", "x-mock-fault: not valid JSON"));
    }
    FaultParse fp = parse_fault(j);
    if (!fp.fault)
      return json_reply(400, mock_error("InvalidMockFault", "x-mock-fault: " + fp.error));
    fault = std::move(fp.fault);
  }

  InspectResult inspected;
  if (json_op) inspected = inspect_body(route.op, req.body);
  std::string deployment =
      route.surface == Surface::Deployment ? route.deployment : inspected.params.model;
  if (!fault) fault = state_.faults.take(path, deployment);
  if (fault) {
    w.stats.faults_applied.fetch_add(1, std::memory_order_relaxed);
    c.overrides = fault->headers;
    c.removed = fault->removed_headers;
    if (fault->close_immediately) {
      Reply r;
      r.kind = Reply::Kind::Close;
      r.delay = fault->delay;
      r.reset = fault->reset;
      return r;
    }
    if (fault->hang) {
      Reply r;
      r.kind = Reply::Kind::Hang;
      return r;
    }
    // A 2xx status without a body only changes the status of the normal reply (below).
    if ((fault->status && *fault->status >= 300) || fault->body) {
      int status = fault->status.value_or(200);
      std::string body;
      if (fault->body) {
        body = *fault->body;
      } else {
        std::uint64_t retry = fault->retry_after.value_or(1);
        if (!fault->retry_after) {
          for (const auto& [n, v] : fault->headers) {
            std::uint64_t x = 0;
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
            if (ec != std::errc{}) continue;
            if (iequals(n, "retry-after")) {
              retry = x;
              break;
            }
            if (iequals(n, "retry-after-ms")) retry = (x + 999) / 1000;
          }
        }
        std::string_view version = c.has_api_version              ? c.api_version
                                   : route.surface == Surface::V1 ? std::string_view("v1")
                                                                  : std::string_view("2024-10-21");
        body = error_for_status(status, route.op, version, retry);
      }
      c.deployment = deployment;
      Reply r;
      r.status = status;
      r.body = std::move(body);
      r.close = !req.keep_alive;
      r.delay = fault->delay;
      render(r, fault->content_type.value_or("application/json"), {});
      return r;
    }
  }
  const Fault* f = fault ? &*fault : nullptr;
  auto with_fault_delay = [&](Reply r) {
    if (f) r.delay += f->delay;
    return r;
  };

  // --- routing errors, auth, api-version ---
  if (route.kind == Route::Kind::NotFound)
    return with_fault_delay(json_reply(404, error_resource_not_found()));
  if (route.kind == Route::Kind::MethodNotAllowed) {
    return with_fault_delay(
        json_reply(405, error_method_not_allowed(), {{"allow", std::string(route.allow)}}));
  }
  if (options_.api_key) {
    auto key = find_header(req, "api-key");
    auto authz = find_header(req, "authorization");
    bool ok = false;
    bool bearer = false;
    if (key) {
      ok = *key == *options_.api_key;
    } else if (authz) {
      std::string_view v = *authz;
      if (v.size() > 7 && iequals(v.substr(0, 7), "bearer ")) {
        bearer = true;
        ok = v.substr(7) == *options_.api_key;
      }
    }
    if (!ok) {
      return with_fault_delay(
          json_reply(401, bearer ? error_invalid_token() : error_invalid_key()));
    }
  }
  if (route.surface != Surface::V1 && !c.has_api_version) {
    return with_fault_delay(json_reply(404, error_resource_not_found()));
  }
  if (inspected.error)
    return with_fault_delay(json_reply(inspected.error->status, inspected.error->body));

  // --- deployment ---
  if (json_op) {
    if (deployment.empty()) {
      return with_fault_delay(
          json_reply(400, error_invalid_request("you must provide a model parameter", "model",
                                                "missing_required_parameter")));
    }
    c.deployment = deployment;
    if (options_.deployments.empty()) {
      c.model = route.op == Operation::Embeddings ? kDefaultEmbeddingModel : kDefaultChatModel;
    } else {
      auto it = std::find_if(options_.deployments.begin(), options_.deployments.end(),
                             [&](const Deployment& d) { return d.name == deployment; });
      if (it == options_.deployments.end()) {
        return with_fault_delay(json_reply(404, error_deployment_not_found()));
      }
      c.model = it->model;
      bool embedding_model = c.model.find("embedding") != std::string::npos;
      if (embedding_model != (route.op == Operation::Embeddings)) {
        return with_fault_delay(json_reply(400, error_operation_not_supported(route.op)));
      }
    }
  }

  // --- operations ---
  if (route.op == Operation::ChatCompletions || route.op == Operation::Completions ||
      route.op == Operation::Embeddings || route.op == Operation::ResponsesCreate) {
    const InferenceParams& p = inspected.params;
    if (state_.tpm) {
      TpmWindow::Admission a = state_.tpm->admit(tpm_estimate(route.op, p), clock_.steady_ms());
      c.limits = a;
      if (!a.admitted) {
        std::uint64_t secs = (a.retry_after_ms + 999) / 1000;
        std::string_view version = c.has_api_version              ? c.api_version
                                   : route.surface == Surface::V1 ? std::string_view("v1")
                                                                  : std::string_view("2024-10-21");
        return with_fault_delay(json_reply(429, error_tpm_exceeded(route.op, version, secs),
                                           {{"retry-after", std::to_string(secs)},
                                            {"retry-after-ms", std::to_string(a.retry_after_ms)},
                                            {"x-ratelimit-reset-tokens", std::to_string(secs)}}));
      }
    }

    if (route.op == Operation::ResponsesCreate && !p.previous_response_id.empty() &&
        !(p.previous_response_id.starts_with("resp_") &&
          state_.objects.get(p.previous_response_id))) {
      return with_fault_delay(json_reply(
          400, error_invalid_request(
                   "Previous response with id '" + p.previous_response_id + "' not found.",
                   "previous_response_id", "previous_response_not_found")));
    }

    unsigned chunks = f && f->chunks ? *f->chunks : options_.chunks;
    std::uint64_t cap = p.max_tokens.value_or(chunks);
    unsigned tokens = static_cast<unsigned>(std::min<std::uint64_t>(chunks, cap));
    bool truncated = cap < chunks;
    std::int64_t created = c.unix_ms / 1000;
    Reply r;
    r.status = f && f->status ? *f->status : 200;
    r.close = !req.keep_alive;
    r.delay = options_.ttft + (f ? f->delay : std::chrono::milliseconds{0});

    if (route.op == Operation::Embeddings) {
      r.body = embeddings_body(p, c.model);
      render(r, "application/json", {});
      return r;
    }
    if (route.op == Operation::ResponsesCreate) {
      std::string id = state_.objects.new_response_id();
      std::string msg_id = "msg_" + options_.name + "_" + std::to_string(c.seq);
      r.body = response_object(id, msg_id, created, c.model, p, tokens, truncated);
      if (p.store && p.background) {  // queued now, completed at its second read
        state_.objects.defer(id, r.body, 2);
        r.body = with_status(r.body, "queued", /*keep_result=*/false);
      }
      if (p.store) state_.objects.put(id, r.body);
      render(r, "application/json", {});
      return r;
    }

    std::string id = (route.op == Operation::ChatCompletions ? "chatcmpl-" : "cmpl-") +
                     options_.name + "-" + std::to_string(c.seq);
    CompletionSpec spec;
    spec.id = id;
    spec.created = created;
    spec.model = c.model;
    spec.fingerprint = fingerprint_;
    spec.prompts = route.op == Operation::Completions ? p.prompts : 1;
    spec.choices = spec.prompts * p.n;
    spec.tokens = tokens;
    spec.truncated = truncated;
    spec.prompt_tokens = p.prompt_tokens;
    std::string call_id;
    if (route.op == Operation::ChatCompletions && !p.tool_call.empty()) {
      call_id = "call_" + options_.name + "_" + std::to_string(c.seq);
      spec.tool_call = p.tool_call;
      spec.tool_call_id = call_id;
    }
    if (!p.stream) {
      r.body = route.op == Operation::ChatCompletions ? chat_completion_body(spec)
                                                      : text_completion_body(spec);
      render(r, "application/json", {});
      return r;
    }
    StreamEnd end = f && f->error_event ? StreamEnd::ErrorEvent : StreamEnd::Normal;
    r.kind = Reply::Kind::Stream;
    r.stream = route.op == Operation::ChatCompletions
                   ? chat_stream(spec, p.include_usage, end)
                   : text_completion_stream(spec, p.include_usage, end);
    r.pace = f && f->pace ? *f->pace : options_.pace;
    if (f && f->close_after_chunks) {
      r.close_after = *f->close_after_chunks;
      r.reset = f->reset;
    }
    if (req.http10) {
      r.chunked = false;
      r.close = true;  // HTTP/1.0: the body ends with the connection
    }
    render(r, "text/event-stream; charset=utf-8", {});
    return r;
  }

  // Stored objects: responses and files (per instance).
  Reply r;
  r.status = f && f->status ? *f->status : 200;
  r.close = !req.keep_alive;
  if (f) r.delay = f->delay;
  switch (route.op) {
    case Operation::ResponsesGet:
    case Operation::FilesGet:
    case Operation::BatchesGet: {
      std::string_view prefix = route.op == Operation::ResponsesGet ? "resp_"
                                : route.op == Operation::FilesGet   ? "file-"
                                                                    : "batch_";
      std::optional<std::string> body;
      if (route.id.starts_with(prefix)) body = state_.objects.read(route.id);
      if (!body) return with_fault_delay(json_reply(404, error_resource_not_found()));
      r.body = std::move(*body);
      break;
    }
    case Operation::ResponsesDelete:
    case Operation::FilesDelete: {
      bool responses = route.op == Operation::ResponsesDelete;
      std::string_view prefix = responses ? "resp_" : "file-";
      if (!route.id.starts_with(prefix) || !state_.objects.erase(route.id)) {
        return with_fault_delay(json_reply(404, error_resource_not_found()));
      }
      json j = {{"id", route.id}, {"object", responses ? "response" : "file"}, {"deleted", true}};
      r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
      break;
    }
    case Operation::FilesList:
      r.body = files_list(state_.objects.bodies_with_prefix("file-"), query);
      break;
    case Operation::FilesCreate: {
      std::string id = state_.objects.new_file_id();
      std::string purpose = multipart_field(req.body, "purpose");
      nlohmann::ordered_json j = {{"bytes", req.body.size()},
                                  {"created_at", c.unix_ms / 1000},
                                  {"filename", multipart_filename(req.body)},
                                  {"id", id},
                                  {"object", "file"},
                                  {"purpose", purpose.empty() ? "fine-tune" : purpose},
                                  {"status", "processed"},
                                  {"status_details", nullptr}};
      r.body = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
      state_.objects.put(id, r.body);
      state_.objects.put(id + "/content", multipart_file(req.body));
      break;
    }
    case Operation::FilesContent: {
      auto content = route.id.starts_with("file-") ? state_.objects.get(route.id + "/content")
                                                   : std::nullopt;
      if (!content) return with_fault_delay(json_reply(404, error_resource_not_found()));
      r.body = std::move(*content);
      render(r, "application/octet-stream", {});
      return r;
    }
    case Operation::ResponsesCancel:
    case Operation::BatchesCancel: {
      auto body = state_.objects.get(route.id);
      if (!body) return with_fault_delay(json_reply(404, error_resource_not_found()));
      if (!state_.objects.cancel(route.id)) {
        return with_fault_delay(json_reply(
            400, error_invalid_request("Cannot cancel an object that is not running.", "", "")));
      }
      r.body = with_status(*body, "cancelled", /*keep_result=*/false);
      state_.objects.put(route.id, r.body);
      break;
    }
    case Operation::BatchesCreate: {
      auto batch = create_batch(req.body, c.unix_ms / 1000);
      if (!batch) return with_fault_delay(json_reply(400, error_invalid_request(
                                              "input_file_id names no file.", "input_file_id", "")));
      r.body = std::move(*batch);
      break;
    }
    default:
      return json_reply(404, error_resource_not_found());
  }
  render(r, "application/json", {});
  return r;
}

Reply Handler::control(const RequestView& req, std::string_view path, std::string_view query,
                       WorkerContext& w) {
  (void)w;
  auto reply = [&](int status, const json& body) {
    Reply r;
    r.status = status;
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    r.close = !req.keep_alive;
    Head h(r.head, status, {});
    h.raw("content-type", "application/json");
    h.raw("content-length", std::to_string(r.body.size()));
    h.raw("x-mock-instance", options_.name);
    h.raw("cache-control", "no-store");
    if (r.close) {
      h.raw("connection", "close");
    } else if (req.http10) {
      h.raw("connection", "keep-alive");
    }
    h.end();
    return r;
  };
  auto error = [&](int status, std::string_view code, std::string_view message) {
    return reply(status, json{{"error", {{"code", code}, {"message", message}}}});
  };
  auto not_allowed = [&] { return error(405, "405", "Method not allowed"); };
  const bool get = req.method == "GET";
  const bool post = req.method == "POST";
  const bool del = req.method == "DELETE";

  if (path == "/_mock/stats") {
    if (!get) return not_allowed();
    return reply(200, state_.stats_json());
  }
  if (path == "/_mock/health") {
    if (!get) return not_allowed();
    return reply(200, json{{"status", "ok"}, {"instance", options_.name}});
  }
  if (path == "/_mock/requests") {
    if (del) {
      state_.captures.clear();
      return reply(200, json{{"cleared", true}});
    }
    if (!get) return not_allowed();
    std::size_t limit = std::max<std::size_t>(options_.capture, 1);
    if (auto v = query_param(query, "limit")) {
      std::size_t n = 0;
      auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
      if (ec != std::errc{} || p != v->data() + v->size()) {
        return error(400, "InvalidLimit", "limit must be a non-negative integer");
      }
      limit = n;
    }
    return reply(200, json{{"requests", state_.captures.to_json(limit)}});
  }
  if (path == "/_mock/faults") {
    if (get) return reply(200, json{{"faults", state_.faults.list()}});
    if (del) return reply(200, json{{"cleared", state_.faults.clear()}});
    if (!post) return not_allowed();
    json j = json::parse(req.body, nullptr, false);
    if (j.is_discarded() || json_too_deep(req.body, 64)) {
      return error(400, "InvalidFault", "body is not valid JSON");
    }
    const json* list = nullptr;
    if (j.is_array()) {
      list = &j;
    } else if (j.is_object() && j.size() == 1 && j.contains("faults")) {
      list = &j["faults"];
      if (!list->is_array()) return error(400, "InvalidFault", "\"faults\" must be an array");
    }
    std::vector<Fault> faults;
    auto add = [&](const json& one, std::size_t index) -> std::optional<std::string> {
      FaultParse fp = parse_fault(one);
      if (!fp.fault)
        return (list ? "faults[" + std::to_string(index) + "]: " : std::string()) + fp.error;
      faults.push_back(std::move(*fp.fault));
      return std::nullopt;
    };
    if (list) {
      for (std::size_t i = 0; i < list->size(); ++i) {
        if (auto err = add((*list)[i], i)) return error(400, "InvalidFault", *err);
      }
    } else if (auto err = add(j, 0)) {
      return error(400, "InvalidFault", *err);
    }
    std::size_t added = faults.size();
    std::size_t pending = state_.faults.add(std::move(faults));
    return reply(200, json{{"added", added}, {"pending", pending}});
  }
  if (path == "/_mock/reset") {
    if (!post) return not_allowed();
    state_.reset();
    return reply(200, json{{"reset", true}});
  }
  return error(404, "404",
               "Unknown control path (known: /_mock/stats, /_mock/requests, "
               "/_mock/faults, /_mock/reset, /_mock/health)");
}

}  // namespace tollgate::mock
