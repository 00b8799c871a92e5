#include "tollgate/tokenize/cli.hpp"

#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "tollgate/tokenize/encoding.hpp"
#include "tollgate/tokenize/estimate.hpp"

namespace tollgate::tokenize {
namespace {

constexpr std::string_view kUsage =
    "usage: tollgate count-tokens (--encoding NAME | --model NAME)\n"
    "                             [--request chat|completions|embeddings] [--ids]\n"
    "                             [--data-dir DIR]\n"
    "Reads text (or, with --request, a JSON request body) on stdin and prints its token count,\n"
    "or with --ids the token ids separated by spaces. Encodings: cl100k_base, o200k_base.\n"
    "Rank files: --data-dir, else $TOLLGATE_TOKENIZER_DIR, else the compiled-in directory.\n";

int usage_error(std::string_view message) {
  std::cerr << "count-tokens: " << message << "\n" << kUsage;
  return 2;
}

int fail(std::string_view message) {
  std::cerr << "count-tokens: " << message << "\n";
  return 2;
}

}  // namespace

int count_tokens_main(int argc, char** argv) {
  std::optional<std::string> encoding, model, request, data_dir;
  bool ids = false;
  // Both `count_tokens_main(argc - 1, argv + 1)` and a pass-through of the gateway's own argv
  // (argv[1] == "count-tokens") work.
  const int first = argc > 1 && std::string_view(argv[1]) == "count-tokens" ? 2 : 1;
  for (int i = first; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&](std::optional<std::string>& slot) -> bool {
      std::string_view v;
      if (const auto eq = arg.find('='); eq != std::string_view::npos) {
        v = arg.substr(eq + 1);
      } else if (i + 1 < argc) {
        v = argv[++i];
      } else {
        return false;
      }
      slot = std::string(v);
      return true;
    };
    const std::string_view name = arg.substr(0, arg.find('='));
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (arg == "--ids") {
      ids = true;
    } else if (name == "--encoding") {
      if (!value(encoding)) return usage_error("--encoding needs a value");
    } else if (name == "--model") {
      if (!value(model)) return usage_error("--model needs a value");
    } else if (name == "--request") {
      if (!value(request)) return usage_error("--request needs a value");
    } else if (name == "--data-dir") {
      if (!value(data_dir)) return usage_error("--data-dir needs a value");
    } else {
      return usage_error("unknown argument \"" + std::string(arg) + "\"");
    }
  }
  if (encoding.has_value() == model.has_value()) {
    return usage_error("give exactly one of --encoding and --model");
  }
  EncodingKind kind;
  if (encoding) {
    const auto k = parse_encoding_name(*encoding);
    if (!k) return usage_error("unknown encoding \"" + *encoding + "\"");
    kind = *k;
  } else {
    const auto k = encoding_for_model(*model);
    if (!k) return fail("unknown model \"" + *model + "\": pass --encoding cl100k_base|o200k_base");
    kind = *k;
  }
  std::optional<RequestKind> request_kind;
  if (request) {
    request_kind = parse_request_kind(*request);
    if (!request_kind) return usage_error("unknown request kind \"" + *request + "\"");
    if (ids) return usage_error("--ids cannot be combined with --request");
  }

  auto enc = Encoding::load(kind, resolve_data_dir(data_dir.value_or("")));
  if (!enc) return fail(enc.error().message);

  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (std::cin.bad()) return fail("cannot read stdin");

  if (request_kind) {
    const auto body = nlohmann::ordered_json::parse(input, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) return fail("stdin is not a valid JSON document");
    auto e = estimate_prompt(*request_kind, **enc, body, model.value_or(""));
    if (!e) return fail("malformed request body: " + e.error().message);
    std::cout << e->tokens << "\n";
    if (!e->exact) std::cerr << "count-tokens: note: estimate (not an exact count)\n";
    return 0;
  }
  if (ids) {
    const std::vector<TokenId> out = (*enc)->encode(input);
    std::string line;
    line.reserve(out.size() * 7 + 1);
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (i != 0) line.push_back(' ');
      line += std::to_string(out[i]);
    }
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stdout);
    return 0;
  }
  std::cout << (*enc)->count(input) << "\n";
  return 0;
}

}  // namespace tollgate::tokenize
