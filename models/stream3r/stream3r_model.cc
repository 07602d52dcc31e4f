#include "models/stream3r/stream3r_model.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/policy_factory.h"
#include "models/stream3r/preprocess.h"

namespace streamkv::models::stream3r {
namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

absl::Status FromTorch(const c10::Error& error, absl::string_view context) {
  return absl::InvalidArgumentError(absl::StrCat(context, ": ", error.what_without_backtrace()));
}

// A session's stream: the backbone cache with its policy, and the camera trunk's cache, which
// keeps exactly the frames whose camera token survives in the backbone's last global layer, so
// it is bounded whenever the policy bounds the backbone.
class Stream3rStream final : public StreamState {
 public:
  Stream3rStream(std::unique_ptr<cache::EvictionPolicy> policy, cache::KvCache cache,
                 std::optional<cache::KvCache> trunk_cache, int64_t frame_height,
                 int64_t frame_width)
      : policy(std::move(policy)),
        cache(std::move(cache)),
        trunk_cache(std::move(trunk_cache)),
        frame_height(frame_height),
        frame_width(frame_width) {}

  int64_t frames_processed() const override { return frames; }
  std::vector<const cache::KvCache*> caches() const override {
    std::vector<const cache::KvCache*> all = {&cache};
    if (trunk_cache) all.push_back(&*trunk_cache);
    return all;
  }

  std::unique_ptr<cache::EvictionPolicy> policy;
  cache::KvCache cache;
  std::optional<cache::KvCache> trunk_cache;
  const int64_t frame_height;
  const int64_t frame_width;
  int64_t frames = 0;
};

// Keeps the tokens of a per-layer cache's `layer` where `keep` [T] (bool) is true.
void RetainTokens(cache::KvCache& cache, int64_t layer, const at::Tensor& keep) {
  const at::Tensor kept = keep.nonzero().view({-1});
  if (kept.numel() < keep.numel()) cache.Compact(layer, kept);
}

void MirrorTrunkCache(const cache::KvCache& backbone, cache::KvCache& trunk) {
  const cache::LayerView last = backbone.layer(backbone.num_layers() - 1);
  const at::Tensor camera_frames =
      last.frame.masked_select(last.role == static_cast<int64_t>(cache::TokenRole::kCamera));
  for (int64_t layer = 0; layer < trunk.num_layers(); ++layer) {
    RetainTokens(trunk, layer, at::isin(trunk.layer(layer).frame.select(0, 0), camera_frames));
  }
}

// Removes whatever a failed frame appended, so the stream continues as if it never arrived.
void DropFrame(int64_t frame_index, cache::KvCache& cache) {
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    RetainTokens(cache, layer, cache.layer(layer).frame.select(0, 0) != frame_index);
  }
}

// Aggregated layers the heads of `config` read, ascending and distinct.
std::vector<int64_t> LayersForHeads(const Stream3rConfig& config) {
  std::vector<int64_t> layers = {config.aggregator.depth - 1};
  for (const auto& [enabled, head] : {std::pair{config.enable_depth, &config.depth_head},
                                      std::pair{config.enable_point, &config.point_head}}) {
    if (enabled) {
      layers.insert(layers.end(), head->intermediate_layer_idx.begin(),
                    head->intermediate_layer_idx.end());
    }
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  return layers;
}

}  // namespace

Stream3rModel::Stream3rModel(Stream3rConfig config, Stream3rModelOptions options,
                             Aggregator aggregator, std::optional<CameraHead> camera_head,
                             std::optional<DptHead> depth_head, std::optional<DptHead> point_head)
    : config_(std::move(config)),
      options_(options),
      aggregator_(std::move(aggregator)),
      camera_head_(std::move(camera_head)),
      depth_head_(std::move(depth_head)),
      point_head_(std::move(point_head)),
      head_layers_(LayersForHeads(config_)) {}

absl::StatusOr<std::unique_ptr<Stream3rModel>> Stream3rModel::Load(
    const std::string& config_path, const std::string& weights_path,
    const Stream3rModelOptions& options) {
  absl::StatusOr<Stream3rConfig> config = LoadStream3rConfig(config_path);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(weights_path);
  if (!checkpoint.ok()) return checkpoint.status();
  return Load(*config, **checkpoint, options);
}

absl::StatusOr<std::unique_ptr<Stream3rModel>> Stream3rModel::Load(
    const Stream3rConfig& config, Checkpoint& checkpoint, const Stream3rModelOptions& options) {
  if (options.device.is_cpu() && options.backbone_dtype != c10::kFloat) {
    return absl::InvalidArgumentError("backbone_dtype must be float32 on CPU");
  }
  try {
    Aggregator aggregator = Aggregator::Load(checkpoint, config.aggregator);
    aggregator.To(options.device, options.backbone_dtype);
    std::optional<CameraHead> camera;
    std::optional<DptHead> depth, point;
    if (config.enable_camera) camera = CameraHead::Load(checkpoint, config.camera_head);
    if (config.enable_depth) depth = DptHead::Load(checkpoint, config.depth_head, "depth_head.");
    if (config.enable_point) point = DptHead::Load(checkpoint, config.point_head, "point_head.");
    if (absl::Status unused = checkpoint.CheckAllTaken(); !unused.ok()) return unused;
    for (std::optional<DptHead>* head : {&depth, &point}) {
      if (*head) (*head)->To(options.device, c10::kFloat);
    }
    if (camera) camera->To(options.device, c10::kFloat);
    return std::unique_ptr<Stream3rModel>(
        new Stream3rModel(config, options, std::move(aggregator), std::move(camera),
                          std::move(depth), std::move(point)));
  } catch (const c10::Error& e) {
    return FromTorch(e, "loading stream3r");
  }
}

ParameterShapeList Stream3rModel::ParameterShapes(const Stream3rConfig& config) {
  ParameterShapeList shapes = Aggregator::ParameterShapes(config.aggregator);
  if (config.enable_camera) {
    for (auto& entry : CameraHead::ParameterShapes(config.camera_head)) {
      shapes.push_back(std::move(entry));
    }
  }
  const std::pair<bool, std::pair<const DptHeadConfig*, const char*>> heads[] = {
      {config.enable_depth, {&config.depth_head, "depth_head."}},
      {config.enable_point, {&config.point_head, "point_head."}}};
  for (const auto& [enabled, head] : heads) {
    if (!enabled) continue;
    for (auto& [name, shape] : DptHead::ParameterShapes(*head.first)) {
      shapes.emplace_back(head.second + name, std::move(shape));
    }
  }
  return shapes;
}

std::vector<std::string> Stream3rModel::output_names() const {
  std::vector<std::string> names;
  if (camera_head_) names.insert(names.end(), {"pose_enc", "extrinsic", "intrinsic"});
  if (depth_head_) names.insert(names.end(), {"depth", "depth_conf"});
  if (point_head_) names.insert(names.end(), {"world_points", "world_points_conf"});
  names.push_back("images");
  return names;
}

std::vector<std::string> Stream3rModel::cache_names() const {
  if (camera_head_) return {"backbone", "camera_trunk"};
  return {"backbone"};
}

std::vector<std::pair<std::string, at::Tensor>> Stream3rModel::RunDenseHeads(
    const std::vector<at::Tensor>& layers, const at::Tensor& pose_enc,
    const at::Tensor& images) const {
  const int64_t height = images.size(2);
  const int64_t width = images.size(3);
  std::vector<std::pair<std::string, at::Tensor>> outputs;
  if (camera_head_) {
    const CameraParameters camera = PoseEncodingToExtrinsicIntrinsic(pose_enc, height, width);
    outputs.emplace_back("pose_enc", pose_enc);
    outputs.emplace_back("extrinsic", camera.extrinsic);
    outputs.emplace_back("intrinsic", camera.intrinsic);
  }
  auto run = [&](const DptHead& head, const DptHeadConfig& cfg, const char* name,
                 const char* conf_name) {
    std::vector<at::Tensor> inputs;
    for (int64_t layer : cfg.intermediate_layer_idx) {
      const auto at = std::lower_bound(head_layers_.begin(), head_layers_.end(), layer);
      inputs.push_back(layers[at - head_layers_.begin()]);
    }
    auto [pred, conf] = head.Forward(inputs, height, width, aggregator_.patch_start_idx());
    outputs.emplace_back(name, pred);
    outputs.emplace_back(conf_name, conf);
  };
  if (depth_head_) run(*depth_head_, config_.depth_head, "depth", "depth_conf");
  if (point_head_) run(*point_head_, config_.point_head, "world_points", "world_points_conf");
  outputs.emplace_back("images", images);
  return outputs;
}

absl::StatusOr<std::unique_ptr<StreamState>> Stream3rModel::OpenStream(
    const StreamOptions& options) const {
  if (options.frame_height <= 0 || options.frame_width <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame_height and frame_width must be positive, got ", options.frame_height, "x",
        options.frame_width));
  }
  try {
    const PreprocessGeometry g = PreprocessGeometryFor(options.frame_height, options.frame_width,
                                                       config_.aggregator.img_size,
                                                       config_.aggregator.patch_size);
    const cache::CacheGeometry geometry =
        aggregator_.CacheGeometryFor(g.height, g.width, options_.backbone_dtype);
    absl::StatusOr<std::unique_ptr<cache::EvictionPolicy>> policy =
        cache::CreatePolicy(options.policy, options.policy_params, geometry);
    if (!policy.ok()) return policy.status();
    cache::KvCache cache(cache::CacheOptionsFor(**policy, geometry, options_.device));
    std::optional<cache::KvCache> trunk;
    if (camera_head_) {
      cache::KvCacheOptions trunk_options;
      trunk_options.geometry = camera_head_->TrunkCacheGeometry(c10::kFloat);
      trunk_options.device = options_.device;
      trunk.emplace(trunk_options);
    }
    return std::make_unique<Stream3rStream>(std::move(*policy), std::move(cache), std::move(trunk),
                                            options.frame_height, options.frame_width);
  } catch (const c10::Error& e) {
    return FromTorch(e, "opening a stream");
  }
}

absl::StatusOr<FrameResult> Stream3rModel::ProcessFrame(StreamState& state,
                                                        const FrameInput& frame) const {
  auto* stream = dynamic_cast<Stream3rStream*>(&state);
  if (stream == nullptr) return absl::InvalidArgumentError("stream was not opened by stream3r");
  const at::Tensor& image = frame.image;
  if (!image.defined() || image.dim() != 3 || image.size(0) != 3) {
    return absl::InvalidArgumentError("frame image must be [3, H, W] RGB");
  }
  if (image.size(1) != stream->frame_height || image.size(2) != stream->frame_width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame is ", image.size(1), "x", image.size(2), " but the stream was opened for ",
        stream->frame_height, "x", stream->frame_width));
  }
  FrameResult result;
  try {
    const int64_t index = stream->frames;
    Clock::time_point start = Clock::now();
    const at::Tensor pixels = PreprocessFrame(image.to(options_.device),
                                              config_.aggregator.img_size,
                                              config_.aggregator.patch_size);
    result.timings.preprocess_ms = MillisecondsSince(start);

    start = Clock::now();
    std::vector<at::Tensor> layers = aggregator_.ForwardFrame(
        pixels.to(options_.backbone_dtype), index, /*first_frame=*/index == 0, stream->cache,
        *stream->policy, head_layers_);
    for (at::Tensor& layer : layers) layer = layer.to(at::kFloat).unsqueeze(0);  // [1, P, 2C]
    at::Tensor pose_enc;
    if (camera_head_) {
      pose_enc = camera_head_->ForwardFrame(layers.back()[0][0], index, *stream->trunk_cache)
                     .unsqueeze(0);
    }
    for (auto& [name, value] :
         RunDenseHeads(layers, pose_enc, pixels.unsqueeze(0))) {
      result.outputs.emplace_back(std::move(name), value.squeeze(0));
    }
    result.timings.model_ms = MillisecondsSince(start);

    start = Clock::now();
    result.eviction = stream->policy->EndFrame(index, stream->cache);
    if (stream->trunk_cache) MirrorTrunkCache(stream->cache, *stream->trunk_cache);
    result.timings.evict_ms = MillisecondsSince(start);
    ++stream->frames;
  } catch (const c10::Error& e) {
    DropFrame(stream->frames, stream->cache);
    if (stream->trunk_cache) DropFrame(stream->frames, *stream->trunk_cache);
    return FromTorch(e, absl::StrCat("frame ", stream->frames));
  }
  return result;
}

std::vector<std::pair<std::string, at::Tensor>> Stream3rModel::PredictBatchCausal(
    const at::Tensor& images) const {
  std::vector<at::Tensor> layers = aggregator_.ForwardBatchCausal(
      images.to(options_.device, options_.backbone_dtype), head_layers_);
  for (at::Tensor& layer : layers) layer = layer.to(at::kFloat);
  at::Tensor pose_enc;
  if (camera_head_) pose_enc = camera_head_->ForwardBatchCausal(layers.back().select(1, 0));
  return RunDenseHeads(layers, pose_enc, images.to(options_.device, at::kFloat));
}

}  // namespace streamkv::models::stream3r
