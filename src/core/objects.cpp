#include "tollgate/core/objects.hpp"

#include <algorithm>
#include <array>
#include <functional>

namespace tollgate::core {

namespace {

constexpr std::array<std::string_view, 8> kCollections = {
    "responses", "files", "threads", "assistants", "vector_stores", "batches", "fine_tuning", "uploads"};

// Path words that sit where an id could and are not ids.
constexpr std::array<std::string_view, 14> kWords = {
    "runs",   "jobs",   "messages", "steps",   "files", "file_batches", "content",
    "cancel", "parts",  "complete", "input_items", "submit_tool_outputs", "checkpoints", "events"};

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto seg = path.substr(0, slash);
    if (!seg.empty()) out.push_back(seg);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool is_word(std::string_view s) {
  return std::find(kWords.begin(), kWords.end(), s) != kWords.end();
}

}  // namespace

bool is_stateful_path(std::string_view op_path) {
  auto segs = split(op_path);
  return !segs.empty() && std::find(kCollections.begin(), kCollections.end(), segs[0]) != kCollections.end();
}

bool is_path_word(std::string_view lower_segment) {
  return is_word(lower_segment) ||
         std::find(kCollections.begin(), kCollections.end(), lower_segment) != kCollections.end();
}

bool creates_object(std::string_view method, std::string_view op_path,
                    const nlohmann::ordered_json* body) {
  if (method != "POST" || !is_stateful_path(op_path)) return false;
  auto segs = split(op_path);
  if (segs[0] == "responses" && segs.size() == 1 && body != nullptr && body->is_object()) {
    auto store = body->find("store");
    if (store != body->end() && store->is_boolean() && !store->get<bool>()) return false;
  }
  return true;
}

std::vector<std::string> referenced_ids(std::string_view op_path, const nlohmann::ordered_json* body) {
  std::vector<std::string> out;
  auto segs = split(op_path);
  if (!segs.empty() && std::find(kCollections.begin(), kCollections.end(), segs[0]) != kCollections.end()) {
    // Collections and ids alternate: responses/{id}/input_items, threads/{t}/runs/{r}/steps/{s};
    // fine_tuning/jobs/{id} has a two-word collection.
    std::size_t first = segs[0] == "fine_tuning" ? 2 : 1;
    for (std::size_t i = first; i < segs.size(); i += 2) {
      if (!is_word(segs[i])) out.emplace_back(segs[i]);
    }
  }
  if (body == nullptr || !body->is_object()) return out;
  static constexpr std::array<std::string_view, 9> kFields = {
      "previous_response_id", "thread_id",       "assistant_id",       "file_id",        "input_file_id",
      "vector_store_id",      "training_file",   "validation_file",    "conversation"};
  static constexpr std::array<std::string_view, 2> kLists = {"file_ids", "vector_store_ids"};
  for (auto f : kFields) {
    auto it = body->find(std::string(f));
    if (it != body->end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
      out.push_back(it->get<std::string>());
    }
  }
  for (auto f : kLists) {
    auto it = body->find(std::string(f));
    if (it == body->end() || !it->is_array()) continue;
    for (const auto& v : *it) {
      if (v.is_string()) out.push_back(v.get<std::string>());
    }
  }
  return out;
}

std::string created_id(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return {};
  auto it = j.find("id");
  if (it != j.end() && it->is_string()) return it->get<std::string>();
  auto r = j.find("response");  // Responses streaming: {"type":"response.created","response":{...}}
  if (r != j.end() && r->is_object()) {
    auto id = r->find("id");
    if (id != r->end() && id->is_string()) return id->get<std::string>();
  }
  return {};
}

}  // namespace tollgate::core
