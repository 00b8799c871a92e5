#pragma once
// Small, audited building blocks for identities, on OpenSSL: SHA-256, constant-time comparison,
// random keys, hex and base64url, RFC 3339 times. Plain C++; thread: any.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::crypto {

using Digest = std::array<unsigned char, 32>;

Digest sha256(std::string_view data);
std::string to_hex(const unsigned char* data, std::size_t size);
inline std::string to_hex(const Digest& d) { return to_hex(d.data(), d.size()); }
/// 64 hex digits (either case) -> digest.
std::optional<Digest> digest_from_hex(std::string_view hex);
/// Constant-time equality (CRYPTO_memcmp).
bool equal_ct(const Digest& a, const Digest& b);

std::string base64url_encode(std::string_view data);
/// Unpadded (or padded) base64url -> bytes; nullopt on any invalid character.
std::optional<std::string> base64url_decode(std::string_view text);

/// A new client key: "tg-" + 43 base64url characters (32 random bytes from the OS CSPRNG).
std::string new_key();
/// What listings show of a key: its first 7 characters ("tg-AbCd").
inline std::string key_prefix(std::string_view key) { return std::string(key.substr(0, 7)); }
/// The public id of a key: "key_" + 16 hex digits of its digest (safe to show and log).
inline std::string key_id(const Digest& d) { return "key_" + to_hex(d.data(), 8); }

/// "2027-01-01T00:00:00Z" or with an offset ("+02:00"), fractions allowed -> Unix seconds.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);
/// Unix seconds -> "2027-01-01T00:00:00Z".
std::string format_rfc3339(std::int64_t unix_seconds);

}  // namespace tollgate::crypto
