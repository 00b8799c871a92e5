#pragma once
// A lazily re-armed I/O deadline for one connection (nginx's timer discipline): moving the
// deadline later touches no timer — the timer wakes at the old time, sees the new deadline and
// re-arms — so the common request path costs no timer syscalls and no cancelled-handler
// dispatches. When the deadline passes, the socket's pending operations are cancelled (they
// complete with operation_aborted) and expired() turns true. Thread: the owning worker.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <concepts>
#include <memory>

namespace tollgate::proxy {

/// What the relay needs of an I/O deadline: Deadline on a socket; a test supplies a fake.
///   after(d):  the pending and following operations must finish within `d` from now;
///   never():   no deadline;
///   expired(): the deadline passed and the pending operations were cancelled (they completed
///              with operation_aborted).
template <class D>
concept IoDeadline = requires(D& d, const D& cd, std::chrono::steady_clock::duration t) {
  d.after(t);
  d.never();
  { cd.expired() } -> std::convertible_to<bool>;
};

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Deadline(boost::asio::ip::tcp::socket& socket)
      : state_(std::make_shared<State>(socket)) {}
  ~Deadline() {
    state_->socket = nullptr;
    ++state_->generation;
    state_->timer.cancel();
  }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  /// The pending and following operations must finish within `d` from now.
  void after(Clock::duration d) {
    auto& s = *state_;
    s.deadline = Clock::now() + d;
    if (!s.waiting || s.deadline < s.timer.expiry()) arm(state_);
  }
  /// No deadline (the timer, if waiting, wakes once more and goes idle).
  void never() { state_->deadline = Clock::time_point::max(); }
  /// The deadline passed and the socket's operations were cancelled.
  bool expired() const { return state_->expired; }

 private:
  struct State {
    explicit State(boost::asio::ip::tcp::socket& s) : timer(s.get_executor()), socket(&s) {}
    boost::asio::steady_timer timer;
    boost::asio::ip::tcp::socket* socket;  // null once the Deadline is gone
    Clock::time_point deadline = Clock::time_point::max();
    std::uint64_t generation = 0;
    bool waiting = false;
    bool expired = false;
  };

  static void arm(const std::shared_ptr<State>& state) {
    auto& s = *state;
    s.waiting = true;
    auto gen = ++s.generation;
    s.timer.expires_at(s.deadline);
    s.timer.async_wait([state, gen](boost::system::error_code) {
      auto& st = *state;
      if (gen != st.generation || st.socket == nullptr) return;  // re-armed or gone
      st.waiting = false;
      if (st.deadline == Clock::time_point::max()) return;
      if (Clock::now() >= st.deadline) {
        st.expired = true;
        boost::system::error_code ignored;
        st.socket->cancel(ignored);
      } else {
        arm(state);  // the deadline moved later while we slept
      }
    });
  }

  std::shared_ptr<State> state_;
};
static_assert(IoDeadline<Deadline>);

}  // namespace tollgate::proxy
