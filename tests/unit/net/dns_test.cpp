// proxy::Resolver against a small DNS server of this test's on 127.0.0.1 (UDP): answers kept
// for their TTL clamped to [min_ttl, max_ttl], a lookup bounded by its deadline when the server
// is silent, the last good answer served while the server fails, forget().

#include "proxy/dns.hpp"

#include <gtest/gtest.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tollgate::proxy {
namespace {

using namespace std::chrono_literals;
using udp = net::ip::udp;
using Clock = std::chrono::steady_clock;

// Answers A queries with 127.0.0.7 and `ttl`, AAAA queries with no data; or nothing (`silent`).
class FakeDns {
 public:
  explicit FakeDns(net::io_context& io) : socket_(io, udp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    net::co_spawn(io, serve(), [](std::exception_ptr) {});
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(socket_.local_endpoint().port()); }
  std::uint32_t ttl = 60;
  bool silent = false;
  int a_queries = 0;

 private:
  net::awaitable<void> serve() {
    std::array<unsigned char, 512> buf{};
    for (;;) {
      udp::endpoint from;
      auto [ec, n] = co_await socket_.async_receive_from(net::buffer(buf), from, use_tuple);
      if (ec) co_return;
      if (n < 17 || silent) continue;
      auto reply = answer(buf.data(), n);
      if (!reply.empty()) co_await socket_.async_send_to(net::buffer(reply), from, use_tuple);
    }
  }

  // The question ends after its name (labels up to a zero byte) and QTYPE, QCLASS.
  std::string answer(const unsigned char* q, std::size_t n) {
    std::size_t i = 12;
    while (i < n && q[i] != 0) i += q[i] + 1;
    if (i + 5 > n) return {};
    std::size_t question_end = i + 5;
    bool a = q[i + 1] == 0 && q[i + 2] == 1;
    if (a) ++a_queries;
    std::string r(reinterpret_cast<const char*>(q), question_end);
    r[2] = static_cast<char>(0x81);  // QR, RD
    r[3] = static_cast<char>(0x80);  // RA, NOERROR
    r[6] = 0;
    r[7] = a ? 1 : 0;                // ANCOUNT
    r[8] = r[9] = r[10] = r[11] = 0;  // no authority, no additional records
    if (a) {
      const unsigned char rr[] = {0xC0, 0x0C, 0, 1, 0, 1,
                                  static_cast<unsigned char>(ttl >> 24), static_cast<unsigned char>(ttl >> 16),
                                  static_cast<unsigned char>(ttl >> 8), static_cast<unsigned char>(ttl),
                                  0, 4, 127, 0, 0, 7};
      r.append(reinterpret_cast<const char*>(rr), sizeof rr);
    }
    return r;
  }

  udp::socket socket_;
};

struct Resolved {
  boost::system::error_code ec;
  Endpoints endpoints;
  std::chrono::milliseconds took{};
};

class DnsTest : public ::testing::Test {
 protected:
  void make(DnsSettings s) {
    s.servers = {dns.address()};
    resolver = std::make_unique<Resolver>(io.get_executor(), s);
  }
  Resolved resolve(std::string host = "backend.tollgate.test", std::chrono::milliseconds timeout = 2s) {
    Resolved out;
    bool done = false;
    auto t0 = Clock::now();
    net::co_spawn(io, [&]() -> net::awaitable<void> {
      auto [ec, eps] = co_await resolver->resolve(host, 443, Clock::now() + timeout);
      out.ec = ec;
      out.endpoints = std::move(eps);
      done = true;
    }, [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    io.restart();
    while (!done && Clock::now() - t0 < 10s) io.run_one_for(100ms);
    out.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    EXPECT_TRUE(done) << "resolve() did not finish";
    return out;
  }
  void wait(std::chrono::milliseconds d) {
    net::steady_timer t(io, d);
    bool done = false;
    t.async_wait([&](boost::system::error_code) { done = true; });
    io.restart();
    while (!done) io.run_one_for(100ms);
  }

  net::io_context io;
  FakeDns dns{io};
  std::unique_ptr<Resolver> resolver;
};

TEST_F(DnsTest, ResolvesANameWithThePort) {
  make({});
  auto r = resolve();
  ASSERT_FALSE(r.ec) << r.ec.message();
  ASSERT_EQ(r.endpoints.size(), 1u);
  EXPECT_EQ(r.endpoints[0].address().to_string(), "127.0.0.7");
  EXPECT_EQ(r.endpoints[0].port(), 443);
}

TEST_F(DnsTest, IpLiteralsNeedNoLookup) {
  make({});
  auto r = resolve("::1");
  ASSERT_FALSE(r.ec);
  EXPECT_EQ(r.endpoints[0].address().to_string(), "::1");
  EXPECT_EQ(resolver->lookups(), 0u);
}

TEST_F(DnsTest, AnAnswerIsKeptForItsTtl) {
  dns.ttl = 60;
  make({});
  resolve();
  resolve();
  resolve();
  EXPECT_EQ(resolver->lookups(), 1u);
  EXPECT_EQ(dns.a_queries, 1);
}

TEST_F(DnsTest, MinTtlKeepsAZeroTtlAnswer) {
  dns.ttl = 0;
  make({.min_ttl = 300ms, .max_ttl = 10s});
  resolve();
  resolve();
  EXPECT_EQ(resolver->lookups(), 1u) << "kept for min_ttl";
  wait(400ms);
  resolve();
  EXPECT_EQ(resolver->lookups(), 2u) << "looked up again after min_ttl";
}

TEST_F(DnsTest, MaxTtlBoundsALongTtl) {
  dns.ttl = 86400;
  make({.min_ttl = 10ms, .max_ttl = 300ms});
  resolve();
  wait(400ms);
  resolve();
  EXPECT_EQ(resolver->lookups(), 2u);
}

TEST_F(DnsTest, ASilentServerTimesOutAtTheDeadline) {
  dns.silent = true;
  make({});
  auto r = resolve("backend.tollgate.test", 300ms);
  EXPECT_EQ(r.ec, net::error::timed_out) << r.ec.message();
  EXPECT_GE(r.took, 250ms);
  EXPECT_LT(r.took, 2s) << "bounded by the deadline, not by the resolver's retries";
}

TEST_F(DnsTest, TheLastGoodAnswerIsServedWhileTheServerFails) {
  dns.ttl = 0;
  make({.min_ttl = 100ms, .max_ttl = 10s});
  ASSERT_FALSE(resolve().ec);
  dns.silent = true;
  wait(150ms);
  auto r = resolve("backend.tollgate.test", 300ms);
  ASSERT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.endpoints[0].address().to_string(), "127.0.0.7");
  EXPECT_EQ(resolver->lookups(), 2u) << "a refresh was tried";
}

TEST_F(DnsTest, ForgetDropsTheAnswer) {
  make({});
  resolve();
  resolver->forget("backend.tollgate.test");
  resolve();
  EXPECT_EQ(resolver->lookups(), 2u);
}

}  // namespace
}  // namespace tollgate::proxy
