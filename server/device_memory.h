// Memory figures of the model device and the resources of this process, for budgets, worker
// counts and the GPU metrics.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <c10/core/Device.h>

namespace streamkv::server {

struct DeviceMemory {
  int64_t allocated_bytes = 0;  // handed out by LibTorch's caching allocator
  int64_t reserved_bytes = 0;   // held by the caching allocator
  int64_t free_bytes = 0;       // free on the device
  int64_t total_bytes = 0;
};

// The figures of a CUDA device; nullopt for the CPU or a build without CUDA.
std::optional<DeviceMemory> QueryDeviceMemory(c10::Device device);

// Memory this process may use in bytes: the machine's physical memory, or the cgroup's limit
// (cgroup v2 memory.max, e.g. a Kubernetes memory limit) when lower. `cgroup_memory_max` is the
// file to read (a parameter for tests).
int64_t AvailableMemoryBytes(const std::string& cgroup_memory_max = "/sys/fs/cgroup/memory.max");

// CPU cores this process may use: the hardware's, or the cgroup's quota rounded up when lower
// (cgroup v2 cpu.max "<quota> <period>", e.g. a Kubernetes CPU limit).
int AvailableCores(const std::string& cgroup_cpu_max = "/sys/fs/cgroup/cpu.max");

}  // namespace streamkv::server
