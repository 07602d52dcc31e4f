// JPEG and PNG decoding (libjpeg-turbo, libpng) into RGB frames.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamkv::models {

struct ImageLimits {
  int64_t max_width = 8192;
  int64_t max_height = 8192;
};

// Decodes JPEG or PNG bytes (recognised by their signature) into uint8 RGB [3, H, W]. Grey,
// palette and alpha images are converted to RGB. InvalidArgument for empty, corrupt or truncated
// data, other formats, or images beyond `limits` (checked before decoding the pixels).
absl::StatusOr<at::Tensor> DecodeImage(absl::string_view bytes, const ImageLimits& limits = {});

// Reads and decodes an image file; errors name the file.
absl::StatusOr<at::Tensor> ReadImageFile(const std::string& path, const ImageLimits& limits = {});

}  // namespace streamkv::models
