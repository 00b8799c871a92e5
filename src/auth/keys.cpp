#include "tollgate/auth/keys.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

namespace tollgate::auth {

using namespace crypto;  // SHA-256, hex, base64url, RFC 3339

namespace {

std::uint64_t head(const Digest& d) {
  std::uint64_t h = 0;
  for (int i = 0; i < 8; ++i) h = (h << 8) | d[static_cast<std::size_t>(i)];
  return h;
}

nlohmann::json json_of(const RuntimeKey& k) {
  nlohmann::json o{{"id", k.id},         {"client", k.client},   {"sha256", to_hex(k.digest)},
                   {"prefix", k.prefix}, {"created", k.created}, {"expires", nullptr}};
  if (k.expires) o["expires"] = *k.expires;
  return o;
}

// Throws (nlohmann::json's exceptions, std::runtime_error) when `k` is not a key record.
RuntimeKey runtime_key_of(const nlohmann::json& k) {
  RuntimeKey r;
  r.id = k.at("id").get<std::string>();
  r.client = k.at("client").get<std::string>();
  auto d = digest_from_hex(k.at("sha256").get<std::string>());
  if (!d) throw std::runtime_error("bad sha256 for key " + r.id);
  r.digest = *d;
  r.prefix = k.value("prefix", "");
  r.created = k.value("created", std::int64_t{0});
  if (k.contains("expires") && !k["expires"].is_null()) r.expires = k["expires"].get<std::int64_t>();
  return r;
}

}  // namespace

std::string encode_runtime_key(const RuntimeKey& k) { return json_of(k).dump(); }

std::optional<RuntimeKey> decode_runtime_key(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  try {
    return runtime_key_of(j);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

KeysFile merge(const KeysFile& a, const KeysFile& b) {
  KeysFile out;
  std::unordered_set<std::string> revoked;
  for (const auto* f : {&a, &b}) {
    for (const auto& id : f->revoked) {
      if (revoked.insert(id).second) out.revoked.push_back(id);
    }
  }
  std::unordered_set<std::string> ids;
  for (const auto* f : {&a, &b}) {
    for (const auto& k : f->keys) {
      if (revoked.count(k.id) == 0 && ids.insert(k.id).second) out.keys.push_back(k);
    }
  }
  return out;
}

KeysFile load_keys_file(const std::string& path, std::string& error) {
  KeysFile out;
  if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) return out;  // none yet: empty
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot read the keys file";
    return out;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) {
    error = path + ": the keys file is not a JSON object";
    return out;
  }
  try {
    for (const auto& k : j.value("keys", nlohmann::json::array())) out.keys.push_back(runtime_key_of(k));
    for (const auto& id : j.value("revoked", nlohmann::json::array())) {
      out.revoked.push_back(id.get<std::string>());
    }
  } catch (const std::exception& e) {
    error = path + ": malformed keys file: " + e.what();
    return KeysFile{};
  }
  return out;
}

std::string save_keys_file(const std::string& path, const KeysFile& data) {
  nlohmann::json j;
  j["version"] = 1;
  j["keys"] = nlohmann::json::array();
  for (const auto& k : data.keys) j["keys"].push_back(json_of(k));
  j["revoked"] = data.revoked;
  auto text = j.dump(2) + "\n";
  auto tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return "cannot write " + tmp + ": " + std::strerror(errno);
  auto give_up = [&](std::string what) {
    std::string e = what + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return e;
  };
  std::size_t off = 0;
  while (off < text.size()) {
    auto n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return give_up("cannot write " + tmp);
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return give_up("cannot flush " + tmp);
  int closed = ::close(fd);
  fd = -1;
  if (closed != 0) return give_up("cannot flush " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return give_up("cannot replace " + path);
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // the rename itself is durable
    ::close(dfd);
  }
  return {};
}

KeyIndex::KeyIndex(const config::Config& cfg, const KeysFile& file) {
  auto revoked = [&file](const std::string& id) {
    return std::find(file.revoked.begin(), file.revoked.end(), id) != file.revoked.end();
  };
  for (std::uint32_t c = 0; c < cfg.clients.size(); ++c) {
    for (const auto& k : cfg.clients[c].keys) {
      KeyEntry e{key_id(k.digest), c, k.digest, k.prefix, k.expires_unix, 0, false};
      if (!revoked(e.id)) entries_.push_back(std::move(e));
    }
  }
  for (const auto& k : file.keys) {
    auto* client = cfg.find_client(k.client);
    if (client == nullptr || revoked(k.id)) continue;
    auto c = static_cast<std::uint32_t>(client - cfg.clients.data());
    entries_.push_back(KeyEntry{k.id, c, k.digest, k.prefix, k.expires, k.created, true});
  }
  for (std::size_t i = 0; i < entries_.size(); ++i) by_head_.emplace(head(entries_[i].digest), i);
}

std::optional<std::uint32_t> KeyIndex::find(std::string_view key, std::int64_t now) const {
  auto d = sha256(key);
  auto [lo, hi] = by_head_.equal_range(head(d));
  std::optional<std::uint32_t> found;
  for (auto it = lo; it != hi; ++it) {
    const auto& e = entries_[it->second];
    if (equal_ct(e.digest, d) && (!e.expires || now < *e.expires)) found = e.client;
  }
  return found;
}

const KeyEntry* KeyIndex::by_id(std::string_view id) const {
  for (const auto& e : entries_) {
    if (e.id == id) return &e;
  }
  return nullptr;
}

}  // namespace tollgate::auth
