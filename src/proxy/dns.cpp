#include "proxy/dns.hpp"

#include <ares.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace tollgate::proxy {

namespace {

using SteadyTime = std::chrono::steady_clock::time_point;
using Addresses = std::vector<net::ip::address>;

// One lookup in flight, shared by the waiting coroutine and c-ares' completion callback (which
// may run after the coroutine stopped waiting).
struct Lookup {
  Lookup(const net::any_io_executor& ex, std::size_t& in_flight) : wake(ex), in_flight(in_flight) {}
  net::steady_timer wake;
  std::size_t& in_flight;  // the resolver's count of queries c-ares holds (it outlives them)
  bool done = false;
  int status = ARES_SUCCESS;
  Addresses addresses;
  int ttl = std::numeric_limits<int>::max();  // the smallest TTL of the answer, in seconds
};

void read_answer(Lookup& l, const ares_addrinfo* res) {
  for (auto* n = res->nodes; n != nullptr; n = n->ai_next) {
    if (n->ai_family == AF_INET) {
      const auto* sa = reinterpret_cast<const sockaddr_in*>(n->ai_addr);
      net::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &sa->sin_addr, b.size());
      l.addresses.emplace_back(net::ip::address_v4(b));
    } else if (n->ai_family == AF_INET6) {
      const auto* sa = reinterpret_cast<const sockaddr_in6*>(n->ai_addr);
      net::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &sa->sin6_addr, b.size());
      l.addresses.emplace_back(net::ip::address_v6(b, sa->sin6_scope_id));
    } else {
      continue;
    }
    l.ttl = std::min(l.ttl, std::max(n->ai_ttl, 0));
  }
}

// c-ares' completion: `arg` is a heap-allocated shared_ptr<Lookup>.
void on_addrinfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
  std::unique_ptr<std::shared_ptr<Lookup>> holder(static_cast<std::shared_ptr<Lookup>*>(arg));
  auto& l = **holder;
  l.status = status;
  if (res != nullptr) {
    if (status == ARES_SUCCESS) read_answer(l, res);
    ares_freeaddrinfo(res);
  }
  if (l.status == ARES_SUCCESS && l.addresses.empty()) l.status = ARES_ENODATA;
  l.done = true;
  --l.in_flight;
  l.wake.cancel();
}

boost::system::error_code to_error(int status) {
  switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
      return net::error::host_not_found;
    case ARES_ETIMEOUT:
      return net::error::timed_out;
    default:
      return net::error::host_not_found_try_again;
  }
}

Endpoints with_port(const Addresses& a, std::uint16_t port) {
  Endpoints out;
  out.reserve(a.size());
  for (const auto& addr : a) out.emplace_back(addr, port);
  return out;
}

void init_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
      throw std::runtime_error("c-ares could not be initialised");
    }
  });
}

}  // namespace

// The c-ares channel driven by the executor: its sockets are watched with posix descriptors
// (not owned: c-ares opens and closes them), its timeouts with one timer.
struct Resolver::Impl : std::enable_shared_from_this<Impl> {
  struct Watch {
    Watch(const net::any_io_executor& ex, int fd) : desc(ex, fd) {}
    ~Watch() { desc.release(); }  // c-ares closes the socket, not us; pending waits abort
    net::posix::stream_descriptor desc;
    bool want_read = false, want_write = false, reading = false, writing = false;
    std::uint64_t generation = 0;
  };
  struct Entry {
    Addresses addresses;
    SteadyTime fresh_until;
  };

  Impl(net::any_io_executor ex, DnsSettings s) : executor(std::move(ex)), settings(std::move(s)), timer(executor) {}
  ~Impl() {
    if (channel != nullptr) ares_destroy(channel);  // completes the lookups (ARES_EDESTRUCTION)
    watches.clear();
  }

  void open() {
    init_library();
    ares_options opts{};
    opts.sock_state_cb = &Impl::on_sock_state;
    opts.sock_state_cb_data = this;
    if (ares_init_options(&channel, &opts, ARES_OPT_SOCK_STATE_CB) != ARES_SUCCESS) {
      throw std::runtime_error("c-ares: cannot create a resolver channel");
    }
    if (!settings.servers.empty()) {
      std::string csv;
      for (const auto& s : settings.servers) csv += (csv.empty() ? "" : ",") + s;
      if (ares_set_servers_ports_csv(channel, csv.c_str()) != ARES_SUCCESS) {
        throw std::runtime_error("c-ares: bad DNS server list: " + csv);
      }
    }
  }

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<Impl*>(data)->sock_state(fd, readable != 0, writable != 0);
  }

  void sock_state(int fd, bool readable, bool writable) {
    if (!readable && !writable) {
      watches.erase(fd);
      return;
    }
    auto& w = watches[fd];
    if (!w) {
      w = std::make_unique<Watch>(executor, fd);
      w->generation = ++generations;
    }
    w->want_read = readable;
    w->want_write = writable;
    arm(fd, *w);
  }

  void arm(int fd, Watch& w) {
    std::weak_ptr<Impl> weak = weak_from_this();
    auto gen = w.generation;
    if (w.want_read && !w.reading) {
      w.reading = true;
      w.desc.async_wait(net::posix::descriptor_base::wait_read,
                        [weak, fd, gen](boost::system::error_code ec) {
                          if (auto self = weak.lock(); self && !ec) self->ready(fd, gen, true);
                        });
    }
    if (w.want_write && !w.writing) {
      w.writing = true;
      w.desc.async_wait(net::posix::descriptor_base::wait_write,
                        [weak, fd, gen](boost::system::error_code ec) {
                          if (auto self = weak.lock(); self && !ec) self->ready(fd, gen, false);
                        });
    }
  }

  void ready(int fd, std::uint64_t gen, bool read) {
    auto it = watches.find(fd);
    if (it == watches.end() || it->second->generation != gen) return;  // a closed socket's wait
    (read ? it->second->reading : it->second->writing) = false;
    ares_process_fd(channel, read ? fd : ARES_SOCKET_BAD, read ? ARES_SOCKET_BAD : fd);
    it = watches.find(fd);  // c-ares may have closed it meanwhile
    if (it != watches.end() && it->second->generation == gen) arm(fd, *it->second);
    schedule_timeout();
  }

  // c-ares' own retransmissions and per-try timeouts.
  void schedule_timeout() {
    if (in_flight == 0) {
      timer.cancel();
      return;
    }
    timeval max{1, 0};
    timeval tv{};
    ares_timeout(channel, &max, &tv);
    timer.expires_after(std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec));
    std::weak_ptr<Impl> weak = weak_from_this();
    timer.async_wait([weak](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      ares_process_fd(self->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      self->schedule_timeout();
    });
  }

  std::chrono::milliseconds clamp_ttl(int ttl_seconds) const {
    return std::clamp<std::chrono::milliseconds>(std::chrono::seconds(ttl_seconds), settings.min_ttl,
                                                 settings.max_ttl);
  }

  net::any_io_executor executor;
  DnsSettings settings;
  net::steady_timer timer;
  ares_channel channel = nullptr;
  std::unordered_map<int, std::unique_ptr<Watch>> watches;
  std::unordered_map<std::string, Entry> cache;
  std::uint64_t generations = 0;
  std::uint64_t lookups = 0;
  std::size_t in_flight = 0;  // queries c-ares holds (a timed-out wait leaves its query running)
};

Resolver::Resolver(net::any_io_executor executor, DnsSettings settings)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(settings))) {
  impl_->open();
}

Resolver::~Resolver() = default;

std::uint64_t Resolver::lookups() const { return impl_->lookups; }

void Resolver::forget(std::string_view host) { impl_->cache.erase(std::string(host)); }

net::awaitable<std::pair<boost::system::error_code, Endpoints>> Resolver::resolve(
    std::string_view host_view, std::uint16_t port, SteadyTime deadline) {
  using Result = std::pair<boost::system::error_code, Endpoints>;
  boost::system::error_code literal_ec;
  auto literal = net::ip::make_address(host_view, literal_ec);
  if (!literal_ec) co_return Result{{}, {tcp::endpoint(literal, port)}};
  std::string host(host_view);
  auto self = impl_;  // alive across the wait, whatever happens to the Resolver meanwhile
  auto now = std::chrono::steady_clock::now();
  auto cached = self->cache.find(host);
  if (cached != self->cache.end() && now < cached->second.fresh_until) {
    co_return Result{{}, with_port(cached->second.addresses, port)};
  }
  auto lookup = std::make_shared<Lookup>(self->executor, self->in_flight);
  ++self->lookups;
  ++self->in_flight;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  ares_getaddrinfo(self->channel, host.c_str(), nullptr, &hints, &on_addrinfo,
                   new std::shared_ptr<Lookup>(lookup));
  self->schedule_timeout();
  if (!lookup->done) {
    lookup->wake.expires_at(deadline);
    co_await lookup->wake.async_wait(use_tuple);
  }
  now = std::chrono::steady_clock::now();
  cached = self->cache.find(host);  // the wait may have changed the cache
  if (lookup->done && lookup->status == ARES_SUCCESS) {
    auto& e = self->cache[host];
    e.addresses = std::move(lookup->addresses);
    e.fresh_until = now + self->clamp_ttl(lookup->ttl);
    co_return Result{{}, with_port(e.addresses, port)};
  }
  if (cached != self->cache.end()) {  // serve the last good answer a little longer
    cached->second.fresh_until = now + self->settings.min_ttl;
    co_return Result{{}, with_port(cached->second.addresses, port)};
  }
  co_return Result{lookup->done ? to_error(lookup->status) : net::error::timed_out, {}};
}

}  // namespace tollgate::proxy
