#pragma once
// Test helpers for code that writes files: a temporary directory removed afterwards, and a disk
// that refuses to grow any file (a file size limit: EFBIG, as on a full disk). Shared by the
// ledger's tests (usage records and owner records).

#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <filesystem>
#include <string>

namespace tollgate::testing {

/// A fresh directory under /tmp named `<prefix>-XXXXXX`, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "tollgate-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

/// No file of this process may grow while it lives (writes fail with EFBIG, as on a full disk);
/// the old limit comes back on every way out, an assertion failure included.
struct NoFileGrowth {
  rlimit old{};
  NoFileGrowth() {
    ::signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    rlimit tight = old;
    tight.rlim_cur = 0;
    setrlimit(RLIMIT_FSIZE, &tight);
  }
  ~NoFileGrowth() { lift(); }
  NoFileGrowth(const NoFileGrowth&) = delete;
  NoFileGrowth& operator=(const NoFileGrowth&) = delete;
  void lift() { setrlimit(RLIMIT_FSIZE, &old); }
};

}  // namespace tollgate::testing
