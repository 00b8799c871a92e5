#include "mock/state.hpp"

#include <algorithm>

namespace tollgate::mock {
namespace {

using json = nlohmann::json;

constexpr std::int64_t kTokenWindowMs = 60'000;
constexpr std::int64_t kRequestWindowMs = 10'000;

bool read_uint(const json& v, std::uint64_t& out, std::uint64_t max) {
  if (!v.is_number_integer()) return false;
  if (!v.is_number_unsigned() && v.get<std::int64_t>() < 0) return false;
  out = v.get<std::uint64_t>();
  return out <= max;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

FaultParse parse_fault(const json& j) {
  FaultParse r;
  if (!j.is_object()) {
    r.error = "a fault must be a JSON object";
    return r;
  }
  Fault f;
  f.source = j;
  std::string err;
  auto bad = [&](const std::string& key, const char* what) {
    if (err.empty()) err = "fault field \"" + key + "\": " + what;
  };
  for (const auto& [key, v] : j.items()) {
    std::uint64_t u = 0;
    if (key == "status") {
      if (read_uint(v, u, 599) && u >= 200) {
        f.status = static_cast<int>(u);
      } else {
        bad(key, "expected an HTTP status 200..599");
      }
    } else if (key == "headers") {
      if (!v.is_object()) {
        bad(key, "expected an object of header names to values");
        continue;
      }
      for (const auto& [name, value] : v.items()) {
        if (name.empty() || name.find_first_of(":\r\n ") != std::string::npos) {
          bad(key, "invalid header name");
        } else if (value.is_string()) {
          const auto& s = value.get_ref<const std::string&>();
          if (s.find_first_of("\r\n") != std::string::npos)
            bad(key, "header values cannot hold CR/LF");
          f.headers.emplace_back(name, s);
        } else if (value.is_number() || value.is_boolean()) {
          f.headers.emplace_back(name, value.dump());
        } else if (value.is_null()) {
          f.removed_headers.push_back(name);
        } else {
          bad(key, "header values must be strings, numbers, booleans or null (= omit)");
        }
      }
    } else if (key == "body") {
      f.body = v.is_string() ? v.get<std::string>()
                             : v.dump(-1, ' ', false, json::error_handler_t::replace);
    } else if (key == "content_type") {
      if (v.is_string() &&
          v.get_ref<const std::string&>().find_first_of("\r\n") == std::string::npos) {
        f.content_type = v.get<std::string>();
      } else {
        bad(key, "expected a string");
      }
    } else if (key == "delay_ms") {
      if (read_uint(v, u, 3'600'000)) {
        f.delay = std::chrono::milliseconds(u);
      } else {
        bad(key, "expected milliseconds (0..3600000)");
      }
    } else if (key == "hang" || key == "close_immediately" || key == "reset" ||
               key == "error_event") {
      if (!v.is_boolean()) {
        bad(key, "expected true or false");
        continue;
      }
      bool b = v.get<bool>();
      if (key == "hang") f.hang = b;
      if (key == "close_immediately") f.close_immediately = b;
      if (key == "reset") f.reset = b;
      if (key == "error_event") f.error_event = b;
    } else if (key == "close_after_chunks") {
      if (read_uint(v, u, 100'000)) {
        f.close_after_chunks = static_cast<unsigned>(u);
      } else {
        bad(key, "expected a chunk count");
      }
    } else if (key == "pace_ms") {
      if (read_uint(v, u, 3'600'000)) {
        f.pace = std::chrono::milliseconds(u);
      } else {
        bad(key, "expected milliseconds");
      }
    } else if (key == "chunks") {
      if (read_uint(v, u, 100'000)) {
        f.chunks = static_cast<unsigned>(u);
      } else {
        bad(key, "expected a chunk count (0..100000)");
      }
    } else if (key == "retry_after") {
      if (read_uint(v, u, 1'000'000)) {
        f.retry_after = u;
      } else {
        bad(key, "expected seconds");
      }
    } else if (key == "count") {
      if (v.is_number_integer() && (v.get<std::int64_t>() >= 1 || v.get<std::int64_t>() == -1)) {
        f.count = v.get<std::int64_t>();
      } else {
        bad(key, "expected a positive integer, or -1 for forever");
      }
    } else if (key == "match") {
      if (!v.is_object()) {
        bad(key, "expected {\"path_contains\": \"...\", \"deployment\": \"...\"}");
        continue;
      }
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string()) {
          bad("match." + mk, "expected a string");
        } else if (mk == "path_contains") {
          f.match_path_contains = mv.get<std::string>();
        } else if (mk == "deployment") {
          f.match_deployment = mv.get<std::string>();
        } else {
          bad("match." + mk, "unknown key (known: path_contains, deployment)");
        }
      }
    } else {
      bad(key,
          "unknown key (known: status, headers, body, content_type, delay_ms, hang, "
          "close_immediately, reset, close_after_chunks, pace_ms, chunks, error_event, "
          "retry_after, count, match)");
    }
  }
  if (!err.empty()) {
    r.error = std::move(err);
    return r;
  }
  r.fault = std::move(f);
  return r;
}

std::size_t FaultQueue::add(std::vector<Fault> faults) {
  std::lock_guard lock(mu_);
  for (auto& f : faults) faults_.push_back(std::move(f));
  size_.store(faults_.size(), std::memory_order_release);
  return faults_.size();
}

std::optional<Fault> FaultQueue::take(std::string_view path, std::string_view deployment) {
  if (size_.load(std::memory_order_acquire) == 0) return std::nullopt;
  std::lock_guard lock(mu_);
  for (auto it = faults_.begin(); it != faults_.end(); ++it) {
    if (!it->match_path_contains.empty() &&
        path.find(it->match_path_contains) == std::string_view::npos) {
      continue;
    }
    if (!it->match_deployment.empty() && it->match_deployment != deployment) continue;
    Fault f = *it;
    if (it->count > 0 && --it->count == 0) {
      faults_.erase(it);
      size_.store(faults_.size(), std::memory_order_release);
    }
    return f;
  }
  return std::nullopt;
}

json FaultQueue::list() const {
  std::lock_guard lock(mu_);
  json out = json::array();
  for (const auto& f : faults_) {
    json e = f.source;
    e["count"] = f.count;
    out.push_back(std::move(e));
  }
  return out;
}

std::size_t FaultQueue::clear() {
  std::lock_guard lock(mu_);
  std::size_t n = faults_.size();
  faults_.clear();
  size_.store(0, std::memory_order_release);
  return n;
}

// ---------------------------------------------------------------------------------------------

void CaptureRing::push(std::uint64_t seq, std::int64_t received_at_ms, std::string_view method,
                       std::string_view target, std::span<const HeaderField> headers,
                       std::string_view body) {
  if (capacity_ == 0) return;
  std::lock_guard lock(mu_);
  if (next_ >= ring_.size()) ring_.emplace_back();  // grows to capacity_, then slots are reused
  CapturedRequest& r = ring_[next_];
  next_ = (next_ + 1) % capacity_;
  size_ = std::min(size_ + 1, capacity_);
  r.seq = seq;
  r.received_at_ms = received_at_ms;
  r.body_bytes = body.size();
  r.head.clear();
  auto put = [&](std::string_view x) {
    r.head.append(x.data(), x.size());
    r.head.push_back('\0');
  };
  put(method);
  put(target);
  for (const auto& h : headers) {
    put(h.name);
    put(h.value);
  }
  r.body.assign(body.data(), std::min(body.size(), kBodyLimit));
}

json CaptureRing::to_json(std::size_t limit) const {
  json out = json::array();
  std::lock_guard lock(mu_);
  std::size_t take = std::min(limit, size_);
  for (std::size_t k = take; k > 0; --k) {
    // The newest entry sits just before next_.
    const CapturedRequest& r = ring_[(next_ + capacity_ - k) % capacity_];
    std::vector<std::string_view> parts;
    std::string_view head = r.head;
    while (!head.empty()) {
      auto nul = head.find('\0');
      parts.push_back(head.substr(0, nul));
      head.remove_prefix(nul + 1);
    }
    if (parts.size() < 2) continue;
    json e;
    e["seq"] = r.seq;
    e["method"] = std::string(parts[0]);
    e["target"] = std::string(parts[1]);
    std::string_view target = parts[1];
    auto q = target.find('?');
    e["path"] = std::string(target.substr(0, q));
    json query = json::object();
    if (q != std::string_view::npos) {
      std::string_view rest = target.substr(q + 1);
      while (!rest.empty()) {
        auto amp = rest.find('&');
        std::string_view pair = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        // Values are reported raw (not percent-decoded) so tests see exactly what was sent.
        query[std::string(pair.substr(0, eq))] =
            eq == std::string_view::npos ? std::string() : std::string(pair.substr(eq + 1));
      }
    }
    e["query"] = std::move(query);
    json headers = json::object();
    for (std::size_t i = 2; i + 1 < parts.size(); i += 2) {
      std::string name(parts[i]);
      for (auto& ch : name) {
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
      }
      auto it = headers.find(name);
      if (it == headers.end()) {
        headers[name] = std::string(parts[i + 1]);
      } else {
        it->get_ref<std::string&>() += ", " + std::string(parts[i + 1]);
      }
    }
    e["headers"] = std::move(headers);
    e["body"] = r.body;
    e["body_bytes"] = r.body_bytes;
    e["received_at_ms"] = r.received_at_ms;
    out.push_back(std::move(e));
  }
  return out;
}

void CaptureRing::clear() {
  std::lock_guard lock(mu_);
  next_ = 0;
  size_ = 0;
}

// ---------------------------------------------------------------------------------------------

std::string ObjectStore::new_response_id() {
  std::lock_guard lock(mu_);
  return "resp_" + instance_ + "_" + std::to_string(++next_response_);
}

std::string ObjectStore::new_file_id() {
  std::lock_guard lock(mu_);
  return "file-" + instance_ + "-" + std::to_string(++next_file_);
}

std::string ObjectStore::new_batch_id() {
  std::lock_guard lock(mu_);
  return "batch_" + instance_ + "_" + std::to_string(++next_batch_);
}

void ObjectStore::defer(std::string id, std::string final_body, unsigned reads) {
  std::lock_guard lock(mu_);
  deferred_[std::move(id)] = Deferred{std::move(final_body), reads};
}

std::optional<std::string> ObjectStore::read(std::string_view id) {
  std::lock_guard lock(mu_);
  auto it = objects_.find(std::string(id));
  if (it == objects_.end()) return std::nullopt;
  if (auto d = deferred_.find(it->first); d != deferred_.end() && --d->second.reads == 0) {
    it->second = std::move(d->second.final_body);
    deferred_.erase(d);
  }
  return it->second;
}

bool ObjectStore::cancel(std::string_view id) {
  std::lock_guard lock(mu_);
  return deferred_.erase(std::string(id)) != 0;
}

void ObjectStore::put(std::string id, std::string body) {
  std::lock_guard lock(mu_);
  objects_[std::move(id)] = std::move(body);
}

std::optional<std::string> ObjectStore::get(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = objects_.find(std::string(id));
  if (it == objects_.end()) return std::nullopt;
  return it->second;
}

bool ObjectStore::erase(std::string_view id) {
  std::lock_guard lock(mu_);
  return objects_.erase(std::string(id)) != 0;
}

std::vector<std::string> ObjectStore::bodies_with_prefix(std::string_view prefix) const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [id, body] : objects_) {
    // "file-…/content" holds a file's bytes, not an object.
    if (id.starts_with(prefix) && id.find('/') == std::string::npos) out.push_back(body);
  }
  return out;
}

std::size_t ObjectStore::size() const {
  std::lock_guard lock(mu_);
  return objects_.size();
}

void ObjectStore::clear() {
  std::lock_guard lock(mu_);
  objects_.clear();
}

// ---------------------------------------------------------------------------------------------

TpmWindow::TpmWindow(std::uint64_t tokens_per_minute)
    : limit_(tokens_per_minute),
      rpm_(std::max<std::uint64_t>(1, tokens_per_minute * 6 / 1000)),
      per_10s_(std::max<std::uint64_t>(
          1, std::max<std::uint64_t>(1, tokens_per_minute * 6 / 1000) / 6)) {}

void TpmWindow::expire(std::int64_t now_ms) {
  while (!charges_.empty() && charges_.front().first <= now_ms - kTokenWindowMs) {
    used_ -= charges_.front().second;
    charges_.pop_front();
  }
  while (!requests_.empty() && requests_.front() <= now_ms - kRequestWindowMs)
    requests_.pop_front();
}

TpmWindow::Admission TpmWindow::admit(std::uint64_t tokens, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  expire(now_ms);
  Admission a;
  if (used_ + tokens <= limit_) {
    a.admitted = true;
    used_ += tokens;
    charges_.emplace_back(now_ms, tokens);
    requests_.push_back(now_ms);
  } else if (tokens > limit_) {
    a.retry_after_ms = kTokenWindowMs;  // can never fit; Azure-like "try again later"
  } else {
    // Earliest time at which enough of the window has expired for this request to fit.
    std::uint64_t need = used_ + tokens - limit_;
    std::uint64_t freed = 0;
    for (const auto& [t, n] : charges_) {
      freed += n;
      if (freed >= need) {
        a.retry_after_ms =
            static_cast<std::uint64_t>(std::max<std::int64_t>(1, t + kTokenWindowMs - now_ms));
        break;
      }
    }
  }
  a.remaining_tokens = limit_ - std::min(limit_, used_);
  a.remaining_requests = per_10s_ - std::min<std::uint64_t>(per_10s_, requests_.size());
  return a;
}

TpmWindow::Admission TpmWindow::peek(std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  expire(now_ms);
  Admission a;
  a.admitted = true;
  a.remaining_tokens = limit_ - std::min(limit_, used_);
  a.remaining_requests = per_10s_ - std::min<std::uint64_t>(per_10s_, requests_.size());
  return a;
}

double TpmWindow::utilization(std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  expire(now_ms);
  return limit_ == 0 ? 0.0 : 100.0 * static_cast<double>(used_) / static_cast<double>(limit_);
}

void TpmWindow::clear() {
  std::lock_guard lock(mu_);
  charges_.clear();
  requests_.clear();
  used_ = 0;
}

// ---------------------------------------------------------------------------------------------

void WorkerStats::count_path(std::string_view path) {
  std::lock_guard lock(by_path_mu);
  auto it = by_path.find(path);
  if (it != by_path.end()) {
    ++it->second;
  } else if (by_path.size() < 10'000) {  // bounded: ids in paths must not grow this forever
    by_path.emplace(std::string(path), 1);
  } else {
    ++by_path["(other)"];
  }
}

void WorkerStats::reset() {
  for (auto* c : {&requests_total, &streams_started, &streams_completed, &streams_aborted,
                  &streams_faulted, &faults_applied, &connections_total}) {
    c->store(0, std::memory_order_relaxed);
  }
  for (auto& c : by_status) c.store(0, std::memory_order_relaxed);
  std::lock_guard lock(by_path_mu);
  by_path.clear();
}

State::State(std::string instance, std::size_t capture_capacity, std::uint64_t tpm_limit,
             unsigned workers)
    : captures(capture_capacity), objects(instance), instance_(std::move(instance)) {
  if (tpm_limit > 0) tpm = std::make_unique<TpmWindow>(tpm_limit);
  for (unsigned i = 0; i < std::max(1u, workers); ++i)
    workers_.push_back(std::make_unique<WorkerStats>());
}

std::int64_t State::enter() {
  std::int64_t now = in_flight.fetch_add(1, std::memory_order_relaxed) + 1;
  std::int64_t seen = max_in_flight_seen.load(std::memory_order_relaxed);
  while (now > seen &&
         !max_in_flight_seen.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
  return now;
}

json State::stats_json() const {
  std::uint64_t requests = 0, started = 0, completed = 0, aborted = 0, faulted = 0, applied = 0,
                conns_total = 0;
  std::int64_t conns_open = 0;
  std::array<std::uint64_t, 600> status{};
  std::unordered_map<std::string, std::uint64_t> paths;
  for (const auto& w : workers_) {
    requests += w->requests_total.load(std::memory_order_relaxed);
    started += w->streams_started.load(std::memory_order_relaxed);
    completed += w->streams_completed.load(std::memory_order_relaxed);
    aborted += w->streams_aborted.load(std::memory_order_relaxed);
    faulted += w->streams_faulted.load(std::memory_order_relaxed);
    applied += w->faults_applied.load(std::memory_order_relaxed);
    conns_total += w->connections_total.load(std::memory_order_relaxed);
    conns_open += w->connections_open.load(std::memory_order_relaxed);
    for (std::size_t s = 0; s < status.size(); ++s)
      status[s] += w->by_status[s].load(std::memory_order_relaxed);
    std::lock_guard lock(w->by_path_mu);
    for (const auto& [p, n] : w->by_path) paths[p] += n;
  }
  json by_path = json::object();
  for (auto& [p, n] : paths) by_path[p] = n;
  json by_status = json::object();
  for (std::size_t s = 0; s < status.size(); ++s) {
    if (status[s]) by_status[std::to_string(s)] = status[s];
  }
  json j;
  j["instance"] = instance_;
  j["requests_total"] = requests;
  j["by_path"] = std::move(by_path);
  j["by_status"] = std::move(by_status);
  j["in_flight"] = in_flight.load(std::memory_order_relaxed);
  j["max_in_flight_seen"] = max_in_flight_seen.load(std::memory_order_relaxed);
  j["streams_started"] = started;
  j["streams_completed"] = completed;
  j["streams_aborted"] = aborted;
  j["streams_faulted"] = faulted;
  j["faults_applied"] = applied;
  j["faults_pending"] = faults.pending();
  j["connections_open"] = conns_open;
  j["connections_total"] = conns_total;
  j["objects_stored"] = objects.size();
  return j;
}

void State::reset() {
  for (auto& w : workers_) w->reset();
  max_in_flight_seen.store(in_flight.load(std::memory_order_relaxed), std::memory_order_relaxed);
  faults.clear();
  captures.clear();
  objects.clear();
  if (tpm) tpm->clear();
}

}  // namespace tollgate::mock
