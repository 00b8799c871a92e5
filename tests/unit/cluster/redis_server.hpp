#pragma once
// A real redis-server for the cluster tests: started on a free 127.0.0.1 port in its own
// temporary directory, stopped (SIGKILL) in the destructor. It can be paused (SIGSTOP), resumed,
// killed and restarted on the same port. A missing redis-server is an error (the test fails):
// CI installs it (scripts/install-deps.sh).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace tollgate::cluster::test {

struct RedisServerOptions {
  std::string requirepass;  // non-empty: the default user needs this password
  bool tls = false;         // serve TLS only (a throwaway self-signed certificate for 127.0.0.1)
};

class RedisServer {
 public:
  explicit RedisServer(RedisServerOptions options = {}) : options_(std::move(options)) {
    char tmpl[] = "/tmp/tollgate-redis-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    port_ = free_port();
    if (options_.tls) make_certificate();
    start();
  }
  ~RedisServer() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::uint16_t port() const { return port_; }
  /// The PEM certificate a TLS server presents (also its own CA).
  std::string certificate() const { return dir_ + "/cert.pem"; }
  void pause() { signal(SIGSTOP); }
  void resume() { signal(SIGCONT); }
  /// SIGKILL, and reap it.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  /// A fresh server (empty data) on the same port.
  void restart() {
    stop();
    start();
  }

 private:
  static std::uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      if (fd >= 0) ::close(fd);
      throw std::runtime_error("cannot find a free port");
    }
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  void make_certificate() {
    std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
        " -addext subjectAltName=IP:127.0.0.1 -keyout " +
        dir_ + "/key.pem -out " + certificate() + " >" + dir_ + "/openssl.log 2>&1";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl req failed: " + cmd);
  }

  std::vector<std::string> arguments() const {
    std::vector<std::string> args{"redis-server", "--save",     "",          "--appendonly",
                                  "no",           "--bind",     "127.0.0.1", "--dir",
                                  dir_,           "--loglevel", "warning"};
    if (options_.tls) {
      args.insert(args.end(),
                  {"--port", "0", "--tls-port", std::to_string(port_), "--tls-cert-file",
                   certificate(), "--tls-key-file", dir_ + "/key.pem", "--tls-ca-cert-file",
                   certificate(), "--tls-auth-clients", "no"});
    } else {
      args.insert(args.end(), {"--port", std::to_string(port_)});
    }
    if (!options_.requirepass.empty())
      args.insert(args.end(), {"--requirepass", options_.requirepass});
    return args;
  }

  void start() {
    auto args = arguments();
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string log = dir_ + "/redis.log";
    // Only async-signal-safe calls in the child (the test process may have threads).
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd < 0) ::_exit(126);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::execvp("redis-server", argv.data());
      ::_exit(127);  // not installed: the parent sees the exit and fails the test
    }
    wait_ready();
  }

  // Polls (at most 10 s) until the server answers PING (plain) or accepts connections (TLS).
  void wait_ready() {
    using namespace std::chrono;
    auto until = steady_clock::now() + seconds(10);
    while (steady_clock::now() < until) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("redis-server exited at start (is it installed? exit status " +
                                 std::to_string(WEXITSTATUS(status)) + ", see " + dir_ +
                                 "/redis.log)");
      }
      if (answers()) return;
      std::this_thread::sleep_for(milliseconds(20));
    }
    throw std::runtime_error("redis-server did not answer within 10 s");
  }

  bool answers() const {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (ok && !options_.tls) {
      timeval tv{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ok = ::write(fd, "PING\r\n", 6) == 6;
      char buf[64] = {};
      // +PONG, or -NOAUTH when a password is required: either way it is serving.
      ok = ok && ::read(fd, buf, sizeof buf - 1) > 0 && (buf[0] == '+' || buf[0] == '-');
    }
    ::close(fd);
    return ok;
  }

  void signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  RedisServerOptions options_;
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace tollgate::cluster::test
