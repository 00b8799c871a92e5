#pragma once
// Encoding::Impl: the rank table and pre-tokenizer of one encoding (module-private; the module's
// tests and fuzzer use it for differential checks).

#include <string>

#include "bpe.hpp"
#include "pretokenize.hpp"
#include "rank_table.hpp"
#include "tollgate/tokenize/encoding.hpp"

namespace tollgate::tokenize {

struct Encoding::Impl {
  EncodingKind kind;
  detail::RankTable table;
  detail::PreTokenizer pre;

  /// Calls sink(rank) for every token of `text`, which must be valid UTF-8.
  template <class Sink>
  void encode_valid(std::string_view text, detail::MergeScratch& scratch, Sink&& sink) const {
    pre.split(text, [&](const unsigned char* p, std::size_t n) {
      detail::bpe_piece(table, p, n, scratch, sink);
    });
  }
};

namespace detail {
/// The calling thread's merge scratch (thread_local).
MergeScratch& thread_merge_scratch();
}  // namespace detail

}  // namespace tollgate::tokenize
