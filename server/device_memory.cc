#include "server/device_memory.h"

#include <unistd.h>

#ifdef STREAMKV_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace streamkv::server {

std::optional<DeviceMemory> QueryDeviceMemory(c10::Device device) {
#ifdef STREAMKV_WITH_CUDA
  if (device.is_cuda()) {
    const c10::DeviceIndex index = device.index() < 0 ? 0 : device.index();
    const c10::cuda::CUDAGuard guard(index);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) return std::nullopt;
    DeviceMemory memory;
    memory.allocated_bytes = stats.allocated_bytes[0].current;  // [0]: all pools together
    memory.reserved_bytes = stats.reserved_bytes[0].current;
    memory.free_bytes = static_cast<int64_t>(free_bytes);
    memory.total_bytes = static_cast<int64_t>(total_bytes);
    return memory;
  }
#endif
  (void)device;
  return std::nullopt;
}

int64_t PhysicalMemoryBytes() {
  return static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
}

}  // namespace streamkv::server
