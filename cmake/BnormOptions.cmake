# Every bnorm build option, in one place. Tests, benchmarks, examples and the CLI are on by
# default only when bnorm is the top-level project (fmtlib's habit).
if(CMAKE_SOURCE_DIR STREQUAL PROJECT_SOURCE_DIR)
  set(BNORM_TOP_LEVEL ON)
else()
  set(BNORM_TOP_LEVEL OFF)
endif()

option(BNORM_BUILD_TESTS "Build the GoogleTest suite" ${BNORM_TOP_LEVEL})
option(BNORM_BUILD_BENCHMARKS "Build bnorm_bench (Google Benchmark)" OFF)
option(BNORM_BUILD_EXAMPLES "Build examples/" ${BNORM_TOP_LEVEL})
option(BNORM_BUILD_CLI "Build the bnorm command-line tool" ${BNORM_TOP_LEVEL})
option(BNORM_WITH_OPENMP "Run kernels on several threads (OpenMP)" ON)
option(BNORM_WITH_CUDA "Build the CUDA kernels" OFF)
option(BNORM_WITH_MPI "Build multi-process (Open MPI) support" OFF)
option(BNORM_WITH_ONEDNN "Benchmark against oneDNN (peer, bench only)" OFF)
option(BNORM_WITH_LIBTORCH "Benchmark against libtorch (peer, bench only)" OFF)
option(BNORM_WERROR "Treat compiler warnings as errors" OFF)
set(BNORM_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address,undefined")
