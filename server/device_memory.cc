#include "server/device_memory.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

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

int64_t AvailableMemoryBytes(const std::string& cgroup_memory_max) {
  const int64_t physical = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  std::ifstream limit_file(cgroup_memory_max);
  int64_t limit = 0;
  // The file holds a byte count, or "max" when unlimited (which fails to parse: no limit).
  if (limit_file >> limit && limit > 0) return std::min(physical, limit);
  return physical;
}

int AvailableCores(const std::string& cgroup_cpu_max) {
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::ifstream limit_file(cgroup_cpu_max);
  int64_t quota = 0, period = 0;
  // "max 100000" when unlimited: the quota fails to parse.
  if (limit_file >> quota >> period && quota > 0 && period > 0) {
    return std::clamp(static_cast<int>((quota + period - 1) / period), 1, hardware);
  }
  return hardware;
}

}  // namespace streamkv::server
