#include "server/connections.hpp"

#include <functional>

namespace tollgate::server {

AddressCounts::Slot& AddressCounts::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = std::exchange(o.owner_, nullptr);
    key_ = std::move(o.key_);
  }
  return *this;
}

void AddressCounts::Slot::release() noexcept {
  if (owner_ != nullptr) owner_->give_back(key_);
  owner_ = nullptr;
}

// IPv4 and IPv4-mapped IPv6 addresses are the same source.
std::string AddressCounts::key_of(const boost::asio::ip::address& addr) {
  auto v6 = addr.is_v4()
                ? boost::asio::ip::make_address_v6(boost::asio::ip::v4_mapped, addr.to_v4())
                : addr.to_v6();
  auto bytes = v6.to_bytes();
  return std::string(bytes.begin(), bytes.end());
}

AddressCounts::Shard& AddressCounts::shard_of(const std::string& key) const {
  return shards_[std::hash<std::string>{}(key) % shards_.size()];
}

std::optional<AddressCounts::Slot> AddressCounts::try_take(const boost::asio::ip::address& addr,
                                                           std::uint32_t cap) {
  if (cap == 0) return Slot();
  auto key = key_of(addr);
  auto& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  auto& count = shard.counts[key];
  if (count >= cap) return std::nullopt;  // count > 0 here: no zero entry is left behind
  ++count;
  return Slot(this, std::move(key));
}

std::uint32_t AddressCounts::open(const boost::asio::ip::address& addr) const {
  auto key = key_of(addr);
  auto& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  auto it = shard.counts.find(key);
  return it == shard.counts.end() ? 0 : it->second;
}

void AddressCounts::give_back(const std::string& key) noexcept {
  auto& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  auto it = shard.counts.find(key);
  if (it == shard.counts.end()) return;
  if (--it->second == 0) shard.counts.erase(it);
}

bool AcceptHealth::failed(std::size_t worker, core::TimeMs now) noexcept {
  failing_[worker].store(true, std::memory_order_relaxed);
  auto last = last_logged_.load(std::memory_order_relaxed);
  if (last != kNever && now - last < kLogInterval.count()) return false;
  return last_logged_.compare_exchange_strong(last, now, std::memory_order_relaxed);
}

bool AcceptHealth::failing() const noexcept {
  for (std::size_t i = 0; i < workers_; ++i) {
    if (failing_[i].load(std::memory_order_relaxed)) return true;
  }
  return false;
}

}  // namespace tollgate::server
