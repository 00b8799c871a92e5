#include "cluster/redis_protocol.hpp"

#include <hiredis/hiredis.h>

#include <new>
#include <utility>

namespace tollgate::cluster {
namespace {

// The value copy of a hiredis reply; the hiredis object is freed by the caller right after.
RedisReply from_hiredis(const redisReply& r) {
  switch (r.type) {
    case REDIS_REPLY_INTEGER:
      return RedisReply::of_integer(r.integer);
    case REDIS_REPLY_STRING:
      return RedisReply::of_string(std::string(r.str, r.len));
    case REDIS_REPLY_STATUS:
      return RedisReply::of_status(std::string(r.str, r.len));
    case REDIS_REPLY_ERROR:
      return RedisReply::of_error(std::string(r.str, r.len));
    case REDIS_REPLY_ARRAY: {
      std::vector<RedisReply> elements;
      elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i) elements.push_back(from_hiredis(*r.element[i]));
      return RedisReply::of_array(std::move(elements));
    }
    default:
      return RedisReply::nil();
  }
}

struct ReplyFree {
  void operator()(void* r) const { freeReplyObject(r); }
};

}  // namespace

bool RedisReply::is_error(std::string_view code) const {
  if (kind != Kind::kError || !text.starts_with(code)) return false;
  return text.size() == code.size() || text[code.size()] == ' ';
}

std::string_view to_string(RedisReply::Kind k) {
  switch (k) {
    case RedisReply::Kind::kNil:
      return "nil";
    case RedisReply::Kind::kInteger:
      return "integer";
    case RedisReply::Kind::kString:
      return "string";
    case RedisReply::Kind::kStatus:
      return "status";
    case RedisReply::Kind::kError:
      return "error";
    case RedisReply::Kind::kArray:
      return "array";
  }
  return "unknown";
}

void append_command(std::string& out, std::span<const std::string_view> argv) {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (auto a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  int n = redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), ptrs.data(), lens.data());
  if (n > 0 && cmd != nullptr) out.append(cmd, static_cast<std::size_t>(n));
  redisFreeCommand(cmd);               // accepts null
  if (n <= 0) throw std::bad_alloc();  // hiredis fails only when out of memory
}

struct RedisDecoder::Reader {
  Reader() : r(redisReaderCreate()) {
    if (r == nullptr) throw std::bad_alloc();
  }
  ~Reader() { redisReaderFree(r); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  redisReader* r;
};

RedisDecoder::RedisDecoder() : reader_(std::make_unique<Reader>()) {}
RedisDecoder::~RedisDecoder() = default;
RedisDecoder::RedisDecoder(RedisDecoder&&) noexcept = default;
RedisDecoder& RedisDecoder::operator=(RedisDecoder&&) noexcept = default;

bool RedisDecoder::feed(std::string_view bytes) {
  return redisReaderFeed(reader_->r, bytes.data(), bytes.size()) == REDIS_OK;
}

RedisDecoder::Status RedisDecoder::next(RedisReply& out) {
  void* raw = nullptr;
  if (redisReaderGetReply(reader_->r, &raw) != REDIS_OK) return Status::kError;
  if (raw == nullptr) return Status::kNeedMore;
  std::unique_ptr<void, ReplyFree> reply(raw);
  out = from_hiredis(*static_cast<const redisReply*>(raw));
  return Status::kReply;
}

std::string RedisDecoder::error() const {
  return reader_->r->err != 0 ? std::string(reader_->r->errstr) : std::string();
}

}  // namespace tollgate::cluster
