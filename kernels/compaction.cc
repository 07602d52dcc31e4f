#include "kernels/compaction.h"

#include <cstring>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#ifdef STREAMKV_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/compaction.cuh"
#endif

namespace streamkv::kernels {
namespace {

// Shapes and types only: no device synchronisation.
void CheckShapes(const at::Tensor& data, const at::Tensor& keep, int64_t length) {
  TORCH_CHECK(data.dim() >= 2, "CompactRows: data must be [G, capacity, ...], got ", data.sizes());
  TORCH_CHECK(data.is_contiguous(), "CompactRows: data must be contiguous");
  TORCH_CHECK(keep.scalar_type() == at::kLong, "CompactRows: keep must be int64, got ",
              keep.scalar_type());
  TORCH_CHECK(keep.dim() == 1 || (keep.dim() == 2 && keep.size(0) == data.size(0)),
              "CompactRows: keep must be [K] or [G=", data.size(0), ", K], got ", keep.sizes());
  TORCH_CHECK(length >= 0 && length <= data.size(1), "CompactRows: length ", length,
              " outside [0, capacity=", data.size(1), "]");
  TORCH_CHECK(keep.size(-1) <= length, "CompactRows: keeping ", keep.size(-1), " rows of ",
              length);
}

// keep[i] ≥ i because indices strictly increase, so copying front to back never overwrites a row
// that is still to be read: the move needs no scratch memory.
void CompactRowsCpu(at::Tensor& data, const at::Tensor& keep) {
  const at::Tensor keep_cpu = keep.contiguous();
  const int64_t groups = data.size(0);
  const int64_t capacity = data.size(1);
  const int64_t row_bytes = data.numel() / (groups * capacity) * data.element_size();
  const int64_t kept = keep_cpu.size(-1);
  const bool per_group = keep_cpu.dim() == 2;
  auto* base = static_cast<char*>(data.data_ptr());
  const int64_t* indices = keep_cpu.data_ptr<int64_t>();
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      char* group = base + g * capacity * row_bytes;
      const int64_t* rows = indices + (per_group ? g * kept : 0);
      for (int64_t i = 0; i < kept; ++i) {
        if (rows[i] != i) std::memcpy(group + i * row_bytes, group + rows[i] * row_bytes, row_bytes);
      }
    }
  });
}

// Any device: gather the kept rows into a scratch tensor, then copy them to the front.
void CompactRowsGather(at::Tensor& data, const at::Tensor& keep) {
  const int64_t kept = keep.size(-1);
  at::Tensor index = keep.to(data.device());
  at::Tensor flat = data.view({data.size(0), data.size(1), -1});
  at::Tensor gathered =
      index.dim() == 1
          ? flat.index_select(1, index)
          : flat.gather(1, index.unsqueeze(-1).expand({flat.size(0), kept, flat.size(2)}));
  flat.narrow(1, 0, kept).copy_(gathered);
}

#ifdef STREAMKV_WITH_CUDA
// CUDA: the gather kernel (kernels/cuda/compaction.cu) copies the kept rows into a scratch tensor
// of K rows per group, which then goes back to the front of each group on the same stream.
void CompactRowsCuda(at::Tensor& data, const at::Tensor& keep) {
  const c10::cuda::CUDAGuard device_guard(data.device());
  const at::Tensor index = keep.to(data.device()).contiguous();
  const int64_t groups = data.size(0);
  const int64_t capacity = data.size(1);
  const int64_t kept = index.size(-1);
  const int64_t row_bytes = data.numel() / (groups * capacity) * data.element_size();
  at::Tensor flat = data.view({groups, capacity, -1});
  at::Tensor gathered = at::empty({groups, kept, flat.size(2)}, data.options());
  const cudaError_t err = cuda::LaunchGatherRows(
      data.data_ptr(), capacity * row_bytes, gathered.data_ptr(), kept * row_bytes,
      index.data_ptr<int64_t>(), /*keep_group_stride=*/index.dim() == 2 ? kept : 0, groups, kept,
      row_bytes, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "CompactRows: CUDA gather failed: ", cudaGetErrorString(err));
  flat.narrow(1, 0, kept).copy_(gathered);
}
#endif  // STREAMKV_WITH_CUDA

}  // namespace

void CheckKeepList(const at::Tensor& keep, int64_t length) {
  TORCH_CHECK(keep.scalar_type() == at::kLong, "CompactRows: keep must be int64, got ",
              keep.scalar_type());
  const int64_t kept = keep.size(-1);
  if (kept == 0) return;
  TORCH_CHECK(keep.min().item<int64_t>() >= 0 && keep.max().item<int64_t>() < length,
              "CompactRows: keep indices must lie in [0, length=", length, ")");
  if (kept > 1) {
    const at::Tensor steps = keep.narrow(-1, 1, kept - 1) - keep.narrow(-1, 0, kept - 1);
    TORCH_CHECK(steps.min().item<int64_t>() > 0,
                "CompactRows: keep indices must be strictly increasing");
  }
}

void CompactRows(at::Tensor& data, const at::Tensor& keep, int64_t length, bool keep_checked) {
  CheckShapes(data, keep, length);
  if (!keep_checked) CheckKeepList(keep, length);
  if (keep.size(-1) == 0) return;
  if (data.is_cpu() && keep.is_cpu()) {
    CompactRowsCpu(data, keep);
#ifdef STREAMKV_WITH_CUDA
  } else if (data.is_cuda()) {
    CompactRowsCuda(data, keep);
#endif
  } else {
    CompactRowsGather(data, keep);
  }
}

}  // namespace streamkv::kernels
