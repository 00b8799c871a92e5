#pragma once
// `tollgate count-tokens`: the operator's way to see what a text or request will be charged.

namespace tollgate::tokenize {

/// Runs `count-tokens (--encoding NAME | --model NAME) [--request chat|completions|embeddings]
/// [--ids] [--data-dir DIR]`. argv[0] is the program; a leading "count-tokens" in argv[1] is
/// skipped, so main() may pass its own argc/argv unchanged (or argc - 1, argv + 1). Reads stdin:
/// raw text (counted byte-exactly, a trailing newline included), or with
/// --request a JSON request body. Prints the token count (with --request: the prompt estimate;
/// "estimate" is noted on stderr when it is not exact), or with --ids the token ids separated by
/// spaces. Returns 0, or 2 after printing a message to stderr on bad usage, unknown
/// encoding/model, unreadable rank files or a malformed body.
/// Thread: call from the main thread only (uses stdin/stdout).
int count_tokens_main(int argc, char** argv);

}  // namespace tollgate::tokenize
