#include "usage/postgres.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace tollgate::usage::pg {

namespace {

using Clock = std::chrono::steady_clock;

enum class Ready : std::uint8_t { kYes, kTimedOut, kFailed };

// Waits until `fd` is ready for `events` or the deadline passes.
Ready wait(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left <= 0) return Ready::kTimedOut;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1'000'000)));
    if (n > 0) return Ready::kYes;
    if (n == 0) return Ready::kTimedOut;
    if (errno != EINTR) return Ready::kFailed;
  }
}

std::string trimmed(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// libpq's words for a refused login (SQLSTATE 28P01 / 28000 are not exposed before a result).
bool refused_login(std::string_view m) {
  return m.find("authentication failed") != std::string_view::npos ||
         m.find("no password supplied") != std::string_view::npos ||
         m.find("password authentication") != std::string_view::npos ||
         (m.find("role \"") != std::string_view::npos && m.find("does not exist") != std::string_view::npos) ||
         m.find("no pg_hba.conf entry") != std::string_view::npos;
}

std::string quote_ident(std::string_view name) { return "\"" + std::string(name) + "\""; }

}  // namespace

std::vector<const char*> Params::pointers() const {
  std::vector<const char*> out;
  out.reserve(values_.size());
  for (const auto& v : values_) out.push_back(v ? v->c_str() : nullptr);
  return out;
}

void Connection::close() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

Error Connection::lost(std::string_view what) {
  Error e{ShipError::kConnect, std::string(what) + ": " + trimmed(PQerrorMessage(conn_))};
  close();
  return e;
}

std::optional<Error> Connection::connect(const std::string& url, Millis timeout) {
  close();
  auto deadline = Clock::now() + timeout;
  conn_ = PQconnectStart(url.c_str());
  if (conn_ == nullptr) return Error{ShipError::kConnect, "out of memory"};
  // Server notices ("relation exists, skipping") would go to stderr: the log is JSON.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  auto refused = [this] {
    auto m = trimmed(PQerrorMessage(conn_));
    Error e{refused_login(m) ? ShipError::kAuth : ShipError::kConnect, m};
    close();
    return e;
  };
  if (PQstatus(conn_) == CONNECTION_BAD) return refused();
  auto st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) return refused();
    short events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    auto r = wait(PQsocket(conn_), events, deadline);
    if (r == Ready::kTimedOut) {
      close();
      return Error{ShipError::kTimeout, "no answer while connecting within " +
                                            std::to_string(timeout.count()) + " ms"};
    }
    if (r == Ready::kFailed) return refused();
    st = PQconnectPoll(conn_);
  }
  if (PQsetnonblocking(conn_, 1) != 0) return lost("cannot make the connection non-blocking");
  return std::nullopt;
}

std::variant<Result, Error> Connection::exec(const std::string& sql, const Params* params,
                                             Millis timeout) {
  if (conn_ == nullptr) return Error{ShipError::kConnect, "not connected"};
  auto deadline = Clock::now() + timeout;
  int sent = 0;
  if (params != nullptr) {
    auto values = params->pointers();
    sent = PQsendQueryParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, 0);
  } else {
    sent = PQsendQuery(conn_, sql.c_str());
  }
  if (sent == 0) return lost("cannot send");
  auto timed_out = [&] {
    close();
    return Error{ShipError::kTimeout, "no answer within " + std::to_string(timeout.count()) + " ms"};
  };
  for (int f = PQflush(conn_); f != 0; f = PQflush(conn_)) {
    if (f < 0) return lost("cannot send");
    auto r = wait(PQsocket(conn_), POLLOUT | POLLIN, deadline);
    if (r == Ready::kTimedOut) return timed_out();
    if (r == Ready::kFailed || PQconsumeInput(conn_) == 0) return lost("connection lost");
  }
  Result out;
  std::optional<Error> failed;
  for (;;) {
    while (PQisBusy(conn_) != 0) {
      auto r = wait(PQsocket(conn_), POLLIN, deadline);
      if (r == Ready::kTimedOut) return timed_out();
      if (r == Ready::kFailed || PQconsumeInput(conn_) == 0) return lost("connection lost");
    }
    PGresult* res = PQgetResult(conn_);
    if (res == nullptr) break;
    auto status = PQresultStatus(res);
    if (status == PGRES_TUPLES_OK) {
      for (int i = 0; i < PQntuples(res); ++i) {
        std::vector<std::string> row;
        for (int j = 0; j < PQnfields(res); ++j) row.emplace_back(PQgetvalue(res, i, j));
        out.rows.push_back(std::move(row));
      }
    } else if (status == PGRES_COMMAND_OK) {
      out.affected += std::atoll(PQcmdTuples(res));
    } else if (!failed) {
      const char* code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
      failed = Error{ShipError::kQuery, trimmed(PQresultErrorMessage(res)) +
                                            (code ? std::string(" (SQLSTATE ") + code + ")" : "")};
    }
    PQclear(res);
  }
  if (failed) {
    if (PQstatus(conn_) == CONNECTION_BAD) {
      close();
      failed->kind = ShipError::kConnect;
    }
    return *failed;
  }
  return out;
}

TableNames::TableNames(std::string_view configured) {
  auto dot = configured.find('.');
  if (dot == std::string_view::npos) {
    bare = std::string(configured);
    table = quote_ident(bare);
    versions = quote_ident(bare + "_schema");
  } else {
    bare = std::string(configured.substr(dot + 1));
    auto schema = quote_ident(configured.substr(0, dot)) + ".";
    table = schema + quote_ident(bare);
    versions = schema + quote_ident(bare + "_schema");
  }
}

namespace {

// Version 1. Later versions append their own IF NOT EXISTS ... THEN block (never edit this one).
std::string migration_sql(const TableNames& t) {
  const auto& T = t.table;
  const auto& S = t.versions;
  return "DO $tg$ BEGIN\n"
         "PERFORM pg_advisory_xact_lock(hashtext('tollgate ledger ' || " "'" + T + "'));\n"
         "CREATE TABLE IF NOT EXISTS " + S + " (version integer PRIMARY KEY, "
         "applied_at timestamptz NOT NULL DEFAULT now());\n"
         "IF NOT EXISTS (SELECT 1 FROM " + S + " WHERE version = 1) THEN\n"
         "CREATE TABLE " + T + " (record_id text PRIMARY KEY, request_id text NOT NULL, "
         "time_ms bigint NOT NULL, replica text NOT NULL, client text NOT NULL, "
         "tenant text NOT NULL, deployment text NOT NULL, backend text NOT NULL, "
         "operation text NOT NULL, tier integer NOT NULL, status integer NOT NULL, "
         "prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL, "
         "cached_tokens bigint NOT NULL, reasoning_tokens bigint NOT NULL, "
         "estimated boolean NOT NULL, cost_nano_usd bigint NOT NULL, "
         "latency_ms double precision NOT NULL, ttft_ms double precision, outcome text NOT NULL, "
         "shipped_at timestamptz NOT NULL DEFAULT now());\n"
         "CREATE INDEX " + quote_ident(t.bare + "_time") + " ON " + T + " (time_ms);\n"
         "CREATE INDEX " + quote_ident(t.bare + "_request") + " ON " + T + " (request_id);\n"
         "INSERT INTO " + S + " (version) VALUES (1);\n"
         "END IF;\n"
         "END $tg$";
}

}  // namespace

std::optional<Error> migrate(Connection& c, const TableNames& t, Millis timeout) {
  auto done = c.exec(migration_sql(t), nullptr, timeout);
  if (auto* e = std::get_if<Error>(&done)) return *e;
  auto version = c.exec("SELECT coalesce(max(version), 0) FROM " + t.versions, nullptr, timeout);
  if (auto* e = std::get_if<Error>(&version)) return *e;
  const auto& rows = std::get<Result>(version).rows;
  int v = rows.empty() || rows[0].empty() ? 0 : std::atoi(rows[0][0].c_str());
  if (v > kSchemaVersion) {
    return Error{ShipError::kQuery, "the table's schema is version " + std::to_string(v) +
                                        ", newer than this gateway's " +
                                        std::to_string(kSchemaVersion) + ": upgrade the gateway"};
  }
  return std::nullopt;
}

std::string insert_sql(const TableNames& t, std::size_t rows) {
  std::string sql = "INSERT INTO " + t.table + " (" + std::string(kColumns) + ") VALUES ";
  sql.reserve(sql.size() + rows * kColumnCount * 6 + 64);
  std::size_t n = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    sql += r == 0 ? "(" : ",(";
    for (std::size_t c = 0; c < kColumnCount; ++c) {
      if (c > 0) sql += ',';
      sql += '$';
      sql += std::to_string(++n);
    }
    sql += ')';
  }
  sql += " ON CONFLICT (record_id) DO NOTHING";
  return sql;
}

std::variant<std::vector<Row>, Error> totals(Connection& c, const TableNames& t, GroupBy group,
                                             std::int64_t from_ms, std::int64_t to_ms, Millis timeout) {
  // The column name comes from the enum, never from the caller's text.
  std::string col(to_string(group));
  std::string sql = "SELECT " + col +
                    ", count(*), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), "
                    "sum(reasoning_tokens), sum(cost_nano_usd), sum(estimated::int) FROM " +
                    t.table + " WHERE time_ms >= $1 AND time_ms < $2 GROUP BY " + col +
                    " ORDER BY " + col + " COLLATE \"C\"";
  Params p;
  p.add(std::to_string(from_ms));
  p.add(std::to_string(to_ms));
  auto got = c.exec(sql, &p, timeout);
  if (auto* e = std::get_if<Error>(&got)) return *e;
  std::vector<Row> rows;
  for (const auto& v : std::get<Result>(got).rows) {
    auto num = [&v](std::size_t i) { return static_cast<std::int64_t>(std::strtoll(v[i].c_str(), nullptr, 10)); };
    rows.push_back(Row{v[0], num(1), num(2), num(3), num(4), num(5), num(6), num(7)});
  }
  return rows;
}

}  // namespace tollgate::usage::pg
