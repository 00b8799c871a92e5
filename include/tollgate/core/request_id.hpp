#pragma once
// Request ids: the x-request-id a client sends, or a fresh one.

#include <string>
#include <string_view>

namespace tollgate::core {

/// A fresh request id (UUID v4 text). Thread: any (thread-local generator).
std::string new_request_id();
/// Accepts a client-supplied id when it is short and printable; otherwise false.
bool acceptable_request_id(std::string_view id);

}  // namespace tollgate::core
