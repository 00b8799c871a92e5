#pragma once
// A small HTTP/1.1 test client (Beast lives in mock_client.cpp only). Every operation is bounded
// by a timeout; a timeout or transport error is reported in Response::error, never thrown.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tollgate::mock::test {

struct Request {
  std::string method = "POST";
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct Response {
  int status = 0;                              // 0 when no head arrived
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  std::vector<std::string> chunks;             // chunked bodies: each chunk as received
  bool complete = false;                       // the whole message arrived
  std::string error;                           // transport error / timeout ("" when none)
  std::chrono::milliseconds elapsed{0};

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

/// One keep-alive connection to 127.0.0.1:port.
class Client {
 public:
  explicit Client(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Sends `req` and reads the whole response (connects first if needed).
  Response send(const Request& req);
  /// Sends `req`, reads the head and `chunks` body chunks, then closes the socket abruptly.
  Response send_and_drop(const Request& req, std::size_t chunks);
  /// Sends `req` and waits at most `wait` for anything; returns what arrived (status 0 = none).
  /// The connection stays open (call close()).
  Response send_and_wait(const Request& req, std::chrono::milliseconds wait);
  void close();
  /// True while the server has not closed the connection (checked without blocking).
  bool server_closed();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// One-shot request on a fresh connection.
Response request(std::uint16_t port, const Request& req,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// Splits an SSE body into events ("data: …" without the trailing blank line).
std::vector<std::string> sse_events(std::string_view body);

/// Decodes standard base64.
std::string base64_decode(std::string_view s);

}  // namespace tollgate::mock::test
