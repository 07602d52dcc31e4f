#include "models/stream3r/tiny_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "models/stream3r/stream3r_model.h"
#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {

Stream3rConfig TinyStream3rConfig() {
  Stream3rConfig c;
  AggregatorConfig& a = c.aggregator;
  a.img_size = 112;
  a.patch_size = 14;
  a.embed_dim = 32;
  a.depth = 4;
  a.num_heads = 2;
  a.num_register_tokens = 4;
  a.patch_embed = "dinov2_vits14_reg";
  a.patch_embed_depth = 1;
  a.patch_embed_num_heads = 2;
  c.camera_head.dim_in = 2 * a.embed_dim;
  c.camera_head.trunk_depth = 1;
  c.camera_head.num_heads = 2;
  for (DptHeadConfig* head : {&c.depth_head, &c.point_head}) {
    *head = head == &c.depth_head ? DepthHeadConfig(a.embed_dim) : PointHeadConfig(a.embed_dim);
    head->features = 16;
    head->out_channels = {8, 16, 16, 16};
    head->intermediate_layer_idx = {0, 1, 2, 3};
  }
  return c;
}

std::vector<std::pair<std::string, at::Tensor>> RandomStream3rWeights(const Stream3rConfig& config,
                                                                      uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  std::vector<std::pair<std::string, at::Tensor>> weights;
  for (const auto& [name, shape] : Stream3rModel::ParameterShapes(config)) {
    at::Tensor noise = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
    at::Tensor value;
    if (absl::StrContains(name, "norm") && absl::EndsWith(name, ".weight")) {
      value = 1.0 + 0.1 * noise;
    } else if (absl::EndsWith(name, ".gamma")) {
      const bool camera = absl::StartsWith(name, "camera_head.");
      value = at::full(shape, camera ? config.camera_head.init_values
                                     : config.aggregator.init_values);
    } else if (shape.size() >= 2) {
      const int64_t fan_in = noise.numel() / shape[0];
      value = noise / std::sqrt(static_cast<double>(std::max<int64_t>(fan_in, 1)));
    } else {
      value = 0.1 * noise;
    }
    weights.emplace_back(name, value);
  }
  return weights;
}

absl::Status WriteRandomStream3r(const std::string& dir, const Stream3rConfig& config,
                                 uint64_t seed) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InvalidArgumentError(absl::StrCat("cannot create ", dir, ": ",
                                                            error.message()));
  std::ofstream(dir + "/config.json") << Stream3rConfigToJson(config) << "\n";
  return WriteSafetensors(dir + "/model.safetensors", RandomStream3rWeights(config, seed));
}

}  // namespace streamkv::models::stream3r
