// Threads: the number bnorm uses, and parallel_for, the only way bnorm's code runs in parallel
// (OpenMP stays inside src/core/parallel.cc). Results never depend on the thread count: callers
// give every index its own output, and reductions are partitioned by shape, not by thread.
#pragma once

#include <cstdint>
#include <functional>

namespace bnorm {

/// Sets the number of threads bnorm's kernels use (>= 1). Throws ValueError for n < 1.
/// The default is OpenMP's (OMP_NUM_THREADS, else the number of cores).
void set_num_threads(int n);
/// Returns the number of threads bnorm's kernels use.
int get_num_threads();

/// Calls fn(chunk_begin, chunk_end) over [begin, end) split into chunks of `grain` indices
/// (the last may be shorter), in parallel. The chunks are fixed by (begin, end, grain) alone.
/// Runs serially when called from inside another parallel_for or when there is one chunk.
/// An exception thrown by fn is rethrown on the calling thread after all chunks finish.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

}  // namespace bnorm
