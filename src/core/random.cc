// The global generator; see include/bnorm/random.h.
#include "bnorm/random.h"

namespace bnorm {

namespace {
std::mt19937_64& global() {
  static std::mt19937_64 g(0);
  return g;
}
}  // namespace

void manual_seed(uint64_t seed) { global().seed(seed); }
std::mt19937_64& generator() { return global(); }

}  // namespace bnorm
