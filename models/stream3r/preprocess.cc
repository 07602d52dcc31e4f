#include "models/stream3r/preprocess.h"

#include <cmath>

#include <ATen/ATen.h>

namespace streamkv::models::stream3r {

PreprocessGeometry PreprocessGeometryFor(int64_t height, int64_t width, int64_t target_width,
                                         int64_t patch) {
  TORCH_CHECK(height > 0 && width > 0, "frame is empty (", height, "x", width, ")");
  PreprocessGeometry g;
  g.width = target_width;
  // std::nearbyint rounds half to even, as Python's round().
  g.resized_height = static_cast<int64_t>(
                         std::nearbyint(static_cast<double>(height) * target_width / width / patch)) *
                     patch;
  TORCH_CHECK(g.resized_height >= patch, "frame ", height, "x", width,
              " is too wide: resized to width ", target_width, " it has no row of ", patch,
              "-pixel patches");
  g.height = std::min(g.resized_height, target_width);
  g.crop_top = (g.resized_height - g.height) / 2;
  return g;
}

at::Tensor PreprocessFrame(const at::Tensor& image, int64_t target_width, int64_t patch) {
  TORCH_CHECK(image.dim() == 3 && image.size(0) == 3, "frame must be [3, H, W] RGB, got ",
              image.sizes());
  TORCH_CHECK(image.scalar_type() == at::kByte || image.scalar_type() == at::kFloat,
              "frame must be uint8 or float32, got ", image.scalar_type());
  const PreprocessGeometry g = PreprocessGeometryFor(image.size(1), image.size(2), target_width,
                                                     patch);
  at::Tensor x = image.scalar_type() == at::kByte ? image.to(at::kFloat).div_(255.0) : image;
  if (x.size(1) != g.resized_height || x.size(2) != g.width) {
    x = at::_upsample_bicubic2d_aa(x.unsqueeze(0), {g.resized_height, g.width},
                                   /*align_corners=*/false)
            .squeeze(0)
            .clamp_(0.0, 1.0);
  }
  return x.narrow(1, g.crop_top, g.height).contiguous();
}

}  // namespace streamkv::models::stream3r
