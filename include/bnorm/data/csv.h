// CSV files of numbers with a header row; files are written atomically (temp file + rename).
// Checked by tests/data/data_test.cc.
#pragma once

#include <string>
#include <vector>

#include "bnorm/tensor.h"

namespace bnorm::data {

struct CsvTable {
  std::vector<std::string> header;
  Tensor values;  ///< (rows, columns) float64; empty fields and "nan" read as NaN
};

/// Reads a comma-separated file whose first line is the header. Throws IoError naming
/// path:line:column for a ragged row ("expected 3 fields, got 2") or a field that is not a number.
CsvTable read_csv(const std::string& path);

/// Writes header + rows with full precision, atomically: a reader never sees a partial file
/// and a failure leaves any previous file intact. Throws IoError when it cannot write.
void write_csv(const std::string& path, const std::vector<std::string>& header,
               const Tensor& values);

/// Writes `content` to `path` atomically (temp file in the same directory, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace bnorm::data
