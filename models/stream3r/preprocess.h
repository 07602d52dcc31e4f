// Frame preprocessing of the VGGT family: resize to a fixed width, height a multiple of the patch.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace streamkv::models::stream3r {

// Geometry of preprocessing an H×W frame: resize to target_width × resized_height, where
// resized_height = round_half_even(H · target_width / W / patch) · patch, then, when taller than
// target_width, a centred crop of target_width rows (VGGT's "crop" mode).
struct PreprocessGeometry {
  int64_t resized_height = 0;
  int64_t crop_top = 0;
  int64_t height = 0;  // after cropping; a multiple of patch
  int64_t width = 0;   // target_width
};

// Throws c10::Error when the frame is empty or would shrink to no patch row.
PreprocessGeometry PreprocessGeometryFor(int64_t height, int64_t width, int64_t target_width,
                                         int64_t patch);

// image: [3, H, W] RGB, uint8 or float32 in [0, 1]. Returns [3, height, width] float32 in [0, 1]
// on the image's device, resized with antialiased bicubic interpolation (as PIL's BICUBIC).
at::Tensor PreprocessFrame(const at::Tensor& image, int64_t target_width, int64_t patch);

}  // namespace streamkv::models::stream3r
