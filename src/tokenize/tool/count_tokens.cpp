// Stand-alone form of `tollgate count-tokens` (same code path), handy for tests and scripts.
#include "tollgate/tokenize/cli.hpp"

int main(int argc, char** argv) {
  return tollgate::tokenize::count_tokens_main(argc, argv);
}
