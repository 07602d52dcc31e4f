// Memory figures of the model device, for budgets and the GPU metrics.
#pragma once

#include <cstdint>
#include <optional>

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

// Physical memory of this machine in bytes.
int64_t PhysicalMemoryBytes();

}  // namespace streamkv::server
