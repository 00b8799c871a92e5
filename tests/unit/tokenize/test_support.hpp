#pragma once
// Loads both encodings once per test binary. Tests that need them fail with the loader's
// message (path + expected hash + how to fetch) when the rank files are absent.

#include <gtest/gtest.h>

#include "tollgate/tokenize/encoding.hpp"

namespace tollgate::tokenize::testing {

inline const Result<Tokenizers>& loaded_tokenizers() {
  static const Result<Tokenizers> t = Tokenizers::load();
  return t;
}

class WithTokenizers : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& t = loaded_tokenizers();
    ASSERT_TRUE(t.ok()) << "rank files missing: " << t.error().message
                        << "\n(run scripts/fetch-tokenizer-data.sh, or set TOLLGATE_TOKENIZER_DIR)";
  }
  static const Encoding& cl100k() { return loaded_tokenizers()->get(EncodingKind::kCl100kBase); }
  static const Encoding& o200k() { return loaded_tokenizers()->get(EncodingKind::kO200kBase); }
};

}  // namespace tollgate::tokenize::testing
