#pragma once
// Stored objects in the API surface: which paths address them, which calls create them, and the
// ids a request names or an answer carries. Plain parsing, no state; the affinity table
// (tollgate/routing/affinity.hpp) remembers where each object lives. Thread: any.

#include <string>
#include <string_view>
#include <vector>

#include "tollgate/core/json_scan.hpp"

namespace tollgate::core {

/// True for paths of the stateful APIs (op_path relative to /openai/, /openai/v1/ or /v1/):
/// responses (but not its create, decided by `store`), files, threads, assistants,
/// vector_stores, batches, fine_tuning, uploads.
bool is_stateful_path(std::string_view op_path);

/// True for the words of the stateful APIs' paths (collections such as `files`, `vector_stores`
/// and the words between ids such as `runs`, `cancel`), given in lower case: the canonical path
/// spells them in lower case, whatever the client sent.
bool is_path_word(std::string_view lower_segment);

/// True when a successful answer to this request creates an object whose id must be remembered.
/// `fields`: the scan of `body` (null when the body is not JSON).
bool creates_object(std::string_view method, std::string_view op_path, std::string_view body,
                    const BodyFields* fields);

/// The object ids a request names: the top-level object of the path (`files/{id}`, the thread of
/// `threads/{id}/runs/{id}`) and body fields (previous_response_id, thread_id, assistant_id,
/// file_id, input_file_id, vector_store_id(s), file_ids ...) of the top-level object.
std::vector<std::string> referenced_ids(std::string_view op_path, std::string_view body,
                                        const BodyFields* fields);

/// The ids a successful answer carries: the object's own (top-level "id", or "response.id" of a
/// Responses stream event) and the objects the backend made on its behalf (a batch's
/// output_file_id and error_file_id, once it has run).
struct AnswerIds {
  std::string id;                    // empty when absent
  std::vector<std::string> derived;  // made by the backend for the object: owned by its owner
  bool empty() const { return id.empty() && derived.empty(); }
};
AnswerIds answer_ids(std::string_view json);

/// True when answers to this call may name objects the backend made on the named object's
/// behalf (reading or cancelling a batch): the gateway remembers them for the object's owner.
bool reveals_objects(std::string_view op_path);

}  // namespace tollgate::core
