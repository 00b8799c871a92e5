// The connection state the workers share: per-address counts and accept failures.
#include "server/connections.hpp"

#include <gtest/gtest.h>

namespace tollgate::server {
namespace {

using boost::asio::ip::make_address;

TEST(AddressCountsTest, CapsConnectionsPerAddressAndFreesThemOnClose) {
  AddressCounts counts;
  auto a = make_address("10.0.0.1");
  auto first = counts.try_take(a, 2);
  auto second = counts.try_take(a, 2);
  ASSERT_TRUE(first && second);
  EXPECT_FALSE(counts.try_take(a, 2));
  EXPECT_TRUE(counts.try_take(make_address("10.0.0.2"), 2));  // another address: its own count
  EXPECT_EQ(counts.open(a), 2u);
  first.reset();
  EXPECT_EQ(counts.open(a), 1u);
  EXPECT_TRUE(counts.try_take(a, 2));  // taken and given back at once (a temporary)
  second.reset();
  EXPECT_EQ(counts.open(a), 0u);
}

TEST(AddressCountsTest, Ipv4AndItsMappedIpv6AreOneAddress) {
  AddressCounts counts;
  auto v4 = counts.try_take(make_address("192.0.2.7"), 1);
  ASSERT_TRUE(v4);
  EXPECT_FALSE(counts.try_take(make_address("::ffff:192.0.2.7"), 1));
}

TEST(AddressCountsTest, NoCapCountsNothing) {
  AddressCounts counts;
  auto a = make_address("10.0.0.1");
  auto slot = counts.try_take(a, 0);
  ASSERT_TRUE(slot);
  EXPECT_EQ(counts.open(a), 0u);
}

TEST(AddressCountsTest, AMovedSlotGivesBackOnce) {
  AddressCounts counts;
  auto a = make_address("10.0.0.1");
  auto slot = counts.try_take(a, 3);
  auto other = counts.try_take(a, 3);
  ASSERT_TRUE(slot && other);
  {
    AddressCounts::Slot moved = std::move(*slot);
    EXPECT_EQ(counts.open(a), 2u);
  }
  EXPECT_EQ(counts.open(a), 1u);
  slot.reset();  // moved from: holds nothing
  EXPECT_EQ(counts.open(a), 1u);
}

TEST(AcceptHealthTest, FailingUntilEveryWorkerAcceptsAgain) {
  AcceptHealth health(2);
  EXPECT_FALSE(health.failing());
  health.failed(0, 1'000);
  health.failed(1, 1'010);
  EXPECT_TRUE(health.failing());
  health.succeeded(0);
  EXPECT_TRUE(health.failing());
  health.succeeded(1);
  EXPECT_FALSE(health.failing());
}

TEST(AcceptHealthTest, LogsAtMostOnceAMinuteAcrossWorkers) {
  AcceptHealth health(2);
  const core::TimeMs t0 = 5'000'000;
  EXPECT_TRUE(health.failed(0, t0));
  EXPECT_FALSE(health.failed(1, t0 + 50));
  EXPECT_FALSE(health.failed(0, t0 + AcceptHealth::kLogInterval.count() - 1));
  health.succeeded(0);
  health.succeeded(1);
  EXPECT_FALSE(health.failed(0, t0 + 30'000));  // a new episode within the minute: still quiet
  EXPECT_TRUE(health.failed(1, t0 + AcceptHealth::kLogInterval.count()));
  EXPECT_FALSE(health.failed(0, t0 + AcceptHealth::kLogInterval.count() + 1));
}

}  // namespace
}  // namespace tollgate::server
