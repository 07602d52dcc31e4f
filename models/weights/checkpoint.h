// Checkpoint tensors by name, read from safetensors files, and the writer for test checkpoints.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamkv::models {

// The tensors of one safetensors file, memory-mapped. Modules take their parameters by upstream
// name; once a model is built, CheckAllTaken reports keys nobody asked for. Not thread-safe.
class Checkpoint {
 public:
  // Maps `path` and parses its header. Errors name the file and what is wrong: missing file,
  // truncated file, malformed header, unsupported dtype (F32, F16 and BF16 are supported), a
  // tensor whose byte range lies outside the data section.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // The tensor `name` as float32 on CPU (a copy, so the mapping may be closed afterwards), checked
  // to have `shape`. Throws c10::Error naming the key when it is missing or its shape differs.
  at::Tensor Take(absl::string_view name, at::IntArrayRef shape);
  bool Contains(absl::string_view name) const;

  // InvalidArgument listing (up to 10 of) the keys never taken, e.g. from a different model.
  absl::Status CheckAllTaken() const;

  std::vector<std::string> Keys() const;  // sorted

 private:
  struct Impl;
  explicit Checkpoint(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Writes `tensors` (any of float32, float16, bfloat16; CPU) as a safetensors file.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace streamkv::models
