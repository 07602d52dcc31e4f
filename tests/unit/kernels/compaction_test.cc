#include "kernels/compaction.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace streamkv::kernels {
namespace {

using ::testing::HasSubstr;

// [G, capacity, 2] rows whose elements both equal 1000·g + row.
at::Tensor NumberedRows(int64_t groups, int64_t capacity, at::ScalarType dtype) {
  at::Tensor ids = at::arange(capacity).unsqueeze(0) + 1000 * at::arange(groups).unsqueeze(1);
  return ids.unsqueeze(-1).expand({groups, capacity, 2}).contiguous().to(dtype);
}

std::string ErrorOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(CompactRowsTest, SharedKeepListMovesRowsOfEveryGroupInOrder) {
  at::Tensor data = NumberedRows(3, 8, at::kFloat);
  CompactRows(data, at::tensor({0, 2, 5, 6}, at::kLong), /*length=*/7);
  for (int64_t g = 0; g < 3; ++g) {
    const at::Tensor expected = at::tensor({0, 2, 5, 6}, at::kFloat) + 1000 * g;
    EXPECT_TRUE(at::equal(data[g].narrow(0, 0, 4).select(1, 0), expected)) << "group " << g;
    EXPECT_TRUE(at::equal(data[g].narrow(0, 0, 4).select(1, 1), expected)) << "group " << g;
  }
}

TEST(CompactRowsTest, PerGroupKeepListsDiffer) {
  at::Tensor data = NumberedRows(2, 6, at::kInt);
  CompactRows(data, at::tensor({1, 3, 4, 0, 1, 5}, at::kLong).view({2, 3}), /*length=*/6);
  EXPECT_TRUE(at::equal(data[0].narrow(0, 0, 3).select(1, 0), at::tensor({1, 3, 4}, at::kInt)));
  EXPECT_TRUE(
      at::equal(data[1].narrow(0, 0, 3).select(1, 1), at::tensor({1000, 1001, 1005}, at::kInt)));
}

TEST(CompactRowsTest, MatchesIndexSelectOnRandomKeepLists) {
  at::manual_seed(3);
  for (int trial = 0; trial < 5; ++trial) {
    at::Tensor data = at::randn({4, 50, 3});
    const at::Tensor keep = std::get<0>(at::randperm(40).narrow(0, 0, 17).sort());
    const at::Tensor expected = data.index_select(1, keep);
    CompactRows(data, keep, /*length=*/40);
    EXPECT_TRUE(at::equal(data.narrow(1, 0, 17), expected));
  }
}

TEST(CompactRowsTest, KeepingEverythingOrNothingIsANoOp) {
  at::Tensor data = NumberedRows(1, 4, at::kFloat);
  const at::Tensor before = data.clone();
  CompactRows(data, at::arange(4, at::kLong), 4);
  EXPECT_TRUE(at::equal(data, before));
  CompactRows(data, at::empty({0}, at::kLong), 4);
  EXPECT_TRUE(at::equal(data, before));
}

TEST(CompactRowsTest, RejectsMalformedKeepLists) {
  at::Tensor data = NumberedRows(2, 6, at::kFloat);
  EXPECT_THAT(ErrorOf([&] { CompactRows(data, at::tensor({2, 1}, at::kLong), 6); }),
              HasSubstr("strictly increasing"));
  EXPECT_THAT(ErrorOf([&] { CompactRows(data, at::tensor({0, 5}, at::kLong), 4); }),
              HasSubstr("[0, length=4)"));
  EXPECT_THAT(ErrorOf([&] { CompactRows(data, at::tensor({0, 1}, at::kInt), 6); }),
              HasSubstr("int64"));
  EXPECT_THAT(ErrorOf([&] { CompactRows(data, at::zeros({3, 1}, at::kLong), 6); }),
              HasSubstr("keep must be [K] or [G=2, K]"));
  EXPECT_THAT(ErrorOf([&] { CompactRows(data, at::arange(2, at::kLong), 7); }),
              HasSubstr("capacity=6"));
}

}  // namespace
}  // namespace streamkv::kernels
