// parallel_for on OpenMP; the only file that includes omp.h. Checked by
// tests/core/parallel_test.cc and by every determinism test (1, 2, 3, 8 threads).
#include "bnorm/parallel.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <mutex>

#include "bnorm/error.h"

#ifdef BNORM_WITH_OPENMP
#include <omp.h>
#endif

namespace bnorm {

namespace {
int g_num_threads = 0;  // 0: not set, use OpenMP's default.
}

void set_num_threads(int n) {
  if (n < 1) throw ValueError(fmt::format("set_num_threads: n must be >= 1, got {}", n));
  g_num_threads = n;
}

int get_num_threads() {
#ifdef BNORM_WITH_OPENMP
  return g_num_threads > 0 ? g_num_threads : omp_get_max_threads();
#else
  return 1;
#endif
}

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (end - begin + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), chunks));
#ifdef BNORM_WITH_OPENMP
  if (threads > 1 && !omp_in_parallel()) {
    std::exception_ptr error;
    std::mutex error_mutex;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < chunks; ++i) {
      try {
        const int64_t b = begin + i * grain;
        fn(b, std::min(end, b + grain));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  (void)threads;
  for (int64_t b = begin; b < end; b += grain) fn(b, std::min(end, b + grain));
}

}  // namespace bnorm
