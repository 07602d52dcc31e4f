// The DPT dense-prediction head of VGGT / STream3R (depth_head and point_head).
//
// Reads four intermediate aggregator layers, turns their patch tokens into a multi-scale feature
// pyramid (1/4, 1/2, 1, 2 × the patch grid's stride), fuses it coarse-to-fine and predicts a
// per-pixel value plus a confidence. Parameter names and shapes follow the upstream state_dict so
// `model.safetensors` loads unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {

// Hyper-parameters, named like upstream DPTHead's constructor arguments; defaults are upstream's.
struct DptHeadConfig {
  int64_t dim_in = 2048;  // token width: 2 · aggregator embed_dim (frame ‖ global)
  int64_t patch_size = 14;
  int64_t output_dim = 4;  // prediction channels + 1 confidence channel
  // Prediction activation: "exp" (depth head), "inv_log" (point head: sign(x)·expm1(|x|)),
  // "linear", "relu", "sigmoid", "norm_exp".
  std::string activation = "inv_log";
  std::string conf_activation = "expp1";  // "expp1" (1 + eˣ), "expp0" (eˣ), "sigmoid"
  int64_t features = 256;                 // fusion width; output_conv1 halves it
  std::vector<int64_t> out_channels = {256, 512, 1024, 1024};     // per pyramid level
  std::vector<int64_t> intermediate_layer_idx = {4, 11, 17, 23};  // 4 aggregator layers
  bool pos_embed = true;      // add 0.1 · UV sin/cos embedding after projects and at full size
  bool feature_only = false;  // no output_conv2 / activations; Forward returns features
  int64_t down_ratio = 1;     // output resolution = patch grid · patch_size / down_ratio
  // Frames per forward chunk (upstream forward's frames_chunk_size); results do not depend on it.
  int64_t frames_chunk_size = 8;
};

// Upstream's depth_head (output_dim 2, "exp") and point_head (output_dim 4, "inv_log") for an
// aggregator of width `embed_dim`.
DptHeadConfig DepthHeadConfig(int64_t embed_dim);
DptHeadConfig PointHeadConfig(int64_t embed_dim);

// The UV sin/cos positional embedding the head adds (before upstream's 0.1 factor):
// [channels, height, width] float32 for a height×width map of an image with aspect ratio
// image_width / image_height. Channels [0, C/2) encode u (x), [C/2, C) encode v (y); each half
// is [sin(p·ω_k) for k < C/4, cos(p·ω_k) for k < C/4] with ω_k = 100^(−k/(C/4)). u spans
// ±(a/√(a²+1))·(width−1)/width, v spans ±(1/√(a²+1))·(height−1)/height. channels % 4 == 0.
at::Tensor DptUvPositionEmbedding(int64_t height, int64_t width, int64_t channels,
                                  double aspect_ratio);

// One loaded head. Immutable after Load/To: Forward is thread-safe; To is not.
class DptHead final {
 public:
  // Every parameter (name without the head's prefix, shape) of the upstream state_dict, in
  // module order. Load takes exactly these.
  static std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(
      const DptHeadConfig& cfg);

  // Validates `cfg` and takes every parameter `prefix + name` (prefix e.g. "depth_head.") as
  // float32 CPU. Throws c10::Error for an invalid config or a missing / mis-shaped key (naming it).
  static DptHead Load(Checkpoint& ckpt, const DptHeadConfig& cfg, const std::string& prefix);

  // Moves every parameter; Forward computes on this device and dtype.
  void To(c10::Device device, c10::ScalarType dtype);

  // layer_tokens: one [S, P_tok, dim_in] tensor per intermediate_layer_idx entry, in that order
  // (the caller selects the layers); P_tok = patch_start_idx + (H/ps)·(W/ps), patches row-major.
  // Frames are independent. Returns, with H' = (H/ps)·ps/down_ratio (likewise W'):
  //   (pred [S, H', W', output_dim − 1], conf [S, H', W']) after the activations, or when
  //   feature_only (features [S, features, H', W'], undefined).
  std::pair<at::Tensor, at::Tensor> Forward(const std::vector<at::Tensor>& layer_tokens,
                                            int64_t image_height, int64_t image_width,
                                            int64_t patch_start_idx) const;

  const DptHeadConfig& config() const { return cfg_; }

 private:
  struct Conv {
    at::Tensor weight;
    at::Tensor bias;  // undefined for bias-free convs
  };
  // relu → conv1 → relu → conv2, plus the skip.
  struct ResidualUnit {
    Conv conv1;  // [F, F, 3, 3]
    Conv conv2;  // [F, F, 3, 3]
  };
  struct FusionBlock {
    bool has_residual = true;  // false for refinenet4 (no resConfUnit1)
    ResidualUnit unit1;
    ResidualUnit unit2;
    Conv out_conv;  // [F, F, 1, 1]
  };

  explicit DptHead(DptHeadConfig cfg) : cfg_(std::move(cfg)) {}

  template <typename Fn>
  void ForEachParameter(Fn&& fn);

  // Frames [S_chunk, ...] of every layer → (pred, conf) or (features, undefined).
  std::pair<at::Tensor, at::Tensor> ForwardChunk(const std::vector<at::Tensor>& layer_tokens,
                                                 int64_t image_height, int64_t image_width) const;
  at::Tensor AddPositionEmbedding(const at::Tensor& x, int64_t image_height,
                                  int64_t image_width) const;
  static at::Tensor ApplyResidualUnit(const ResidualUnit& unit, const at::Tensor& x);
  // Fuses `x` (and the lateral `skip` when has_residual), then resizes to `size`.
  static at::Tensor ApplyFusion(const FusionBlock& block, const at::Tensor& x,
                                const at::Tensor& skip, at::IntArrayRef size);

  DptHeadConfig cfg_;
  at::Tensor norm_weight_;               // [dim_in]
  at::Tensor norm_bias_;                 // [dim_in]
  std::vector<Conv> projects_;           // 4 × 1×1 conv: [oc_i, dim_in, 1, 1]
  std::vector<Conv> resize_layers_;      // ConvT 4/4, ConvT 2/2, identity (undefined), conv 3/2
  std::vector<Conv> layer_rn_;           // 4 × [F, oc_i, 3, 3], no bias
  std::vector<FusionBlock> refinenets_;  // refinenet1..4 at index 0..3
  Conv output_conv1_;                    // [F/2, F, 3, 3] ([F, F, 3, 3] when feature_only)
  Conv output_conv2_0_;                  // [32, F/2, 3, 3]
  Conv output_conv2_2_;                  // [output_dim, 32, 1, 1]
};

}  // namespace streamkv::models::stream3r
