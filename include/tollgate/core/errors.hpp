#pragma once
// Gateway-generated errors, always rendered in the OpenAI/Azure shape
// {"error":{"code","message","type","param"}}.

#include <string>
#include <string_view>

namespace tollgate::core {

struct HttpError {
  int status = 500;
  std::string code;     // e.g. "DeploymentNotFound", "invalid_request", "upstream_timeout"
  std::string message;  // safe for clients: never secrets, never other clients' data
  std::string type;     // OpenAI error type; derived from status when empty
  std::string param;    // optional offending parameter

  /// The JSON body. Thread: any.
  std::string body() const;
};

HttpError bad_request(std::string message, std::string param = {});
HttpError not_found(std::string code, std::string message);

/// Appends `s` JSON-escaped (without quotes) to `out`. Invalid UTF-8 bytes become U+FFFD.
void json_escape(std::string& out, std::string_view s);
/// `s` as a JSON string literal.
std::string json_quote(std::string_view s);

}  // namespace tollgate::core
