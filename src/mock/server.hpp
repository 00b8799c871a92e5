#pragma once
// tollgate::mock::MockServer — the mock Azure OpenAI backend as an object, so tests can run it
// in-process and main.cpp stays thin. The Beast/Asio code lives in server.cpp only.
//
// Threading (docs/mock.md): one io_context per worker thread (concurrency hint 1), each with its
// own SO_REUSEPORT acceptor on the same port. Shared state is the State object (atomics, plus
// mutexes for the control-plane structures).

#include <cstdint>
#include <memory>
#include <string>

#include "mock/options.hpp"
#include "mock/state.hpp"

namespace tollgate::mock {

class MockServer {
 public:
  explicit MockServer(Options options);
  ~MockServer();  // stop()s
  MockServer(const MockServer&) = delete;
  MockServer& operator=(const MockServer&) = delete;

  /// Binds every acceptor (port 0 once, the others on the port it got), loads the TLS files and
  /// starts the worker threads. Throws std::runtime_error naming the cause (startup only).
  void start();

  /// The bound port (valid after start()).
  std::uint16_t port() const;
  /// The bound address as HOST:PORT ("[::1]:PORT" for IPv6), e.g. for the listening line.
  std::string address() const;

  /// Stops accepting, closes every connection (hanging ones included) and joins the workers.
  /// Idempotent. Thread: any thread but a worker.
  void stop();

  /// The instance's counters, faults and captures (tests may inspect them directly).
  State& state();
  const Options& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::mock
