// tollgate-mock: a mock Azure OpenAI backend for the demo, the integration tests and the
// benchmarks. CLI and control API: docs/mock.md.

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <exception>

#include "mock/options.hpp"
#include "mock/server.hpp"

int main(int argc, char** argv) {
  using namespace tollgate::mock;
  CliResult cli = parse_cli(argc, argv);
  if (!cli.options) {
    std::fputs(cli.message.c_str(), cli.exit_code == 0 ? stdout : stderr);
    return cli.exit_code;
  }

  // Block the stop signals before any thread starts, so only sigwait() below sees them. Reset
  // their disposition first: a shell starts background jobs with SIGINT ignored, and Linux
  // discards ignored signals even when they are blocked and waited for.
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  MockServer server(std::move(*cli.options));
  try {
    server.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tollgate-mock: %s\n", e.what());
    return 1;
  }
  std::printf(
      "{\"level\":\"info\",\"msg\":\"listening\",\"listener\":\"mock\",\"address\":\"%s\"}\n",
      server.address().c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  server.stop();
  return 0;
}
