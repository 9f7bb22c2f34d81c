// Checkpoints as safetensors files with PyTorch state-dict keys ("0.weight", "1.running_mean",
// "1.num_batches_tracked", …), so weights move between PyTorch and bnorm both ways
// (safetensors.torch.save_file / load_file). Written atomically. Checked by
// tests/io/safetensors_test.cc.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/nn/module.h"

namespace bnorm::io {

/// Saves every parameter and buffer of `module` (float32/float64 as F32/F64, integer buffers as
/// I64 scalars) plus string `metadata`, atomically (temp file + fsync + rename).
/// Throws IoError when the file cannot be written.
void save_safetensors(nn::Module& module, const std::string& path,
                      const std::map<std::string, std::string>& metadata = {});

/// Loads a file written by save_safetensors or by PyTorch into `module`, strictly: every key of
/// the module must be present with the same shape and dtype, and no other key may be. Throws
/// IoError naming the file, the byte offset and the expectation for a truncated or corrupt file,
/// and naming the key for a checkpoint of another architecture. Nothing is modified on error.
void load_safetensors(nn::Module& module, const std::string& path);

/// Saves named tensors (e.g. an optimizer's state) the same way, atomically.
void save_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::string& path,
                      const std::map<std::string, std::string>& metadata = {});

/// Reads every F32/F64 tensor of a safetensors file, in file order. Throws IoError as above.
std::vector<std::pair<std::string, Tensor>> load_safetensors_tensors(const std::string& path);

/// Reads only the metadata of a safetensors file.
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

}  // namespace bnorm::io
