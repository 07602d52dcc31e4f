// CUDA row gather for cache compaction: one thread per vector-sized unit of a kept row.
#include "kernels/cuda/compaction.cuh"

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

namespace streamkv::kernels::cuda {
namespace {

// Copies, for every group g (grid y, strided) and every unit u < kept·units_per_row (grid x,
// strided), unit u % units_per_row of kept row u / units_per_row. Each unit is written by exactly
// one thread; src and dst do not overlap, so no ordering is needed.
template <typename Unit>
__global__ void GatherRowsKernel(const char* __restrict__ src, int64_t src_group_bytes,
                                 char* __restrict__ dst, int64_t dst_group_bytes,
                                 const int64_t* __restrict__ keep, int64_t keep_group_stride,
                                 int64_t groups, int64_t kept, int64_t units_per_row) {
  const int64_t units = kept * units_per_row;
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const Unit* src_group = reinterpret_cast<const Unit*>(src + g * src_group_bytes);
    Unit* dst_group = reinterpret_cast<Unit*>(dst + g * dst_group_bytes);
    const int64_t* rows = keep + g * keep_group_stride;
    for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
         u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t i = u / units_per_row;
      const int64_t w = u - i * units_per_row;
      dst_group[u] = src_group[rows[i] * units_per_row + w];
    }
  }
}

template <typename Unit>
cudaError_t Launch(const void* src, int64_t src_group_bytes, void* dst, int64_t dst_group_bytes,
                   const int64_t* keep, int64_t keep_group_stride, int64_t groups, int64_t kept,
                   int64_t row_bytes, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t units = kept * (row_bytes / static_cast<int64_t>(sizeof(Unit)));
  const int64_t blocks_x = std::min<int64_t>((units + kThreads - 1) / kThreads, 65535);
  const int64_t blocks_y = std::min<int64_t>(groups, 65535);
  GatherRowsKernel<Unit><<<dim3(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y)),
                           kThreads, 0, stream>>>(
      static_cast<const char*>(src), src_group_bytes, static_cast<char*>(dst), dst_group_bytes,
      keep, keep_group_stride, groups, kept, row_bytes / static_cast<int64_t>(sizeof(Unit)));
  return cudaGetLastError();
}

bool Aligned(const void* p, int64_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

cudaError_t LaunchGatherRows(const void* src, int64_t src_group_bytes, void* dst,
                             int64_t dst_group_bytes, const int64_t* keep,
                             int64_t keep_group_stride, int64_t groups, int64_t kept,
                             int64_t row_bytes, cudaStream_t stream) {
  if (groups < 0 || kept < 0 || row_bytes < 0 || keep_group_stride < 0) {
    return cudaErrorInvalidValue;
  }
  if (groups == 0 || kept == 0 || row_bytes == 0) return cudaSuccess;
  if (src == nullptr || dst == nullptr || keep == nullptr) return cudaErrorInvalidValue;
  const auto all_aligned = [&](int64_t a) {
    return Aligned(src, a) && Aligned(dst, a) && src_group_bytes % a == 0 &&
           dst_group_bytes % a == 0 && row_bytes % a == 0;
  };
  if (all_aligned(16)) {
    return Launch<uint4>(src, src_group_bytes, dst, dst_group_bytes, keep, keep_group_stride,
                         groups, kept, row_bytes, stream);
  }
  if (all_aligned(4)) {
    return Launch<uint32_t>(src, src_group_bytes, dst, dst_group_bytes, keep, keep_group_stride,
                            groups, kept, row_bytes, stream);
  }
  return Launch<unsigned char>(src, src_group_bytes, dst, dst_group_bytes, keep, keep_group_stride,
                               groups, kept, row_bytes, stream);
}

}  // namespace streamkv::kernels::cuda
