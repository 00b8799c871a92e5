// Tokenizer throughput (single thread): the generated multi-script corpus in ~4 KiB requests and
// as one string, hostile inputs at 10 kB / 100 kB / 1 MB, and the resident size of the loaded
// rank tables. bench/tokenizer/compare.sh runs it next to tiktoken (WASM) on the same text.
// Rates are per CPU second (Google Benchmark's default thread CPU time), as the node side
// measures, so a shared, busy machine skews the comparison less than wall time would.
//
//   bench_tokenizer [--corpus=PATH]... [benchmark flags]
// Without --corpus: corpus.txt and corpus-natural.txt (written by tests/tokenizer/gen-corpus.mjs)
// in $TOLLGATE_BENCH_CORPUS_DIR, else in the compiled-in TOLLGATE_BENCH_CORPUS_DIR.
// Rank files: TOLLGATE_TOKENIZER_DIR (else the compiled-in default).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/tokenize/encoding.hpp"

namespace {

using tollgate::tokenize::Encoding;
using tollgate::tokenize::EncodingKind;
using tollgate::tokenize::TokenId;
using tollgate::tokenize::Tokenizers;

struct Corpus {
  std::string name;  // file stem, e.g. "corpus-natural"
  std::string text;
  std::vector<std::string_view> chunks;  // ~4 KiB, split at UTF-8 character boundaries
};
std::vector<std::unique_ptr<Corpus>> g_corpora;
std::unique_ptr<Tokenizers> g_tokenizers;
double g_load_rss_mib = 0;  // resident-size growth of the first load (a later load reuses pages)

double rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1048576.0;
}

// Same chunking as bench/tokenizer/tiktoken-bench.mjs.
std::vector<std::string_view> split_chunks(std::string_view s, std::size_t size) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (start < s.size()) {
    std::size_t end = std::min(start + size, s.size());
    while (end < s.size() && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) ++end;
    out.push_back(s.substr(start, end - start));
    start = end;
  }
  return out;
}

const Encoding& enc_of(const benchmark::State& state) {
  return g_tokenizers->get(static_cast<EncodingKind>(state.range(0)));
}

void set_rates(benchmark::State& state, std::size_t bytes, std::size_t tokens) {
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void BM_Corpus4KiB(benchmark::State& state, const Corpus* c) {
  const Encoding& enc = enc_of(state);
  std::vector<TokenId> ids;
  std::size_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (std::string_view chunk : c->chunks) {
      ids.clear();
      enc.encode(chunk, ids);
      tokens += ids.size();
    }
    benchmark::DoNotOptimize(ids.data());
  }
  set_rates(state, c->text.size(), tokens);
  state.SetLabel(std::string(enc.name()));
}

void BM_Corpus4KiBCount(benchmark::State& state, const Corpus* c) {
  const Encoding& enc = enc_of(state);
  std::size_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (std::string_view chunk : c->chunks) tokens += enc.count(chunk);
    benchmark::DoNotOptimize(tokens);
  }
  set_rates(state, c->text.size(), tokens);
  state.SetLabel(std::string(enc.name()));
}

void BM_CorpusWhole(benchmark::State& state, const Corpus* c) {
  const Encoding& enc = enc_of(state);
  std::vector<TokenId> ids;
  for (auto _ : state) {
    ids.clear();
    enc.encode(c->text, ids);
    benchmark::DoNotOptimize(ids.data());
  }
  set_rates(state, c->text.size(), ids.size());
  state.SetLabel(std::string(enc.name()));
}

enum Hostile : int { kOneLetter, kRandomLetters, kSpaces, kDigits };

std::string hostile_input(int kind, std::size_t size) {
  std::mt19937 rng(7);
  std::string s(size, 'a');
  static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  switch (kind) {
    case kOneLetter:
      break;
    case kRandomLetters:
      for (char& c : s) c = kLetters[rng() % 52];
      break;
    case kSpaces:
      s.assign(size, ' ');
      break;
    default:
      for (char& c : s) c = static_cast<char>('0' + rng() % 10);
  }
  return s;
}

void BM_Hostile(benchmark::State& state) {
  const Encoding& enc = enc_of(state);
  static constexpr const char* kNames[] = {"one-letter", "random-letters", "spaces", "digits"};
  const std::string text =
      hostile_input(static_cast<int>(state.range(1)), static_cast<std::size_t>(state.range(2)));
  std::size_t tokens = 0;
  for (auto _ : state) {
    tokens = enc.count(text);
    benchmark::DoNotOptimize(tokens);
  }
  set_rates(state, text.size(), tokens);
  state.SetLabel(std::string(enc.name()) + " " + kNames[state.range(1)]);
}

void BM_LoadTables(benchmark::State& state) {
  double rss = 0;
  for (auto _ : state) {
    const double before = rss_mib();
    auto t = Tokenizers::load();
    if (!t) {
      state.SkipWithError(t.error().message.c_str());
      return;
    }
    rss = rss_mib() - before;
    benchmark::DoNotOptimize(&t);
  }
  (void)rss;
  state.counters["rss_MiB"] = g_load_rss_mib;
  state.counters["heap_MiB"] =
      static_cast<double>(g_tokenizers->get(EncodingKind::kCl100kBase).memory_bytes() +
                          g_tokenizers->get(EncodingKind::kO200kBase).memory_bytes()) /
      1048576.0;
}

void register_all() {
  for (const auto& c : g_corpora) {
    for (int enc : {0, 1}) {
      const std::string n = c->name;
      benchmark::RegisterBenchmark((n + "/4KiB_encode").c_str(), BM_Corpus4KiB, c.get())
          ->Arg(enc)
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((n + "/4KiB_count").c_str(), BM_Corpus4KiBCount, c.get())
          ->Arg(enc)
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((n + "/whole_encode").c_str(), BM_CorpusWhole, c.get())
          ->Arg(enc)
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (int enc : {0, 1}) {
    for (int kind : {kOneLetter, kRandomLetters, kSpaces, kDigits}) {
      for (int size : {10'000, 100'000, 1'000'000}) {
        benchmark::RegisterBenchmark("hostile", BM_Hostile)
            ->Args({enc, kind, size})
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  benchmark::RegisterBenchmark("load_both_tables", BM_LoadTables)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

bool load_corpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  auto c = std::make_unique<Corpus>();
  std::string stem = path.substr(path.find_last_of('/') + 1);
  c->name = stem.substr(0, stem.find('.'));
  c->text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  c->chunks = split_chunks(c->text, 4096);
  std::fprintf(stderr, "corpus %s: %zu bytes in %zu chunks\n", path.c_str(), c->text.size(),
               c->chunks.size());
  g_corpora.push_back(std::move(c));
  return true;
}

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--corpus=", 9) == 0) {
      paths.emplace_back(argv[i] + 9);
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (paths.empty()) {
    std::string dir;
    if (const char* env = std::getenv("TOLLGATE_BENCH_CORPUS_DIR")) dir = env;
#ifdef TOLLGATE_BENCH_CORPUS_DIR
    if (dir.empty()) dir = TOLLGATE_BENCH_CORPUS_DIR;
#endif
    if (!dir.empty()) paths = {dir + "/corpus.txt", dir + "/corpus-natural.txt"};
  }
  for (const std::string& p : paths) {
    if (!load_corpus(p)) {
      std::cerr << "tokenize bench: cannot read corpus \"" << p << "\"\n";
      return 1;
    }
  }
  if (g_corpora.empty()) {
    std::cerr
        << "tokenize bench: no corpus; generate one with `node tests/tokenizer/gen-corpus.mjs "
           "DIR` and pass --corpus=DIR/corpus.txt (or set TOLLGATE_BENCH_CORPUS_DIR=DIR)\n";
    return 1;
  }

  const double before = rss_mib();
  auto t = Tokenizers::load();
  if (!t) {
    std::cerr << "tokenize bench: " << t.error().message << "\n";
    return 1;
  }
  g_tokenizers = std::make_unique<Tokenizers>(std::move(t).value());
  const double after = rss_mib();
  g_load_rss_mib = after - before;
  std::fprintf(
      stderr, "rank tables: RSS +%.1f MiB (heap: cl100k %.1f MiB, o200k %.1f MiB)\n",
      after - before,
      static_cast<double>(g_tokenizers->get(EncodingKind::kCl100kBase).memory_bytes()) / 1048576.0,
      static_cast<double>(g_tokenizers->get(EncodingKind::kO200kBase).memory_bytes()) / 1048576.0);

  register_all();
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
