// NumPy .npy files: the exchange format of the offline command and its comparisons with upstream.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace streamkv::models {

// Writes a CPU tensor (float32, float16, uint8, int32 or int64; made contiguous) in .npy 1.0
// format, C order, little-endian.
absl::Status WriteNpy(const std::string& path, const at::Tensor& tensor);

// Reads a C-order, little-endian .npy file of dtype <f4, <f2, |u1, <i4 or <i8 (format 1.0-3.0).
// Errors name the file and what is wrong (magic, header, dtype, Fortran order, truncated data).
absl::StatusOr<at::Tensor> ReadNpy(const std::string& path);

}  // namespace streamkv::models
