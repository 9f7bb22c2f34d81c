// Tensor: strides per memory format, logical access, copies across formats and dtypes, errors.
#include "bnorm/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace bnorm {
namespace {

TEST(Tensor, UndefinedByDefault) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_THROW(t.data<float>(), ValueError);
}

TEST(Tensor, ContiguousAndChannelsLastStrides) {
  EXPECT_EQ(strides_for({2, 3, 4, 5}, MemoryFormat::kContiguous), (Shape{60, 20, 5, 1}));
  EXPECT_EQ(strides_for({2, 3, 4, 5}, MemoryFormat::kChannelsLast), (Shape{60, 1, 15, 3}));
  EXPECT_EQ(strides_for({2, 3, 4, 5, 6}, MemoryFormat::kChannelsLast), (Shape{360, 1, 90, 18, 3}));
  Tensor t = Tensor::empty({2, 3, 4, 5}, DType::kFloat32, MemoryFormat::kChannelsLast);
  EXPECT_TRUE(t.is_contiguous(MemoryFormat::kChannelsLast));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.memory_format(), MemoryFormat::kChannelsLast);
}

TEST(Tensor, StorageIsAligned) {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor t = Tensor::empty({n}, DType::kFloat64);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.raw_data()) % 64, 0u);
  }
}

TEST(Tensor, FromVectorKeepsLogicalOrderInEveryFormat) {
  std::vector<double> v(2 * 3 * 2 * 2);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  Tensor a = Tensor::from_vector({2, 3, 2, 2}, v);
  Tensor b = Tensor::from_vector({2, 3, 2, 2}, v, MemoryFormat::kChannelsLast);
  EXPECT_EQ(a.to_vector(), v);
  EXPECT_EQ(b.to_vector(), v);
  EXPECT_EQ(a.item({1, 2, 0, 1}), b.item({1, 2, 0, 1}));
  // Channels-last memory: the three channels of (n=0, h=0, w=0) are adjacent.
  const double* p = b.data<double>();
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[1], 4);
  EXPECT_EQ(p[2], 8);
}

TEST(Tensor, CloneToOtherFormatAndDtype) {
  Tensor a = Tensor::from_vector<float>({1, 2, 1, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = a.clone(MemoryFormat::kChannelsLast).to(DType::kFloat64);
  EXPECT_EQ(b.dtype(), DType::kFloat64);
  EXPECT_EQ(b.to_vector(), a.to_vector());
  b.set_item({0, 1, 0, 2}, 42);
  EXPECT_EQ(a.item({0, 1, 0, 2}), 6);  // deep copy
  Tensor shared = a;
  shared.set_item({0, 0, 0, 0}, -1);
  EXPECT_EQ(a.item({0, 0, 0, 0}), -1);  // copies share storage, like at::Tensor
}

TEST(Tensor, OverlapAndSameView) {
  Tensor a = Tensor::zeros({4, 4});
  Tensor b = a;
  Tensor c = a.clone();
  EXPECT_TRUE(a.overlaps(b));
  EXPECT_TRUE(a.is_same_view(b));
  EXPECT_FALSE(a.overlaps(c));
  EXPECT_TRUE(a.reshape({16}).overlaps(a));
  EXPECT_FALSE(a.reshape({16}).is_same_view(a));
}

TEST(Tensor, ErrorsNameTheArgument) {
  try {
    Tensor::empty({2, -1});
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("shape must have sizes >= 0, got (2, -1)"),
              std::string::npos);
  }
  EXPECT_THROW(Tensor::empty({2, 3}, DType::kFloat32, MemoryFormat::kChannelsLast), ValueError);
  EXPECT_THROW(Tensor::from_vector<float>({2, 2}, {1, 2, 3}), ValueError);
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_THROW(t.item({2, 0}), ValueError);
  EXPECT_THROW(t.item({0}), ValueError);
  EXPECT_THROW(t.data<double>(), ValueError);
  EXPECT_THROW(t.reshape({7}), ValueError);
  EXPECT_THROW(t.size(2), ValueError);
  EXPECT_EQ(t.size(-1), 3);
}

}  // namespace
}  // namespace bnorm
