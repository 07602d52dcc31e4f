#include "models/stream3r/aggregator.h"

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <map>
#include <utility>

#include "kernels/attention_with_scores.h"

namespace streamkv::models::stream3r {
namespace {

constexpr std::array<double, 3> kImageNetMean = {0.485, 0.456, 0.406};
constexpr std::array<double, 3> kImageNetStd = {0.229, 0.224, 0.225};

struct VitShape {
  int64_t dim, depth, heads;
};

// The DINOv2 variants upstream maps patch_embed names to.
VitShape DinoShape(const AggregatorConfig& cfg) {
  static const std::map<std::string, VitShape> kVariants = {
      {"dinov2_vits14_reg", {384, 12, 6}},
      {"dinov2_vitb14_reg", {768, 12, 12}},
      {"dinov2_vitl14_reg", {1024, 24, 16}},
      {"dinov2_vitg2_reg", {1536, 40, 24}},
  };
  const auto it = kVariants.find(cfg.patch_embed);
  TORCH_CHECK(it != kVariants.end(), "AggregatorConfig.patch_embed: unsupported '", cfg.patch_embed,
              "' (supported: dinov2_vit{s,b,l}14_reg, dinov2_vitg2_reg)");
  VitShape shape = it->second;
  if (cfg.patch_embed_depth > 0 || cfg.patch_embed_num_heads > 0) {
    TORCH_CHECK(
        cfg.patch_embed_depth > 0 && cfg.patch_embed_num_heads > 0,
        "AggregatorConfig: set both patch_embed_depth and patch_embed_num_heads or neither");
    return {cfg.embed_dim, cfg.patch_embed_depth, cfg.patch_embed_num_heads};
  }
  TORCH_CHECK(shape.dim == cfg.embed_dim, "AggregatorConfig: patch_embed '", cfg.patch_embed,
              "' has width ", shape.dim, " but embed_dim is ", cfg.embed_dim);
  return shape;
}

void ValidateConfig(const AggregatorConfig& cfg) {
  TORCH_CHECK(cfg.patch_size > 0 && cfg.img_size > 0 && cfg.img_size % cfg.patch_size == 0,
              "AggregatorConfig: img_size ", cfg.img_size, " must be a positive multiple of ",
              "patch_size ", cfg.patch_size);
  TORCH_CHECK(cfg.embed_dim > 0 && cfg.num_heads > 0 && cfg.embed_dim % cfg.num_heads == 0,
              "AggregatorConfig: embed_dim ", cfg.embed_dim, " must be divisible by num_heads ",
              cfg.num_heads);
  TORCH_CHECK(cfg.rope_freq <= 0 || (cfg.embed_dim / cfg.num_heads) % 4 == 0,
              "AggregatorConfig: 2-D RoPE needs head_dim divisible by 4, got ",
              cfg.embed_dim / cfg.num_heads);
  TORCH_CHECK(cfg.depth > 0 && cfg.aa_block_size > 0 && cfg.depth % cfg.aa_block_size == 0,
              "AggregatorConfig: depth ", cfg.depth, " must be divisible by aa_block_size ",
              cfg.aa_block_size);
  TORCH_CHECK(
      cfg.aa_order.size() == 2 && ((cfg.aa_order[0] == "frame" && cfg.aa_order[1] == "global") ||
                                   (cfg.aa_order[0] == "global" && cfg.aa_order[1] == "frame")),
      "AggregatorConfig.aa_order must be [frame, global] or [global, frame]");
  TORCH_CHECK(cfg.num_register_tokens >= 0, "AggregatorConfig: num_register_tokens < 0");
  TORCH_CHECK(cfg.mlp_ratio > 0, "AggregatorConfig: mlp_ratio must be positive");
}

}  // namespace

Aggregator Aggregator::Load(Checkpoint& ckpt, const AggregatorConfig& cfg) {
  CheckpointParamSource src(ckpt);
  return Load(src, cfg);
}

ParameterShapeList Aggregator::ParameterShapes(const AggregatorConfig& cfg) {
  ShapeRecorder recorder;
  Load(recorder, cfg);
  return recorder.TakeShapes();
}

Aggregator Aggregator::Load(ParamSource& src, const AggregatorConfig& cfg) {
  ValidateConfig(cfg);
  const VitShape dino = DinoShape(cfg);
  const int64_t c = cfg.embed_dim;
  const int64_t r = cfg.num_register_tokens;
  const int64_t grid = cfg.img_size / cfg.patch_size;
  const std::string pe = "aggregator.patch_embed";

  Aggregator agg;
  agg.cfg_ = cfg;
  PatchEmbedVit& vit = agg.patch_embed_;
  vit.cls_token = src.Get(pe + ".cls_token", {1, 1, c});
  vit.pos_embed = src.Get(pe + ".pos_embed", {1, 1 + grid * grid, c});
  if (r > 0) vit.register_tokens = src.Get(pe + ".register_tokens", {1, r, c});
  vit.mask_token = src.Get(pe + ".mask_token", {1, c});
  vit.proj_weight =
      src.Get(pe + ".patch_embed.proj.weight", {c, 3, cfg.patch_size, cfg.patch_size});
  vit.proj_bias = src.Get(pe + ".patch_embed.proj.bias", {c});
  BlockConfig dino_block;
  dino_block.dim = c;
  dino_block.num_heads = dino.heads;
  dino_block.mlp_ratio = 4.0;
  dino_block.layer_scale = true;  // upstream passes init_values=1.0
  dino_block.norm_eps = 1e-6;
  for (int64_t i = 0; i < dino.depth; ++i) {
    vit.blocks.push_back(Block::Load(src, pe + ".blocks." + std::to_string(i), dino_block));
  }
  vit.norm = LayerNorm::Load(src, pe + ".norm", c, 1e-6);

  BlockConfig block;
  block.dim = c;
  block.num_heads = cfg.num_heads;
  block.mlp_ratio = cfg.mlp_ratio;
  block.qkv_bias = cfg.qkv_bias;
  block.proj_bias = cfg.proj_bias;
  block.ffn_bias = cfg.ffn_bias;
  block.qk_norm = cfg.qk_norm;
  block.layer_scale = cfg.init_values != 0;
  block.norm_eps = 1e-5;
  for (int64_t i = 0; i < cfg.depth; ++i) {
    agg.frame_blocks_.push_back(
        Block::Load(src, "aggregator.frame_blocks." + std::to_string(i), block));
  }
  for (int64_t i = 0; i < cfg.depth; ++i) {
    agg.global_blocks_.push_back(
        Block::Load(src, "aggregator.global_blocks." + std::to_string(i), block));
  }
  agg.camera_token_ = src.Get("aggregator.camera_token", {1, 2, 1, c});
  agg.register_token_ = src.Get("aggregator.register_token", {1, 2, r, c});
  agg.mean_ =
      at::tensor(at::ArrayRef<double>(kImageNetMean.data(), 3), at::kFloat).view({1, 3, 1, 1});
  agg.std_ =
      at::tensor(at::ArrayRef<double>(kImageNetStd.data(), 3), at::kFloat).view({1, 3, 1, 1});
  return agg;
}

void Aggregator::To(c10::Device device, c10::ScalarType dtype) {
  PatchEmbedVit& vit = patch_embed_;
  for (at::Tensor* t :
       {&vit.proj_weight, &vit.proj_bias, &vit.cls_token, &vit.register_tokens, &vit.pos_embed,
        &vit.mask_token, &camera_token_, &register_token_, &mean_, &std_}) {
    MoveTensor(*t, device, dtype);
  }
  for (Block& b : vit.blocks) b.To(device, dtype);
  vit.norm.To(device, dtype);
  for (Block& b : frame_blocks_) b.To(device, dtype);
  for (Block& b : global_blocks_) b.To(device, dtype);
}

int64_t Aggregator::TokensPerFrame(int64_t height, int64_t width) const {
  return patch_start_idx() + (height / cfg_.patch_size) * (width / cfg_.patch_size);
}

cache::CacheGeometry Aggregator::CacheGeometryFor(int64_t height, int64_t width,
                                                  c10::ScalarType dtype) const {
  cache::CacheGeometry g;
  g.num_layers = cfg_.depth;
  g.num_heads = cfg_.num_heads;
  g.head_dim = cfg_.embed_dim / cfg_.num_heads;
  g.dtype = dtype;
  g.tokens_per_frame = TokensPerFrame(height, width);
  return g;
}

void Aggregator::CheckImage(const at::Tensor& images) const {
  TORCH_CHECK(images.defined() && images.dim() == 4 && images.size(1) == 3,
              "Aggregator: images must be [S, 3, H, W] (a frame [3, H, W]), got ",
              images.defined() ? images.sizes() : at::IntArrayRef{});
  TORCH_CHECK(images.size(0) >= 1, "Aggregator: no frames");
  TORCH_CHECK(at::isFloatingType(images.scalar_type()), "Aggregator: images must be floating, got ",
              images.scalar_type());
  const int64_t h = images.size(2), w = images.size(3);
  TORCH_CHECK(h > 0 && w > 0 && h % cfg_.patch_size == 0 && w % cfg_.patch_size == 0,
              "Aggregator: image size ", h, "x", w, " must be positive multiples of patch_size ",
              cfg_.patch_size);
}

void Aggregator::CheckKeepLayers(const std::vector<int64_t>& keep_layers) const {
  for (int64_t layer : keep_layers) {
    TORCH_CHECK(layer >= 0 && layer < cfg_.depth, "Aggregator: keep layer ", layer, " outside [0, ",
                cfg_.depth, ")");
  }
}

at::Tensor Aggregator::PosEmbedFor(int64_t grid_h, int64_t grid_w) const {
  const at::Tensor& pos = patch_embed_.pos_embed;  // [1, 1 + M², C]
  const int64_t n = pos.size(1) - 1;
  const int64_t c = pos.size(2);
  // Upstream returns the table unchanged for the square training grid.
  if (grid_h * grid_w == n && grid_h == grid_w) return pos;
  const auto m = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(n))));
  const at::Tensor pos_f = pos.to(at::kFloat);
  const at::Tensor grid = pos_f.narrow(1, 1, n).reshape({1, m, m, c}).permute({0, 3, 1, 2});
  const std::array<int64_t, 2> size = {grid_h, grid_w};
  const at::Tensor resized =
      at::_upsample_bicubic2d_aa(grid, at::IntArrayRef(size), /*align_corners=*/false, c10::nullopt,
                                 c10::nullopt);  // [1, C, h, w]
  const at::Tensor patches = resized.permute({0, 2, 3, 1}).reshape({1, grid_h * grid_w, c});
  return at::cat({pos_f.narrow(1, 0, 1), patches}, 1).to(pos.scalar_type());
}

at::Tensor Aggregator::PatchTokens(const at::Tensor& normalized) const {
  const PatchEmbedVit& vit = patch_embed_;
  const int64_t s = normalized.size(0);
  const int64_t p = cfg_.patch_size;
  const int64_t grid_h = normalized.size(2) / p, grid_w = normalized.size(3) / p;
  at::Tensor x = at::conv2d(normalized, vit.proj_weight, vit.proj_bias, {p, p});  // [S, C, h, w]
  x = x.flatten(2).transpose(1, 2);                                               // [S, h·w, C]
  const int64_t c = x.size(2);
  x = at::cat({vit.cls_token.expand({s, 1, c}), x}, 1) + PosEmbedFor(grid_h, grid_w);
  if (vit.register_tokens.defined()) {
    const int64_t r = vit.register_tokens.size(1);
    x = at::cat(
        {x.narrow(1, 0, 1), vit.register_tokens.expand({s, r, c}), x.narrow(1, 1, x.size(1) - 1)},
        1);
  }
  const AttendFn plain = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return SoftmaxAttention(q, k, v);
  };
  for (const Block& b : vit.blocks) x = b.Forward(x, nullptr, plain);
  const int64_t skip = 1 + (vit.register_tokens.defined() ? vit.register_tokens.size(1) : 0);
  // Only the normalised patch tokens are used.
  return vit.norm.Forward(x.narrow(1, skip, x.size(1) - skip));
}

at::Tensor Aggregator::EmbedFrames(const at::Tensor& images, bool first_is_anchor) const {
  const at::Tensor& ref = camera_token_;
  const at::Tensor x = images.to(ref.device(), ref.scalar_type());
  const at::Tensor patches = PatchTokens((x - mean_) / std_);  // [S, h·w, C]
  const int64_t s = images.size(0);
  // Variant 0 for a session's first frame, 1 for every later frame.
  at::Tensor variant = at::ones({s}, at::TensorOptions().dtype(at::kLong).device(ref.device()));
  if (first_is_anchor) variant[0].fill_(0);
  const at::Tensor camera = camera_token_[0].index_select(0, variant);       // [S, 1, C]
  const at::Tensor registers = register_token_[0].index_select(0, variant);  // [S, R, C]
  return at::cat({camera, registers, patches}, 1);                           // [S, P_tok, C]
}

namespace {

// Runs the aa blocks over tokens [S, P, C] and collects the kept layers' [S, P, 2C] outputs.
// global_attend(l) gives the attention of global block l (over [1, S·P] tokens).
std::vector<at::Tensor> RunAlternating(at::Tensor tokens, bool frame_first, int64_t aa_block_size,
                                       const std::vector<Block>& frame_blocks,
                                       const std::vector<Block>& global_blocks,
                                       const RotaryTables* frame_rope,
                                       const RotaryTables* global_rope,
                                       const std::function<AttendFn(int64_t)>& global_attend,
                                       const std::vector<int64_t>& keep_layers) {
  const int64_t s = tokens.size(0), p = tokens.size(1), c = tokens.size(2);
  const AttendFn plain = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return SoftmaxAttention(q, k, v);
  };
  std::vector<at::Tensor> outputs(keep_layers.size());
  const auto num_blocks = static_cast<int64_t>(frame_blocks.size());
  int64_t frame_idx = 0, global_idx = 0;
  std::vector<at::Tensor> frame_inter, global_inter;
  for (int64_t aa = 0; aa < num_blocks / aa_block_size; ++aa) {
    frame_inter.clear();
    global_inter.clear();
    for (int pass = 0; pass < 2; ++pass) {
      if ((pass == 0) == frame_first) {
        tokens = tokens.view({s, p, c});
        for (int64_t i = 0; i < aa_block_size; ++i) {
          tokens = frame_blocks[frame_idx++].Forward(tokens, frame_rope, plain);
          frame_inter.push_back(tokens);
        }
      } else {
        tokens = tokens.reshape({1, s * p, c});
        for (int64_t i = 0; i < aa_block_size; ++i) {
          tokens =
              global_blocks[global_idx].Forward(tokens, global_rope, global_attend(global_idx));
          ++global_idx;
          global_inter.push_back(tokens.view({s, p, c}));
        }
      }
    }
    for (int64_t i = 0; i < aa_block_size; ++i) {
      const int64_t layer = aa * aa_block_size + i;
      for (size_t k = 0; k < keep_layers.size(); ++k) {
        if (keep_layers[k] == layer) {
          outputs[k] = at::cat({frame_inter[i], global_inter[i]}, -1);
        }
      }
    }
  }
  return outputs;
}

at::Tensor FrameRoles(int64_t num_registers, int64_t num_patches, c10::Device device) {
  at::Tensor roles =
      at::full({1 + num_registers + num_patches}, static_cast<int64_t>(cache::TokenRole::kPatch),
               at::TensorOptions().dtype(at::kByte));
  roles[0].fill_(static_cast<int64_t>(cache::TokenRole::kCamera));
  roles.narrow(0, 1, num_registers).fill_(static_cast<int64_t>(cache::TokenRole::kRegister));
  return roles.to(device);
}

}  // namespace

std::vector<at::Tensor> Aggregator::ForwardFrame(const at::Tensor& image, int64_t frame_index,
                                                 bool first_frame, cache::KvCache& cache,
                                                 cache::EvictionPolicy& policy,
                                                 const std::vector<int64_t>& keep_layers) const {
  TORCH_CHECK(image.defined() && image.dim() == 3, "Aggregator::ForwardFrame: image must be ",
              "[3, H, W], got ", image.defined() ? image.sizes() : at::IntArrayRef{});
  const at::Tensor images = image.unsqueeze(0);
  CheckImage(images);
  CheckKeepLayers(keep_layers);
  const int64_t height = image.size(1), width = image.size(2);
  const cache::CacheGeometry& g = cache.options().geometry;
  TORCH_CHECK(g.num_layers == cfg_.depth && g.num_heads == cfg_.num_heads &&
                  g.head_dim == cfg_.embed_dim / cfg_.num_heads,
              "Aggregator::ForwardFrame: cache geometry (layers ", g.num_layers, ", heads ",
              g.num_heads, ", head_dim ", g.head_dim, ") does not match the model");

  const at::Tensor tokens = EmbedFrames(images, first_frame);  // [1, P, C]
  const int64_t p = tokens.size(1);
  const int64_t grid_h = height / cfg_.patch_size, grid_w = width / cfg_.patch_size;
  RotaryTables rope;
  const RotaryTables* rope_ptr = nullptr;
  if (cfg_.rope_freq > 0) {
    rope = MakeRotaryTables(FramePositions(patch_start_idx(), grid_h, grid_w, tokens.device()),
                            cfg_.embed_dim / cfg_.num_heads, cfg_.rope_freq, tokens.scalar_type());
    rope_ptr = &rope;
  }

  cache::FrameTokens frame_tokens;
  frame_tokens.frame_index = frame_index;
  frame_tokens.roles =
      FrameRoles(cfg_.num_register_tokens, p - patch_start_idx(), cache.options().device);
  const cache::ScoreRequest request = policy.score_request();
  const c10::ScalarType cache_dtype = g.dtype;
  const double scale = 1.0 / std::sqrt(static_cast<double>(g.head_dim));

  // Global layer l: append this frame's K/V, then attend over everything the layer caches.
  const auto global_attend = [&](int64_t layer) -> AttendFn {
    return [&, layer](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      cache.Append(layer, k[0].to(cache_dtype), v[0].to(cache_dtype), frame_tokens);
      const cache::LayerView view = cache.layer(layer);
      const at::Tensor q0 = q[0].to(cache_dtype);  // [H, P, D]
      if (!request.needed) {
        return SoftmaxAttention(q0.unsqueeze(0), view.keys.unsqueeze(0), view.values.unsqueeze(0))
            .to(q.scalar_type());
      }
      kernels::AttentionScoresOptions options;
      options.head_mean_scores = !request.per_head;
      options.per_head_scores = request.per_head;
      options.reduction = request.reduction;
      kernels::AttentionWithScores result =
          kernels::AttentionWithKeyScores(q0, view.keys, view.values, scale, options);
      policy.ObserveLayer(frame_index, layer,
                          request.per_head ? result.head_key_scores : result.key_scores, cache);
      return result.output.unsqueeze(0).to(q.scalar_type());
    };
  };

  std::vector<at::Tensor> outputs =
      RunAlternating(tokens, frame_first(), cfg_.aa_block_size, frame_blocks_, global_blocks_,
                     rope_ptr, rope_ptr, global_attend, keep_layers);
  for (at::Tensor& out : outputs) out = out[0];  // [P, 2C]
  return outputs;
}

std::vector<at::Tensor> Aggregator::ForwardBatchCausal(
    const at::Tensor& images, const std::vector<int64_t>& keep_layers) const {
  CheckImage(images);
  CheckKeepLayers(keep_layers);
  const int64_t s = images.size(0);
  const at::Tensor tokens = EmbedFrames(images, /*first_is_anchor=*/true);  // [S, P, C]
  const int64_t p = tokens.size(1);
  const int64_t grid_h = images.size(2) / cfg_.patch_size;
  const int64_t grid_w = images.size(3) / cfg_.patch_size;
  RotaryTables frame_rope, global_rope;
  bool use_rope = cfg_.rope_freq > 0;
  if (use_rope) {
    const at::Tensor pos = FramePositions(patch_start_idx(), grid_h, grid_w, tokens.device());
    frame_rope = MakeRotaryTables(pos, cfg_.embed_dim / cfg_.num_heads, cfg_.rope_freq,
                                  tokens.scalar_type());
    global_rope = {frame_rope.cos.repeat({s, 1}), frame_rope.sin.repeat({s, 1})};  // [S·P, D]
  }
  const at::Tensor mask = BlockCausalMask(s, p, tokens.options());
  const AttendFn masked = [&mask](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return SoftmaxAttention(q, k, v, mask);
  };
  return RunAlternating(
      tokens, frame_first(), cfg_.aa_block_size, frame_blocks_, global_blocks_,
      use_rope ? &frame_rope : nullptr, use_rope ? &global_rope : nullptr,
      [&masked](int64_t) { return masked; }, keep_layers);
}

}  // namespace streamkv::models::stream3r
