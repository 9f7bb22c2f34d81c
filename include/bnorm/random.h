// The process-wide random generator used for weight initialization, dropout and data shuffling,
// seeded like torch.manual_seed so that runs are reproducible.
#pragma once

#include <cstdint>
#include <random>

namespace bnorm {

/// Seeds the global generator (PyTorch: torch.manual_seed).
void manual_seed(uint64_t seed);
/// The global generator.
std::mt19937_64& generator();

}  // namespace bnorm
