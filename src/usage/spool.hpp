#pragma once
// The shipper's view of the local spool (the ledger's SQLite file, its own connection): the
// oldest unshipped records, marking them shipped, the backlog, and pruning shipped rows. The
// ledger's writer appends rows with growing ids; the shipper ships them in id order, so the
// shipped rows are always a prefix of the table and the unshipped ones its suffix. Thread: the
// shipper's.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "usage/postgres.hpp"

namespace tollgate::usage {

class Spool {
 public:
  /// Opens the file the ledger created. Throws std::runtime_error naming the path.
  explicit Spool(const std::string& path);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  /// Up to `limit` of the oldest unshipped records as INSERT parameters (pg::kColumns order).
  struct Batch {
    std::size_t count = 0;
    std::int64_t last_id = 0;  // the highest spool id in the batch
    pg::Params params;
  };
  /// False when the spool cannot be read (error() says why).
  bool read(std::size_t limit, Batch& out);
  /// Marks every unshipped row up to `last_id` shipped (the rows of the batch read last).
  bool mark_shipped(std::int64_t last_id);

  struct Backlog {
    std::uint64_t unshipped = 0;
    std::int64_t oldest_ms = 0;  // unix ms of the oldest unshipped record; 0: none
    std::uint64_t rows = 0;      // all rows, shipped or not
  };
  std::optional<Backlog> backlog();
  /// Deletes up to `chunk` of the oldest shipped rows while the spool holds more than
  /// `max_rows`; the number deleted, or nullopt on failure.
  std::optional<std::uint64_t> prune(std::uint64_t max_rows, std::uint64_t chunk);

  const std::string& error() const { return error_; }

 private:
  struct Db;
  std::unique_ptr<Db> db_;
  std::string error_;
};

}  // namespace tollgate::usage
