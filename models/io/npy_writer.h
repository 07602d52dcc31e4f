// Writing NumPy .npy files from raw bytes, without LibTorch: shared by models/ (tensors) and the
// client (received outputs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace streamkv {

// Writes `data` (row-major elements of `descr`, e.g. "<f4", "<f2", "|u1", "<i4", "<i8") with
// `shape` as a .npy 1.0 file. InvalidArgument naming the file when data.size() does not match
// the shape or the file cannot be written.
absl::Status WriteNpyBytes(const std::string& path, absl::string_view descr,
                           const std::vector<int64_t>& shape, absl::string_view data);

}  // namespace streamkv
