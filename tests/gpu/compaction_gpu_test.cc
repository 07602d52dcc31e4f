// CompactRows on CUDA (the gather kernel) against index_select/gather on the same data. Every test
// skips itself without a CUDA GPU.
#include "kernels/compaction.h"

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace streamkv::kernels {
namespace {

// Strictly increasing random subset of [0, length) of size `kept`, int64 on CPU.
at::Tensor RandomKeep(int64_t length, int64_t kept) {
  return std::get<0>(at::randperm(length, at::kLong).narrow(0, 0, kept).sort());
}

struct Case {
  std::vector<int64_t> shape;  // [G, capacity, ...]
  at::ScalarType dtype;
  int64_t length, kept;
  bool per_group;
};

std::string CaseName(const Case& c) {
  std::string name = std::string(c10::toString(c.dtype)) + " [";
  for (int64_t s : c.shape) name += std::to_string(s) + ",";
  return name + "] length " + std::to_string(c.length) + " kept " + std::to_string(c.kept) +
         (c.per_group ? " per group" : " shared");
}

TEST(CompactionGpuTest, MatchesIndexSelect) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  const std::vector<Case> cases = {
      {{16, 300, 64}, at::kBFloat16, 257, 100, false},  // 128-byte rows: 16-byte copies
      {{16, 300, 64}, at::kBFloat16, 257, 100, true},
      {{2, 50, 128}, at::kHalf, 50, 50, false},    // keep everything
      {{2, 50, 128}, at::kHalf, 50, 1, true},      // keep one row
      {{3, 40, 3}, at::kFloat, 33, 20, true},      // 12-byte rows: 4-byte copies
      {{4, 40}, at::kByte, 39, 17, false},         // 1-byte rows (token metadata)
      {{4, 40}, at::kInt, 40, 21, true},           // 4-byte rows
      {{24, 2000}, at::kFloat, 1999, 1000, true},  // per-head scores
      {{1, 5, 3}, at::kByte, 5, 2, false},         // 3-byte rows: byte copies
  };
  at::manual_seed(4);
  for (const Case& c : cases) {
    SCOPED_TRACE(CaseName(c));
    const at::Tensor original = at::randint(0, 100, c.shape, at::kLong).to(c.dtype);
    const int64_t groups = c.shape[0];
    at::Tensor keep;
    if (c.per_group) {
      std::vector<at::Tensor> rows;
      for (int64_t g = 0; g < groups; ++g) rows.push_back(RandomKeep(c.length, c.kept));
      keep = at::stack(rows);
    } else {
      keep = RandomKeep(c.length, c.kept);
    }
    at::Tensor expected;
    const at::Tensor flat = original.view({groups, c.shape[1], -1});
    if (c.per_group) {
      expected = flat.gather(1, keep.unsqueeze(-1).expand({groups, c.kept, flat.size(2)}));
    } else {
      expected = flat.index_select(1, keep);
    }
    // Keep indices on the GPU and on the CPU are both accepted.
    for (bool keep_on_gpu : {true, false}) {
      at::Tensor data = original.to(at::kCUDA);
      CompactRows(data, keep_on_gpu ? keep.to(at::kCUDA) : keep, c.length);
      const at::Tensor front = data.cpu().view({groups, c.shape[1], -1}).narrow(1, 0, c.kept);
      EXPECT_TRUE(at::equal(front, expected)) << "keep on " << (keep_on_gpu ? "gpu" : "cpu");
    }
  }
}

TEST(CompactionGpuTest, MisalignedViewsStillCompact) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  // A contiguous tensor whose storage starts 2 bytes into an allocation: the kernel must fall back
  // from 16-byte copies.
  const at::Tensor storage = at::arange(1 + 2 * 30 * 8, at::kShort).to(at::kCUDA);
  at::Tensor data = storage.narrow(0, 1, 2 * 30 * 8).view({2, 30, 8});
  const at::Tensor expected = data.cpu().index_select(1, at::arange(0, 30, 3, at::kLong));
  CompactRows(data, at::arange(0, 30, 3, at::kLong), 30);
  EXPECT_TRUE(at::equal(data.cpu().narrow(1, 0, 10), expected));
}

}  // namespace
}  // namespace streamkv::kernels
