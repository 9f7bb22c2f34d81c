// parallel_for: every index visited once, chunks fixed by shape, exceptions rethrown.
#include "bnorm/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "bnorm/error.h"

namespace bnorm {
namespace {

TEST(ParallelFor, VisitsEveryIndexOnceForAnyThreadCount) {
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    std::vector<std::atomic<int>> hits(1003);
    parallel_for(0, 1003, 10, [&](int64_t b, int64_t e) {
      EXPECT_EQ(b % 10, 0);
      EXPECT_LE(e - b, 10);
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
  set_num_threads(2);
}

TEST(ParallelFor, RethrowsOnTheCaller) {
  EXPECT_THROW(parallel_for(0, 100, 1,
                            [](int64_t b, int64_t) {
                              if (b == 37) throw std::runtime_error("boom");
                            }),
               std::runtime_error);
}

TEST(ParallelFor, RejectsZeroThreads) { EXPECT_THROW(set_num_threads(0), ValueError); }

TEST(ParallelFor, EmptyRangeDoesNothing) {
  int calls = 0;
  parallel_for(5, 5, 1, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace bnorm
