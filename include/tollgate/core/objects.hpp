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

/// The object ids a request names: id segments of the path (`files/{id}`,
/// `threads/{id}/runs/{id}`) and body fields (previous_response_id, thread_id, assistant_id,
/// file_id, input_file_id, vector_store_id(s), file_ids ...) of the top-level object.
std::vector<std::string> referenced_ids(std::string_view op_path, std::string_view body,
                                        const BodyFields* fields);

/// The id of the created object in a JSON response body (top-level "id", or "response.id" of a
/// Responses stream event). Empty when absent.
std::string created_id(std::string_view json);

}  // namespace tollgate::core
