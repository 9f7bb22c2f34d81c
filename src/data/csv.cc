// CSV reading and atomic writing. Checked by tests/data/data_test.cc.
#include "bnorm/data/csv.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "bnorm/error.h"

namespace bnorm::data {

namespace {

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : line) {
    if (ch == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (ch != '\r') {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

}  // namespace

CsvTable read_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  CsvTable t;
  std::string line;
  if (!std::getline(in, line))
    throw IoError(fmt::format("{}:1: expected a header line, the file is empty", path));
  for (const std::string& h : split(line)) t.header.push_back(trim(h));
  const std::size_t cols = t.header.size();
  std::vector<double> values;
  int64_t rows = 0;
  int64_t lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (trim(line).empty()) continue;
    const std::vector<std::string> fields = split(line);
    if (fields.size() != cols) {
      throw IoError(fmt::format("{}:{}: expected {} fields (as the header), got {}", path, lineno,
                                cols, fields.size()));
    }
    std::size_t column = 1;  // 1-based character position of the field, for the message
    for (std::size_t fi = 0; fi < fields.size(); ++fi) {
      const std::string& raw = fields[fi];
      const std::string f = trim(raw);
      double v = 0;
      if (f.empty() || f == "nan" || f == "NaN" || f == "NA") {
        v = std::numeric_limits<double>::quiet_NaN();
      } else {
        const auto r = std::from_chars(f.data(), f.data() + f.size(), v);
        if (r.ec != std::errc() || r.ptr != f.data() + f.size()) {
          throw IoError(fmt::format("{}:{}:{}: expected a number in column '{}', got '{}'", path,
                                    lineno, column, t.header[fi], f));
        }
      }
      values.push_back(v);
      column += raw.size() + 1;
    }
    ++rows;
  }
  t.values = Tensor::from_vector({rows, static_cast<int64_t>(cols)}, values);
  return t;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::filesystem::path p(path);
  const std::string tmp = (p.parent_path().empty() ? std::filesystem::path(".") : p.parent_path()) /
                          fmt::format(".{}.tmp.{}", p.filename().string(), ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw IoError(fmt::format("{}: cannot create: {}", tmp, std::strerror(errno)));
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t w = ::write(fd, content.data() + done, content.size() - done);
    if (w < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw IoError(fmt::format("{}: write failed at byte {}: {}", tmp, done, std::strerror(err)));
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw IoError(fmt::format("{}: cannot flush: {}", tmp, std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw IoError(
        fmt::format("{}: cannot rename {} into place: {}", path, tmp, std::strerror(err)));
  }
}

void write_csv(const std::string& path, const std::vector<std::string>& header,
               const Tensor& values) {
  if (!values.defined() || values.dim() != 2 ||
      values.size(1) != static_cast<int64_t>(header.size())) {
    throw ValueError(
        fmt::format("write_csv: values must be (rows, {}) to match the header", header.size()));
  }
  std::string out;
  for (std::size_t i = 0; i < header.size(); ++i) out += (i ? "," : "") + header[i];
  out += "\n";
  const std::vector<double> v = values.to_vector();
  const int64_t cols = values.size(1);
  for (int64_t r = 0; r < values.size(0); ++r) {
    for (int64_t c = 0; c < cols; ++c) out += fmt::format("{}{}", c ? "," : "", v[r * cols + c]);
    out += "\n";
  }
  write_file_atomic(path, out);
}

}  // namespace bnorm::data
