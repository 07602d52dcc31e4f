// CUDA row gather for cache compaction. Host launcher only; device code in compaction.cu.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace streamkv::kernels::cuda {

// dst[g][i] = src[g][keep[g or 0][i]] for g < groups, i < kept, copying `row_bytes` per row.
//   src:  group g starts at src + g·src_group_bytes; row t of it at + t·row_bytes.
//   dst:  group g starts at dst + g·dst_group_bytes; rows packed (row i at + i·row_bytes).
//         Must not overlap src (the caller gathers into a separate, preallocated buffer).
//   keep: int64 device indices, [kept] when keep_group_stride == 0 (the same rows for every group)
//         or [groups, kept] with keep_group_stride elements between groups; every index must be a
//         valid row of src (not checked here).
// Copies 16 bytes per thread when every pointer, stride and row_bytes is 16-byte aligned, else 4 or
// 1 byte(s). Enqueued on `stream`; returns the launch error; does not synchronise.
cudaError_t LaunchGatherRows(const void* src, int64_t src_group_bytes, void* dst,
                             int64_t dst_group_bytes, const int64_t* keep,
                             int64_t keep_group_stride, int64_t groups, int64_t kept,
                             int64_t row_bytes, cudaStream_t stream);

}  // namespace streamkv::kernels::cuda
