// libFuzzer target for the gateway's parsers of untrusted input: request classification (target
// and JSON body), the SSE scanner / stream observer and the JSON usage scanner (backend bytes fed
// in arbitrary splits, which must not change the result), the config loader, JWT decoding and
// verification (with a JWKS also taken from the input), the backends' capacity headers, and the
// path canonicalizer (idempotent, no dot segment, `//`, encoded slash or `;` in its result, and
// the original and the canonical target classified alike).
// The first byte picks the parser; the rest is its input.

#include <cstdint>
#include <string>
#include <string_view>

#include "tollgate/auth/authenticator.hpp"
#include "tollgate/auth/jwt.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/core/objects.hpp"
#include "tollgate/routing/affinity.hpp"
#include "tollgate/routing/signals.hpp"
#include "tollgate/core/api_call.hpp"
#include "tollgate/core/path.hpp"
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

// Whether a canonical path still holds something canonicalization removes.
bool has_uncanonical_part(std::string_view p) {
  for (std::string_view bad : {"/../", "/./", "//", "%2F", "%2f", "%5C", "%5c", ";", "%2E", "%2e",
                               "%41", "%61", "%7E", "%7e", "\\"}) {
    if (p.find(bad) != std::string_view::npos) return true;
  }
  return p.empty() || p.front() != '/' || p.ends_with("/.") || p.ends_with("/..");
}

// "TARGET": the canonical form is a fixed point, and what the gateway accepts under the original
// spelling it classifies the same under the canonical one (the spelling the backend receives).
void check_canonical(std::string_view target, std::uint8_t seed) {
  auto q = target.find('?');
  auto path = target.substr(0, q);
  auto once = core::canonicalize_path(path);
  if (!once.ok()) return;
  auto twice = core::canonicalize_path(once.path);
  if (!twice.ok() || twice.path != once.path || has_uncanonical_part(once.path)) __builtin_trap();
  bool get = (seed & 1) != 0;
  std::string_view method = get ? "GET" : "POST";
  std::string_view body = get ? "" : R"({"model":"m","messages":[{"role":"user","content":"x"}]})";
  auto original = core::classify(method, target, "application/json", body);
  if (original.error) return;
  std::string canonical = once.path;
  if (q != std::string_view::npos) canonical += target.substr(q);
  auto again = core::classify(method, canonical, "application/json", body);
  const auto& a = original.call;
  if (again.error || a.op != again.call.op || a.surface != again.call.surface ||
      a.deployment != again.call.deployment || a.op_path != again.call.op_path) {
    __builtin_trap();
  }
}

bool same(const core::Usage& a, const core::Usage& b) {
  return a.present == b.present && a.prompt == b.prompt && a.completion == b.completion &&
         a.total == b.total && a.cached == b.cached && a.reasoning == b.reasoning;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::uint8_t which = data[0] % 7;
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
      // The usage object read by the scan equals the DOM reading.
      core::Usage scanned, dom;
      if (core::parse_usage(in, scanned) != core::parse_usage_dom(in, dom) || !same(scanned, dom)) {
        __builtin_trap();
      }
      break;
    }
    case 3: {
      auto r = config::load_string(std::string(in), "fuzz.yaml",
                                   [](const std::string&) { return std::optional<std::string>("k"); });
      if (r.ok() == !r.errors.empty()) __builtin_trap();
      break;
    }
    case 4: {  // "JWKS\nTOKEN": a token (and key set) from the attacker must never crash
      auto nl = in.find('\n');
      std::string error;
      auto jwks = auth::Jwks::parse(in.substr(0, nl), error);
      auto token = nl == std::string_view::npos ? in : in.substr(nl + 1);
      (void)auth::looks_like_jwt(token);
      if (auto parts = auth::decode_jwt(token); parts && jwks) {
        std::vector<std::string> aud{"api://tollgate"};
        auto r = auth::verify_jwt(*parts, *jwks, {"https://issuer", &aud, 1'800'000'000, 60});
        if (!r.error && r.claims.is_null()) __builtin_trap();
      }
      break;
    }
    case 5: {  // capacity headers, error bodies, stateful ids
      (void)routing::parse_retry_after_ms(in);
      (void)routing::parse_retry_after(in, 1'800'000'000'000);
      (void)routing::parse_reset(in);
      (void)routing::parse_count(in);
      (void)routing::parse_utilization(in);
      (void)routing::parse_body_retry_after(in);
      (void)core::answer_ids(in);
      (void)core::referenced_ids(in, {}, nullptr);
      break;
    }
    case 6:
      check_canonical(in, seed);
      break;
  }
  return 0;
}
