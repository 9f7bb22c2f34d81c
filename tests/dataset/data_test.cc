// IDX reader (gzipped and plain, corrupt and truncated files), CSV reader/writer, DataLoader,
// the bike data set.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "bnorm/data/bikes.h"
#include "bnorm/data/csv.h"
#include "bnorm/data/dataloader.h"
#include "bnorm/data/idx.h"

#include "support/expect_error.h"

namespace bnorm::data {
namespace {

std::string tmp(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "bnorm_data_test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

void write_bytes(const std::string& path, const std::vector<unsigned char>& b, bool gz) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
}

std::vector<unsigned char> idx_images(int n, int rows, int cols) {
  std::vector<unsigned char> b = {0, 0, 8, 3,
                                  0, 0, 0, static_cast<unsigned char>(n),
                                  0, 0, 0, static_cast<unsigned char>(rows),
                                  0, 0, 0, static_cast<unsigned char>(cols)};
  for (int i = 0; i < n * rows * cols; ++i) b.push_back(static_cast<unsigned char>(i % 256));
  return b;
}

template <typename Fn>
void expect_io_error(Fn fn, const std::string& text) {
  test::expect_error<IoError>(fn, text);
}

TEST(Idx, ReadsGzippedAndPlain) {
  for (bool gz : {true, false}) {
    const std::string im = tmp(gz ? "im.gz" : "im"), lb = tmp(gz ? "lb.gz" : "lb");
    write_bytes(im, idx_images(3, 2, 2), gz);
    write_bytes(lb, {0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9}, gz);
    ImageSet s = read_idx_image_set(im, lb);
    EXPECT_EQ(s.images.shape(), (Shape{3, 4}));
    EXPECT_NEAR(s.images.item({1, 1}), 5 / 255.0, 1e-7);
    EXPECT_EQ(s.labels, (std::vector<int64_t>{7, 0, 9}));
  }
}

TEST(Idx, BadFilesNameFileOffsetAndExpectation) {
  const std::string p = tmp("bad.idx");
  write_bytes(p, {1, 2, 8, 3}, false);
  expect_io_error([&] { read_idx(p); }, "bad.idx: byte 0: expected an IDX magic number");
  write_bytes(p, {0, 0, 0x0D, 1, 0, 0, 0, 1}, false);
  expect_io_error([&] { read_idx(p); }, "byte 2: expected IDX type 0x08");
  auto b = idx_images(3, 2, 2);
  b.resize(b.size() - 5);
  write_bytes(p, b, true);
  expect_io_error([&] { read_idx(p); }, "truncated at byte 23: expected 5 more bytes of data");
  expect_io_error([&] { read_idx(tmp("missing.gz")); }, "missing.gz: no such file");
  expect_io_error([&] { load_fashion_mnist(tmp("nodir")); },
                  "install Debian's dataset-fashion-mnist");
  const std::string lb = tmp("lb3");
  write_bytes(lb, {0, 0, 8, 1, 0, 0, 0, 2, 1, 2}, false);
  write_bytes(tmp("im3"), idx_images(3, 2, 2), false);
  expect_io_error([&] { read_idx_image_set(tmp("im3"), lb); }, "has 3 images but");
}

TEST(Csv, RoundTripAndErrors) {
  const std::string p = tmp("t.csv");
  Tensor v = Tensor::from_vector<double>({2, 2}, {1.5, 300000, 0.1, 1e-300});
  write_csv(p, {"age", "km"}, v);
  CsvTable t = read_csv(p);
  EXPECT_EQ(t.header, (std::vector<std::string>{"age", "km"}));
  EXPECT_EQ(t.values.to_vector(), v.to_vector());  // full precision
  std::ofstream(p) << "a,b\n1,2\n3\n";
  expect_io_error([&] { read_csv(p); }, "t.csv:3: expected 2 fields (as the header), got 1");
  std::ofstream(p) << "a,b\n1,2\n3,x7\n";
  expect_io_error([&] { read_csv(p); }, "t.csv:3:3: expected a number in column 'b', got 'x7'");
}

TEST(DataLoader, SeededShuffleCoversEverySampleOnce) {
  std::vector<float> v(10);
  for (int i = 0; i < 10; ++i) v[i] = static_cast<float>(i);
  std::vector<int64_t> labels(10);
  for (int i = 0; i < 10; ++i) labels[i] = i;
  DataLoader a(Tensor::from_vector<float>({10, 1}, v), labels, Tensor(),
               {.batch_size = 3, .seed = 5});
  DataLoader b(Tensor::from_vector<float>({10, 1}, v), labels, Tensor(),
               {.batch_size = 3, .seed = 5});
  EXPECT_EQ(a.size(), 4);
  std::set<int64_t> seen;
  for (int64_t i = 0; i < a.size(); ++i) {
    Batch x = a.batch(i), y = b.batch(i);
    EXPECT_EQ(x.labels, y.labels);  // same seed, same order
    for (int64_t k = 0; k < x.x.size(0); ++k) {
      EXPECT_EQ(x.x.item({k, 0}), static_cast<double>(x.labels[k]));
      seen.insert(x.labels[k]);
    }
  }
  EXPECT_EQ(seen.size(), 10u);
  DataLoader c(Tensor::from_vector<float>({10, 1}, v), labels, Tensor(),
               {.batch_size = 3, .drop_last = true});
  EXPECT_EQ(c.size(), 3);
  EXPECT_THROW(DataLoader(Tensor::from_vector<float>({10, 1}, v), {1, 2}, Tensor(), {}),
               ValueError);
  // A batch larger than the data: with drop_last there would be no batch at all.
  test::expect_error<ValueError>(
      [&] {
        DataLoader(Tensor::from_vector<float>({10, 1}, v), labels, Tensor(),
                   {.batch_size = 11, .drop_last = true});
      },
      "batch_size must be <= N=10 (the number of samples) with drop_last, got 11");
  DataLoader whole(Tensor::from_vector<float>({10, 1}, v), labels, Tensor(),
                   {.batch_size = 10, .drop_last = true});
  EXPECT_EQ(whole.size(), 1);
  DataLoader short_batch(Tensor::from_vector<float>({10, 1}, v), labels, Tensor(),
                         {.batch_size = 11});  // without drop_last: one short batch
  EXPECT_EQ(short_batch.size(), 1);
}

TEST(Bikes, RangesOfTheSeedExample) {
  Bikes b = make_bikes(500, 1);
  for (int64_t i = 0; i < 500; ++i) {
    EXPECT_GE(b.features.item({i, 0}), 0);
    EXPECT_LE(b.features.item({i, 0}), 20);
    EXPECT_GE(b.features.item({i, 1}), 0);
    EXPECT_LE(b.features.item({i, 1}), 300000);
    EXPECT_GE(b.price.item({i, 0}), 50);
  }
  EXPECT_EQ(make_bikes(5, 9).features.to_vector(), make_bikes(5, 9).features.to_vector());
}

}  // namespace
}  // namespace bnorm::data
