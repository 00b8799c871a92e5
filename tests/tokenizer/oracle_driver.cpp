// Encodes every document of a corpus.jsonl (see gen-corpus.mjs) and prints one line of
// space-separated token ids per document; the last line encodes all text documents joined by
// "\n" (= corpus.txt). Used by compare.mjs against tiktoken@1.0.22.
//
//   tokenize_oracle_driver ENCODING CORPUS.jsonl [DATA_DIR]
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "tollgate/tokenize/encoding.hpp"

namespace {

std::string decode_base64(const std::string& in) {
  auto v = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string out;
  unsigned acc = 0;
  int bits = 0;
  for (char c : in) {
    const int x = v(c);
    if (x < 0) continue;
    acc = (acc << 6) | static_cast<unsigned>(x);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

void print_ids(const std::vector<tollgate::tokenize::TokenId>& ids, std::string& line) {
  line.clear();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i != 0) line.push_back(' ');
    line += std::to_string(ids[i]);
  }
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stdout);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tollgate::tokenize;
  if (argc < 3) {
    std::cerr << "usage: tokenize_oracle_driver ENCODING CORPUS.jsonl [DATA_DIR]\n";
    return 2;
  }
  const auto kind = parse_encoding_name(argv[1]);
  if (!kind) {
    std::cerr << "unknown encoding " << argv[1] << "\n";
    return 2;
  }
  auto enc = Encoding::load(*kind, resolve_data_dir(argc > 3 ? argv[3] : ""));
  if (!enc) {
    std::cerr << enc.error().message << "\n";
    return 2;
  }
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::cerr << "cannot open " << argv[2] << "\n";
    return 2;
  }
  std::string raw, line, all;
  bool first_text = true;
  std::vector<TokenId> ids;
  while (std::getline(in, raw)) {
    const auto doc = nlohmann::json::parse(raw, nullptr, false);
    std::string text;
    if (doc.is_string()) {
      text = doc.get<std::string>();
    } else if (doc.is_object() && doc.contains("b64")) {
      text = decode_base64(doc["b64"].get<std::string>());
    } else {
      std::cerr << "bad corpus line\n";
      return 2;
    }
    ids.clear();
    (*enc)->encode(text, ids);
    print_ids(ids, line);
    if (doc.is_string()) {
      if (!first_text) all.push_back('\n');
      all += text;
      first_text = false;
    }
  }
  ids.clear();
  (*enc)->encode(all, ids);
  print_ids(ids, line);
  return 0;
}
