// IDX reader on zlib (gzread reads plain files too). Checked by tests/data/idx_test.cc.
#include "bnorm/data/idx.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "bnorm/error.h"

namespace bnorm::data {

namespace {

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<std::remove_pointer_t<gzFile>, GzCloser>;

// Reads exactly `n` bytes at (decompressed) offset `offset` or throws naming what was expected.
void read_exact(gzFile f, const std::string& path, uint64_t offset, void* dst, std::size_t n,
                const char* what) {
  std::size_t done = 0;
  while (done < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
    const int got = gzread(f, static_cast<char*>(dst) + done, chunk);
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      throw IoError(fmt::format("{}: corrupt data at byte {}: {} (reading {})", path, offset + done,
                                msg ? msg : "zlib error", what));
    }
    if (got == 0) {
      throw IoError(fmt::format("{}: truncated at byte {}: expected {} more bytes of {}", path,
                                offset + done, n - done, what));
    }
    done += static_cast<std::size_t>(got);
  }
}

uint32_t be32(const unsigned char* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  if (!std::filesystem::exists(path)) throw IoError(fmt::format("{}: no such file", path));
  GzPtr f(gzopen(path.c_str(), "rb"));
  if (!f) throw IoError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  unsigned char magic[4];
  read_exact(f.get(), path, 0, magic, 4, "the IDX magic number");
  if (magic[0] != 0 || magic[1] != 0) {
    throw IoError(
        fmt::format("{}: byte 0: expected an IDX magic number 00 00 <type> <dims>, got "
                    "{:02x} {:02x} {:02x} {:02x}",
                    path, magic[0], magic[1], magic[2], magic[3]));
  }
  if (magic[2] != 0x08) {
    throw IoError(fmt::format("{}: byte 2: expected IDX type 0x08 (unsigned byte), got 0x{:02x}",
                              path, magic[2]));
  }
  const int ndims = magic[3];
  if (ndims < 1 || ndims > 4) {
    throw IoError(fmt::format("{}: byte 3: expected 1 to 4 dimensions, got {}", path, ndims));
  }
  IdxArray a;
  uint64_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    unsigned char b[4];
    read_exact(f.get(), path, 4 + 4 * d, b, 4, "a dimension size");
    a.dims.push_back(be32(b));
    total *= be32(b);
  }
  if (total > (uint64_t{1} << 34)) {
    throw IoError(fmt::format("{}: header declares {} values, more than bnorm reads", path, total));
  }
  const uint64_t header = 4 + 4 * static_cast<uint64_t>(ndims);
  a.values.resize(static_cast<std::size_t>(total));
  read_exact(f.get(), path, header, a.values.data(), a.values.size(), "data");
  char extra;
  if (gzread(f.get(), &extra, 1) > 0) {
    throw IoError(fmt::format("{}: byte {}: expected end of file after {} values, found more data",
                              path, header + total, total));
  }
  return a;
}

ImageSet read_idx_image_set(const std::string& images_path, const std::string& labels_path) {
  IdxArray im = read_idx(images_path);
  IdxArray lb = read_idx(labels_path);
  if (im.dims.size() != 3) {
    throw IoError(
        fmt::format("{}: expected an images file (3 dimensions, magic 2051), got {} "
                    "dimensions",
                    images_path, im.dims.size()));
  }
  if (lb.dims.size() != 1) {
    throw IoError(
        fmt::format("{}: expected a labels file (1 dimension, magic 2049), got {} "
                    "dimensions",
                    labels_path, lb.dims.size()));
  }
  if (im.dims[0] != lb.dims[0]) {
    throw IoError(fmt::format("{} has {} images but {} has {} labels", images_path, im.dims[0],
                              labels_path, lb.dims[0]));
  }
  ImageSet s;
  s.rows = im.dims[1];
  s.cols = im.dims[2];
  const int64_t n = im.dims[0], px = s.rows * s.cols;
  s.images = Tensor::empty({n, px});
  float* p = s.images.data<float>();
  for (int64_t i = 0; i < n * px; ++i) p[i] = static_cast<float>(im.values[i]) / 255.0f;
  s.labels.resize(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (lb.values[i] > 9) {
      throw IoError(fmt::format("{}: byte {}: expected a label 0..9, got {}", labels_path, 8 + i,
                                lb.values[i]));
    }
    s.labels[i] = lb.values[i];
  }
  return s;
}

TrainTest load_fashion_mnist(const std::string& dir) {
  auto path = [&](const char* name) {
    for (const char* suffix : {".gz", ""}) {
      const std::string p = fmt::format("{}/{}{}", dir, name, suffix);
      if (std::filesystem::exists(p)) return p;
    }
    throw IoError(
        fmt::format("{}/{}.gz: no such file; install Debian's dataset-fashion-mnist "
                    "(scripts/setup-debian.sh) or pass --data DIR",
                    dir, name));
  };
  TrainTest t;
  t.train = read_idx_image_set(path("train-images-idx3-ubyte"), path("train-labels-idx1-ubyte"));
  t.test = read_idx_image_set(path("t10k-images-idx3-ubyte"), path("t10k-labels-idx1-ubyte"));
  return t;
}

const char* fashion_mnist_class_name(int64_t label) {
  static const char* kNames[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return label >= 0 && label < 10 ? kNames[label] : "?";
}

}  // namespace bnorm::data
