// Loads tests/data/*.json golden files (written by scripts/golden/*.py with PyTorch).
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "bnorm/tensor.h"
#include "support/fills.h"

namespace bnorm::test {

inline nlohmann::json load_golden(const std::string& file) {
  const std::string path = std::string(BNORM_TEST_DATA_DIR) + "/" + file;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open golden file " + path);
  return nlohmann::json::parse(in);
}

inline std::vector<double> vec(const nlohmann::json& j) {
  if (j.is_null()) return {};
  return j.get<std::vector<double>>();
}

inline DType golden_dtype(const nlohmann::json& c) {
  return c.at("dtype").get<std::string>() == "float64" ? DType::kFloat64 : DType::kFloat32;
}

inline MemoryFormat golden_format(const nlohmann::json& c) {
  return c.at("channels_last").get<bool>() ? MemoryFormat::kChannelsLast
                                           : MemoryFormat::kContiguous;
}

/// A tensor from a golden field, or undefined when the field is null/absent.
inline Tensor golden_tensor(const nlohmann::json& c, const char* field, const Shape& shape,
                            DType dtype, MemoryFormat format = MemoryFormat::kContiguous) {
  if (!c.contains(field) || c.at(field).is_null()) return Tensor();
  return make_tensor(shape, vec(c.at(field)), dtype, format);
}

}  // namespace bnorm::test
