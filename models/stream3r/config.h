// The STream3R model's JSON config: upstream constructor argument names, so the released model
// and tiny test models share one code path.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "models/stream3r/aggregator.h"
#include "models/stream3r/camera_head.h"
#include "models/stream3r/dpt_head.h"

namespace streamkv::models::stream3r {

// Top-level keys: img_size, patch_size, embed_dim, enable_camera, enable_depth, enable_point and
// the aggregator's arguments (depth, num_heads, mlp_ratio, num_register_tokens, qkv_bias,
// proj_bias, ffn_bias, qk_norm, rope_freq, init_values, patch_embed, aa_order, aa_block_size,
// patch_embed_depth, patch_embed_num_heads); optional objects "camera_head", "depth_head" and
// "point_head" override those heads' arguments. Absent keys keep the released model's values.
struct Stream3rConfig {
  AggregatorConfig aggregator;
  CameraHeadConfig camera_head;
  DptHeadConfig depth_head = DepthHeadConfig(1024);
  DptHeadConfig point_head = PointHeadConfig(1024);
  bool enable_camera = true;
  bool enable_depth = true;
  bool enable_point = true;
};

// InvalidArgument naming the key for unknown keys, wrong types or inconsistent values.
absl::StatusOr<Stream3rConfig> ParseStream3rConfig(const std::string& json_text);
absl::StatusOr<Stream3rConfig> LoadStream3rConfig(const std::string& path);
// The config as JSON text that ParseStream3rConfig reads back to an equal config.
std::string Stream3rConfigToJson(const Stream3rConfig& config);

}  // namespace streamkv::models::stream3r
