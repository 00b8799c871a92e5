// libFuzzer target for the gateway's parsers of untrusted input: request classification (target
// and JSON body), the SSE scanner / stream observer and the JSON usage scanner (backend bytes fed
// in arbitrary splits, which must not change the result), and the config loader.
// The first byte picks the parser; the rest is its input.

#include <cstdint>
#include <string>
#include <string_view>

#include "tollgate/config/config.hpp"
#include "tollgate/core/api_call.hpp"
#include "tollgate/core/usage.hpp"

using namespace tollgate;

namespace {

// Splits `s` at byte offsets derived from `seed` and feeds the pieces.
template <typename Feed>
void feed_split(std::string_view s, std::uint8_t seed, Feed&& feed) {
  std::size_t pos = 0;
  std::size_t step = 1 + seed % 61;
  while (pos < s.size()) {
    auto n = std::min(step, s.size() - pos);
    feed(s.substr(pos, n));
    pos += n;
    step = 1 + (step * 7 + seed) % 61;
  }
}

bool same(const core::Usage& a, const core::Usage& b) {
  return a.present == b.present && a.prompt == b.prompt && a.completion == b.completion &&
         a.total == b.total && a.cached == b.cached && a.reasoning == b.reasoning;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::uint8_t which = data[0] % 4;
  std::uint8_t seed = data[1];
  std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  switch (which) {
    case 0: {  // "METHOD TARGET\nCONTENT-TYPE\nBODY"
      auto l1 = in.find('\n');
      auto line = in.substr(0, l1);
      auto rest = l1 == std::string_view::npos ? std::string_view{} : in.substr(l1 + 1);
      auto l2 = rest.find('\n');
      auto ct = rest.substr(0, l2);
      auto body = l2 == std::string_view::npos ? std::string_view{} : rest.substr(l2 + 1);
      auto sp = line.find(' ');
      auto method = line.substr(0, sp);
      auto target = sp == std::string_view::npos ? std::string_view("/") : line.substr(sp + 1);
      auto c = core::classify(method, target, ct, body);
      if (c.error) {
        (void)c.error->body();
      } else {
        config::BackendConfig b;
        b.deployment = "dep";
        (void)core::upstream_target(c.call, b);
        (void)core::rewrite_body(c.call, b);
      }
      break;
    }
    case 1: {  // SSE: whole vs split must agree
      core::StreamObserver whole, split;
      whole.feed(in);
      feed_split(in, seed, [&](std::string_view p) { split.feed(p); });
      if (!same(whole.usage(), split.usage()) || whole.done() != split.done() ||
          whole.events() != split.events()) {
        __builtin_trap();
      }
      break;
    }
    case 2: {  // JSON usage: whole vs split must agree
      core::JsonUsageScanner whole, split;
      whole.feed(in);
      feed_split(in, seed, [&](std::string_view p) { split.feed(p); });
      if (!same(whole.usage(), split.usage())) __builtin_trap();
      break;
    }
    case 3: {
      auto r = config::load_string(std::string(in), "fuzz.yaml",
                                   [](const std::string&) { return std::optional<std::string>("k"); });
      if (r.ok() == !r.errors.empty()) __builtin_trap();
      break;
    }
  }
  return 0;
}
