#include "tollgate/core/objects.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <nlohmann/json.hpp>

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

bool creates_object(std::string_view method, std::string_view op_path, std::string_view body,
                    const BodyFields* fields) {
  if (method != "POST" || !is_stateful_path(op_path)) return false;
  auto segs = split(op_path);
  if (segs[0] == "responses" && segs.size() == 1 && fields != nullptr) {
    auto store = as_bool(body, (*fields)[BodyField::kStore]);
    if (store && !*store) return false;
  }
  return true;
}

std::vector<std::string> referenced_ids(std::string_view op_path, std::string_view body,
                                        const BodyFields* fields) {
  std::vector<std::string> out;
  auto segs = split(op_path);
  if (!segs.empty() && std::find(kCollections.begin(), kCollections.end(), segs[0]) != kCollections.end()) {
    // The top-level object: responses/{id}/input_items, threads/{t}/runs/{r}; fine_tuning/jobs/{id}
    // has a two-word collection. Ids under it (runs, messages, steps) are its children: the
    // backend made some of them (a run's messages), and they are reached through their parent.
    std::size_t first = segs[0] == "fine_tuning" ? 2 : 1;
    if (first < segs.size() && !is_word(segs[first])) out.emplace_back(segs[first]);
  }
  if (fields == nullptr) return out;
  static constexpr std::array<BodyField, 9> kIds = {
      BodyField::kPreviousResponseId, BodyField::kThreadId,     BodyField::kAssistantId,
      BodyField::kFileId,             BodyField::kInputFileId,  BodyField::kVectorStoreId,
      BodyField::kTrainingFile,       BodyField::kValidationFile, BodyField::kConversation};
  for (auto f : kIds) {
    auto id = as_string(body, (*fields)[f]);
    if (id && !id->empty()) out.push_back(std::move(*id));
  }
  for (auto f : {BodyField::kFileIds, BodyField::kVectorStoreIds}) {
    for (auto& id : string_elements(body, (*fields)[f])) out.push_back(std::move(id));
  }
  return out;
}

AnswerIds answer_ids(std::string_view json) {
  AnswerIds out;
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return out;
  auto string_member = [](const nlohmann::json& o, const char* name) -> std::string {
    auto it = o.find(name);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  out.id = string_member(j, "id");
  auto r = j.find("response");  // Responses streaming: {"type":"response.created","response":{...}}
  if (out.id.empty() && r != j.end() && r->is_object()) out.id = string_member(*r, "id");
  for (const char* name : {"output_file_id", "error_file_id"}) {
    auto id = string_member(j, name);
    if (!id.empty()) out.derived.push_back(std::move(id));
  }
  return out;
}

bool reveals_objects(std::string_view op_path) {
  auto segs = split(op_path);
  return segs.size() >= 2 && segs[0] == "batches";
}

}  // namespace tollgate::core
