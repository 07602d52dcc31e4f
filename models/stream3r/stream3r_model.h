// The STream3R model (VGGT backbone with causal global attention) as a streaming Model.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/stream3r/aggregator.h"
#include "models/stream3r/camera_head.h"
#include "models/stream3r/config.h"
#include "models/stream3r/dpt_head.h"
#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {

struct Stream3rModelOptions {
  c10::Device device = c10::kCPU;
  // Aggregator and cache dtype; heads always run in float32. CPU needs float32; on CUDA bfloat16
  // (float16 where bfloat16 is unsupported), as upstream.
  c10::ScalarType backbone_dtype = c10::kFloat;
};

// Outputs per frame (upstream keys): pose_enc [9], extrinsic [3, 4] (camera-from-world),
// intrinsic [3, 3], depth [H, W, 1], depth_conf [H, W], world_points [H, W, 3],
// world_points_conf [H, W], images [3, H, W] (the preprocessed frame in [0, 1], which the dense
// outputs are aligned with); heads disabled in the config produce none. Thread-safe after Load.
class Stream3rModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Stream3rModel>> Load(const std::string& config_path,
                                                             const std::string& weights_path,
                                                             const Stream3rModelOptions& options);
  static absl::StatusOr<std::unique_ptr<Stream3rModel>> Load(const Stream3rConfig& config,
                                                             Checkpoint& checkpoint,
                                                             const Stream3rModelOptions& options);
  // Every parameter of the checkpoint a config needs (full upstream names).
  static ParameterShapeList ParameterShapes(const Stream3rConfig& config);

  absl::string_view name() const override { return "stream3r"; }
  c10::Device device() const override { return options_.device; }
  std::vector<std::string> output_names() const override;
  // "backbone" (the global attention layers), then "camera_trunk" when the camera head is on.
  std::vector<std::string> cache_names() const override;
  const Stream3rConfig& config() const { return config_; }

  absl::StatusOr<std::unique_ptr<StreamState>> OpenStream(
      const StreamOptions& options) const override;
  absl::StatusOr<FrameResult> ProcessFrame(StreamState& stream,
                                           const FrameInput& frame) const override;

  // Reference for tests: preprocessed frames [S, 3, H, W] in [0, 1] at once, block-causal global
  // and camera-trunk attention, no cache or eviction. Outputs as ProcessFrame's with a leading S.
  std::vector<std::pair<std::string, at::Tensor>> PredictBatchCausal(const at::Tensor& images) const;

 private:
  Stream3rModel(Stream3rConfig config, Stream3rModelOptions options, Aggregator aggregator,
                std::optional<CameraHead> camera_head, std::optional<DptHead> depth_head,
                std::optional<DptHead> point_head);

  // Runs the heads on aggregated tokens [S, P_tok, 2C] (one per head_layers_ entry) of the
  // preprocessed frames `images` [S, 3, H, W] and appends those as "images"; `pose_enc` [S, 9]
  // from the camera head when it is enabled.
  std::vector<std::pair<std::string, at::Tensor>> RunDenseHeads(
      const std::vector<at::Tensor>& layers, const at::Tensor& pose_enc,
      const at::Tensor& images) const;

  const Stream3rConfig config_;
  const Stream3rModelOptions options_;
  Aggregator aggregator_;
  std::optional<CameraHead> camera_head_;
  std::optional<DptHead> depth_head_;
  std::optional<DptHead> point_head_;
  // Aggregated layers the heads read, ascending: the DPT heads' intermediate layers and the last.
  const std::vector<int64_t> head_layers_;
};

}  // namespace streamkv::models::stream3r
