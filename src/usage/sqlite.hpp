#pragma once
// Small RAII wrappers over the sqlite3 C API, shared by the ledger's writer, its readers and the
// shipper's spool. Each object belongs to one thread at a time (SQLITE_OPEN_NOMUTEX).

#include <sqlite3.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tollgate::usage::sqlite {

/// An sqlite3 connection, closed on destruction; the constructor throws naming `path`.
struct Connection {
  sqlite3* db = nullptr;
  Connection(const std::string& path, int flags) {
    int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      sqlite3_close(db);
      throw std::runtime_error("usage ledger " + path + ": cannot open: " + msg);
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
  }
  ~Connection() { sqlite3_close(db); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  std::string error() const { return sqlite3_errmsg(db); }
  bool exec(const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK; }
};

/// A prepared statement (st == nullptr when it did not prepare), finalized on destruction.
struct Statement {
  sqlite3_stmt* st = nullptr;
  Statement(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) st = nullptr;
  }
  ~Statement() { sqlite3_finalize(st); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  /// Binds text that must outlive the statement's next step (SQLITE_STATIC).
  void text(int i, std::string_view v) {
    sqlite3_bind_text(st, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  void int64(int i, std::int64_t v) { sqlite3_bind_int64(st, i, v); }
  std::string column(int i) const {
    auto t = sqlite3_column_text(st, i);
    return t ? reinterpret_cast<const char*>(t) : "";
  }
  bool is_null(int i) const { return sqlite3_column_type(st, i) == SQLITE_NULL; }
  /// Runs a statement that returns no rows, and resets it (its bindings stay until rebound).
  bool done() {
    bool ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_reset(st);
    return ok;
  }
};

}  // namespace tollgate::usage::sqlite
