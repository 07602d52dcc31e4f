#include "models/stream3r/config.h"

#include <fstream>
#include <iterator>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamkv::models::stream3r {
namespace {

using nlohmann::json;

// Reads typed fields of one JSON object, remembering which keys were read so the rest can be
// reported as unknown. Errors name the key with its path ("depth_head.features").
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string path) : object_(object), path_(std::move(path)) {}

  template <typename T>
  void Read(const char* key, T& value) {
    seen_.insert(key);
    if (!status_.ok() || !object_.contains(key)) return;
    try {
      value = object_.at(key).get<T>();
    } catch (const json::exception&) {
      status_ = absl::InvalidArgumentError(absl::StrCat("config key '", path_, key,
                                                        "' has the wrong type: ",
                                                        object_.at(key).dump()));
    }
  }

  const json* Object(const char* key) {
    seen_.insert(key);
    if (!object_.contains(key)) return nullptr;
    if (!object_.at(key).is_object() && status_.ok()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat("config key '", path_, key, "' must be an object"));
      return nullptr;
    }
    return &object_.at(key);
  }

  absl::Status Finish() {
    if (!status_.ok()) return status_;
    for (const auto& item : object_.items()) {
      if (!seen_.count(item.key())) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown config key '", path_, item.key(), "'"));
      }
    }
    return absl::OkStatus();
  }

 private:
  const json& object_;
  const std::string path_;
  std::set<std::string> seen_;
  absl::Status status_;
};

absl::Status ReadDptHead(const json* object, const char* name, DptHeadConfig& head) {
  if (object == nullptr) return absl::OkStatus();
  ObjectReader r(*object, absl::StrCat(name, "."));
  r.Read("output_dim", head.output_dim);
  r.Read("activation", head.activation);
  r.Read("conf_activation", head.conf_activation);
  r.Read("features", head.features);
  r.Read("out_channels", head.out_channels);
  r.Read("intermediate_layer_idx", head.intermediate_layer_idx);
  r.Read("pos_embed", head.pos_embed);
  r.Read("down_ratio", head.down_ratio);
  return r.Finish();
}

absl::Status Validate(const Stream3rConfig& c) {
  const AggregatorConfig& a = c.aggregator;
  if (a.embed_dim <= 0 || a.num_heads <= 0 || a.embed_dim % a.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: embed_dim (", a.embed_dim,
                                                   ") must be a positive multiple of num_heads (",
                                                   a.num_heads, ")"));
  }
  if (a.depth <= 0 || a.patch_size <= 0 || a.img_size < a.patch_size) {
    return absl::InvalidArgumentError("config: depth, patch_size and img_size must be positive, "
                                      "img_size at least patch_size");
  }
  for (const DptHeadConfig* head : {&c.depth_head, &c.point_head}) {
    for (int64_t layer : head->intermediate_layer_idx) {
      if (layer < 0 || layer >= a.depth) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config: intermediate_layer_idx ", layer, " outside [0, depth=", a.depth, ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Stream3rConfig> ParseStream3rConfig(const std::string& json_text) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("config is not a JSON object");
  }
  Stream3rConfig c;
  AggregatorConfig& a = c.aggregator;
  ObjectReader r(root, "");
  r.Read("img_size", a.img_size);
  r.Read("patch_size", a.patch_size);
  r.Read("embed_dim", a.embed_dim);
  r.Read("depth", a.depth);
  r.Read("num_heads", a.num_heads);
  r.Read("mlp_ratio", a.mlp_ratio);
  r.Read("num_register_tokens", a.num_register_tokens);
  r.Read("qkv_bias", a.qkv_bias);
  r.Read("proj_bias", a.proj_bias);
  r.Read("ffn_bias", a.ffn_bias);
  r.Read("qk_norm", a.qk_norm);
  r.Read("rope_freq", a.rope_freq);
  r.Read("init_values", a.init_values);
  r.Read("patch_embed", a.patch_embed);
  r.Read("aa_order", a.aa_order);
  r.Read("aa_block_size", a.aa_block_size);
  r.Read("patch_embed_depth", a.patch_embed_depth);
  r.Read("patch_embed_num_heads", a.patch_embed_num_heads);
  r.Read("enable_camera", c.enable_camera);
  r.Read("enable_depth", c.enable_depth);
  r.Read("enable_point", c.enable_point);

  // Heads read the aggregator's width and patch size; their own keys may override the rest.
  c.camera_head.dim_in = 2 * a.embed_dim;
  c.depth_head = DepthHeadConfig(a.embed_dim);
  c.point_head = PointHeadConfig(a.embed_dim);
  c.depth_head.patch_size = c.point_head.patch_size = a.patch_size;
  if (const json* camera = r.Object("camera_head")) {
    ObjectReader h(*camera, "camera_head.");
    CameraHeadConfig& cam = c.camera_head;
    h.Read("trunk_depth", cam.trunk_depth);
    h.Read("pose_encoding_type", cam.pose_encoding_type);
    h.Read("num_heads", cam.num_heads);
    h.Read("mlp_ratio", cam.mlp_ratio);
    h.Read("init_values", cam.init_values);
    h.Read("trans_act", cam.trans_act);
    h.Read("quat_act", cam.quat_act);
    h.Read("fl_act", cam.fl_act);
    h.Read("num_iterations", cam.num_iterations);
    if (absl::Status s = h.Finish(); !s.ok()) return s;
  }
  if (absl::Status s = ReadDptHead(r.Object("depth_head"), "depth_head", c.depth_head); !s.ok()) {
    return s;
  }
  if (absl::Status s = ReadDptHead(r.Object("point_head"), "point_head", c.point_head); !s.ok()) {
    return s;
  }
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  if (absl::Status s = Validate(c); !s.ok()) return s;
  return c;
}

absl::StatusOr<Stream3rConfig> LoadStream3rConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("config ", path, ": cannot open"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<Stream3rConfig> config = ParseStream3rConfig(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat("config ", path, ": ", config.status().message()));
  }
  return config;
}

std::string Stream3rConfigToJson(const Stream3rConfig& c) {
  const AggregatorConfig& a = c.aggregator;
  const CameraHeadConfig& cam = c.camera_head;
  auto head = [](const DptHeadConfig& h) {
    return json{{"output_dim", h.output_dim},
                {"activation", h.activation},
                {"conf_activation", h.conf_activation},
                {"features", h.features},
                {"out_channels", h.out_channels},
                {"intermediate_layer_idx", h.intermediate_layer_idx},
                {"pos_embed", h.pos_embed},
                {"down_ratio", h.down_ratio}};
  };
  const json root = {
      {"img_size", a.img_size},
      {"patch_size", a.patch_size},
      {"embed_dim", a.embed_dim},
      {"depth", a.depth},
      {"num_heads", a.num_heads},
      {"mlp_ratio", a.mlp_ratio},
      {"num_register_tokens", a.num_register_tokens},
      {"qkv_bias", a.qkv_bias},
      {"proj_bias", a.proj_bias},
      {"ffn_bias", a.ffn_bias},
      {"qk_norm", a.qk_norm},
      {"rope_freq", a.rope_freq},
      {"init_values", a.init_values},
      {"patch_embed", a.patch_embed},
      {"aa_order", a.aa_order},
      {"aa_block_size", a.aa_block_size},
      {"patch_embed_depth", a.patch_embed_depth},
      {"patch_embed_num_heads", a.patch_embed_num_heads},
      {"enable_camera", c.enable_camera},
      {"enable_depth", c.enable_depth},
      {"enable_point", c.enable_point},
      {"camera_head",
       {{"trunk_depth", cam.trunk_depth},
        {"pose_encoding_type", cam.pose_encoding_type},
        {"num_heads", cam.num_heads},
        {"mlp_ratio", cam.mlp_ratio},
        {"init_values", cam.init_values},
        {"trans_act", cam.trans_act},
        {"quat_act", cam.quat_act},
        {"fl_act", cam.fl_act},
        {"num_iterations", cam.num_iterations}}},
      {"depth_head", head(c.depth_head)},
      {"point_head", head(c.point_head)},
  };
  return root.dump(2);
}

}  // namespace streamkv::models::stream3r
