// The STream3R aggregator (VGGT backbone with block-causal global attention), streaming over a
// per-session KV cache bounded by an eviction policy (DESIGN.md §3, §5).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/kv_cache.h"
#include "models/stream3r/layers.h"
#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {

// Hyper-parameters, named like upstream STreamAggregator's constructor arguments; defaults are
// the released model's.
struct AggregatorConfig {
  int64_t img_size = 518;  // training size: the DINOv2 pos_embed covers (img_size/patch_size)²
  int64_t patch_size = 14;
  int64_t embed_dim = 1024;
  int64_t depth = 24;  // frame blocks = global blocks = depth
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  int64_t num_register_tokens = 4;
  bool qkv_bias = true;
  bool proj_bias = true;
  bool ffn_bias = true;
  bool qk_norm = true;
  double rope_freq = 100;     // <= 0 disables RoPE
  double init_values = 0.01;  // LayerScale present iff != 0
  // Only the DINOv2-with-registers patch embeds: dinov2_vit{s,b,l}14_reg, dinov2_vitg2_reg.
  std::string patch_embed = "dinov2_vitl14_reg";
  std::vector<std::string> aa_order = {"frame", "global"};
  int64_t aa_block_size = 1;

  // The DINOv2 patch-embed ViT. Its width is always embed_dim. 0 derives depth/heads from
  // `patch_embed` (vits: 12/6 at 384, vitb: 12/12 at 768, vitl: 24/16 at 1024, vitg2: 40/24 at
  // 1536; the width must then equal embed_dim). Upstream builds it with mlp_ratio 4, LayerScale
  // init 1.0, LayerNorm eps 1e-6, no qk-norm, no RoPE.
  int64_t patch_embed_depth = 0;
  int64_t patch_embed_num_heads = 0;
};

// Frame and global transformer blocks over DINOv2 patch tokens plus camera and register tokens.
// Immutable after Load/To: forwards may run concurrently on distinct caches.
class Aggregator {
 public:
  // Takes every parameter ("aggregator." prefix) from `ckpt`. Throws c10::Error naming a missing
  // or misshapen key, or an invalid config.
  static Aggregator Load(Checkpoint& ckpt, const AggregatorConfig& cfg);
  static Aggregator Load(ParamSource& src, const AggregatorConfig& cfg);
  // Every parameter Load takes, in order, with its shape.
  static ParameterShapeList ParameterShapes(const AggregatorConfig& cfg);

  void To(c10::Device device, c10::ScalarType dtype);

  const AggregatorConfig& config() const { return cfg_; }
  int64_t patch_start_idx() const { return 1 + cfg_.num_register_tokens; }
  int64_t TokensPerFrame(int64_t height, int64_t width) const;
  // Global-attention cache of one session: one layer per global block.
  cache::CacheGeometry CacheGeometryFor(int64_t height, int64_t width, c10::ScalarType dtype) const;

  // One frame of a session. image [3, H, W] in [0, 1], H and W multiples of patch_size. Appends the
  // frame's keys/values (after qk-norm and RoPE) to every layer of `cache` (frame `frame_index`,
  // roles camera, registers, patches), attends over all cached tokens, and feeds the policy scores
  // when it asks for them (ObserveLayer per layer). Does not call EndFrame. Uses camera/register
  // variant 0 when `first_frame`, else 1. Returns, per keep_layers entry, that block's output
  // [P_tok, 2C] = cat(frame-block output, global-block output).
  std::vector<at::Tensor> ForwardFrame(const at::Tensor& image, int64_t frame_index,
                                       bool first_frame, cache::KvCache& cache,
                                       cache::EvictionPolicy& policy,
                                       const std::vector<int64_t>& keep_layers) const;

  // Reference: frames [S, 3, H, W] at once, global attention block-causal over S·P_tok tokens, no
  // cache. Returns [S, P_tok, 2C] per keep_layers entry.
  std::vector<at::Tensor> ForwardBatchCausal(const at::Tensor& images,
                                             const std::vector<int64_t>& keep_layers) const;

 private:
  struct PatchEmbedVit {
    at::Tensor proj_weight;      // [C, 3, p, p]
    at::Tensor proj_bias;        // [C]
    at::Tensor cls_token;        // [1, 1, C]
    at::Tensor register_tokens;  // [1, R, C]
    at::Tensor pos_embed;        // [1, 1 + M², C]
    at::Tensor mask_token;       // [1, C] (training only; loaded so the checkpoint is consumed)
    std::vector<Block> blocks;
    LayerNorm norm;
  };

  // Which aa-order slot runs frame attention first.
  bool frame_first() const { return cfg_.aa_order.front() == "frame"; }
  // Images [S, 3, H, W] -> tokens [S, P_tok, C] with special tokens prepended.
  at::Tensor EmbedFrames(const at::Tensor& images, bool first_is_anchor) const;
  at::Tensor PatchTokens(const at::Tensor& normalized) const;    // [S, h·w, C]
  at::Tensor PosEmbedFor(int64_t grid_h, int64_t grid_w) const;  // [1, 1 + h·w, C]
  void CheckImage(const at::Tensor& images) const;               // [S, 3, H, W]
  void CheckKeepLayers(const std::vector<int64_t>& keep_layers) const;

  AggregatorConfig cfg_;
  PatchEmbedVit patch_embed_;
  at::Tensor camera_token_;    // [1, 2, 1, C]
  at::Tensor register_token_;  // [1, 2, R, C]
  at::Tensor mean_, std_;      // [1, 3, 1, 1] ImageNet statistics
  std::vector<Block> frame_blocks_;
  std::vector<Block> global_blocks_;
};

}  // namespace streamkv::models::stream3r
