#include "models/stream3r/camera_head.h"

#include <ATen/ATen.h>

#include <cmath>

namespace streamkv::models::stream3r {
namespace {

bool IsKnownActivation(const std::string& act) {
  return act == "linear" || act == "inv_log" || act == "exp" || act == "relu";
}

at::Tensor ApplyActivation(const at::Tensor& x, const std::string& act) {
  if (act == "linear") return x;
  if (act == "inv_log") return at::sign(x) * at::expm1(at::abs(x));
  if (act == "exp") return at::exp(x);
  return at::relu(x);  // "relu"; validated at Load
}

void ValidateConfig(const CameraHeadConfig& cfg) {
  TORCH_CHECK(cfg.pose_encoding_type == "absT_quaR_FoV",
              "CameraHeadConfig.pose_encoding_type: unsupported '", cfg.pose_encoding_type, "'");
  TORCH_CHECK(cfg.dim_in > 0 && cfg.num_heads > 0 && cfg.dim_in % cfg.num_heads == 0,
              "CameraHeadConfig: dim_in ", cfg.dim_in, " must be divisible by num_heads ",
              cfg.num_heads);
  TORCH_CHECK(cfg.dim_in % 2 == 0, "CameraHeadConfig: dim_in must be even");
  TORCH_CHECK(cfg.trunk_depth > 0 && cfg.num_iterations > 0,
              "CameraHeadConfig: trunk_depth and num_iterations must be positive");
  TORCH_CHECK(cfg.mlp_ratio > 0, "CameraHeadConfig: mlp_ratio must be positive");
  for (const std::string* act : {&cfg.trans_act, &cfg.quat_act, &cfg.fl_act}) {
    TORCH_CHECK(IsKnownActivation(*act), "CameraHeadConfig: unknown activation '", *act,
                "' (linear, inv_log, exp, relu)");
  }
}

}  // namespace

CameraHead CameraHead::Load(Checkpoint& ckpt, const CameraHeadConfig& cfg) {
  CheckpointParamSource src(ckpt);
  return Load(src, cfg);
}

ParameterShapeList CameraHead::ParameterShapes(const CameraHeadConfig& cfg) {
  ShapeRecorder recorder;
  Load(recorder, cfg);
  return recorder.TakeShapes();
}

CameraHead CameraHead::Load(ParamSource& src, const CameraHeadConfig& cfg) {
  ValidateConfig(cfg);
  const int64_t c = cfg.dim_in;
  const std::string pre = "camera_head.";
  CameraHead head;
  head.cfg_ = cfg;
  BlockConfig block;  // upstream Block defaults: all biases, no qk-norm, LayerNorm eps 1e-5
  block.dim = c;
  block.num_heads = cfg.num_heads;
  block.mlp_ratio = cfg.mlp_ratio;
  block.layer_scale = cfg.init_values != 0;
  for (int64_t i = 0; i < cfg.trunk_depth; ++i) {
    head.trunk_.push_back(Block::Load(src, pre + "trunk." + std::to_string(i), block));
  }
  head.token_norm_ = LayerNorm::Load(src, pre + "token_norm", c, 1e-5);
  head.trunk_norm_ = LayerNorm::Load(src, pre + "trunk_norm", c, 1e-5);
  head.adaln_norm_ = LayerNorm::NoAffine(c, 1e-6);
  head.empty_pose_tokens_ = src.Get(pre + "empty_pose_tokens", {1, 1, kPoseDim});
  head.embed_pose_ = Linear::Load(src, pre + "embed_pose", kPoseDim, c, true);
  // nn.Sequential(SiLU, Linear): the Linear is child 1.
  head.pose_ln_modulation_ = Linear::Load(src, pre + "poseLN_modulation.1", c, 3 * c, true);
  head.pose_branch_ = Mlp::Load(src, pre + "pose_branch", c, c / 2, kPoseDim, true);
  return head;
}

void CameraHead::To(c10::Device device, c10::ScalarType dtype) {
  for (Block& b : trunk_) b.To(device, dtype);
  token_norm_.To(device, dtype);
  trunk_norm_.To(device, dtype);
  MoveTensor(empty_pose_tokens_, device, dtype);
  embed_pose_.To(device, dtype);
  pose_ln_modulation_.To(device, dtype);
  pose_branch_.To(device, dtype);
}

cache::CacheGeometry CameraHead::TrunkCacheGeometry(c10::ScalarType dtype) const {
  cache::CacheGeometry g;
  g.num_layers = cfg_.num_iterations * cfg_.trunk_depth;
  g.num_heads = cfg_.num_heads;
  g.head_dim = cfg_.dim_in / cfg_.num_heads;
  g.dtype = dtype;
  g.tokens_per_frame = 1;
  return g;
}

at::Tensor CameraHead::Activate(const at::Tensor& pose_enc) const {
  return at::cat({ApplyActivation(pose_enc.narrow(-1, 0, 3), cfg_.trans_act),
                  ApplyActivation(pose_enc.narrow(-1, 3, 4), cfg_.quat_act),
                  ApplyActivation(pose_enc.narrow(-1, 7, 2), cfg_.fl_act)},
                 -1);
}

at::Tensor CameraHead::Run(const at::Tensor& tokens,
                           const std::function<AttendFn(int64_t, int64_t)>& attend) const {
  const int64_t s = tokens.size(1);
  const at::Tensor x = token_norm_.Forward(tokens);  // [1, S, C]
  const at::Tensor x_norm = adaln_norm_.Forward(x);
  at::Tensor pred, activated;  // [1, S, 9]: raw running sum, and its activation
  for (int64_t it = 0; it < cfg_.num_iterations; ++it) {
    const at::Tensor input =
        embed_pose_.Forward(pred.defined() ? pred : empty_pose_tokens_.expand({1, s, kPoseDim}));
    const std::vector<at::Tensor> mod =
        pose_ln_modulation_.Forward(at::silu(input)).chunk(3, -1);  // shift, scale, gate
    at::Tensor h = mod[2] * (x_norm * (1 + mod[1]) + mod[0]) + x;
    for (int64_t b = 0; b < cfg_.trunk_depth; ++b) {
      h = trunk_[b].Forward(h, nullptr, attend(it, b));
    }
    const at::Tensor delta = pose_branch_.Forward(trunk_norm_.Forward(h));
    pred = pred.defined() ? pred + delta : delta;
    activated = Activate(pred);
  }
  return activated;
}

at::Tensor CameraHead::ForwardFrame(const at::Tensor& camera_token, int64_t frame_index,
                                    cache::KvCache& trunk_cache) const {
  TORCH_CHECK(
      camera_token.defined() && camera_token.dim() == 1 && camera_token.size(0) == cfg_.dim_in,
      "CameraHead::ForwardFrame: camera_token must be [", cfg_.dim_in, "], got ",
      camera_token.defined() ? camera_token.sizes() : at::IntArrayRef{});
  const cache::CacheGeometry& g = trunk_cache.options().geometry;
  const cache::CacheGeometry want = TrunkCacheGeometry(g.dtype);
  TORCH_CHECK(g.num_layers == want.num_layers && g.num_heads == want.num_heads &&
                  g.head_dim == want.head_dim,
              "CameraHead::ForwardFrame: trunk cache geometry (layers ", g.num_layers, ", heads ",
              g.num_heads, ", head_dim ", g.head_dim, ") does not match the head (",
              want.num_layers, ", ", want.num_heads, ", ", want.head_dim, ")");
  const at::Tensor& ref = embed_pose_.weight;
  const at::Tensor tokens = camera_token.to(ref.device(), ref.scalar_type()).view({1, 1, -1});
  cache::FrameTokens frame_tokens;
  frame_tokens.frame_index = frame_index;
  frame_tokens.roles =
      at::full({1}, static_cast<int64_t>(cache::TokenRole::kCamera),
               at::TensorOptions().dtype(at::kByte).device(trunk_cache.options().device));
  const auto attend = [&](int64_t it, int64_t b) -> AttendFn {
    const int64_t layer = it * cfg_.trunk_depth + b;
    return [&, layer](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      trunk_cache.Append(layer, k[0].to(g.dtype), v[0].to(g.dtype), frame_tokens);
      const cache::LayerView view = trunk_cache.layer(layer);
      return SoftmaxAttention(q.to(g.dtype), view.keys.unsqueeze(0), view.values.unsqueeze(0))
          .to(q.scalar_type());
    };
  };
  return Run(tokens, attend).view({kPoseDim});
}

at::Tensor CameraHead::ForwardBatchCausal(const at::Tensor& camera_tokens) const {
  TORCH_CHECK(camera_tokens.defined() && camera_tokens.dim() == 2 &&
                  camera_tokens.size(1) == cfg_.dim_in && camera_tokens.size(0) >= 1,
              "CameraHead::ForwardBatchCausal: camera_tokens must be [S, ", cfg_.dim_in, "], got ",
              camera_tokens.defined() ? camera_tokens.sizes() : at::IntArrayRef{});
  const at::Tensor& ref = embed_pose_.weight;
  const at::Tensor tokens = camera_tokens.to(ref.device(), ref.scalar_type()).unsqueeze(0);
  const at::Tensor mask = BlockCausalMask(camera_tokens.size(0), 1, tokens.options());
  const AttendFn masked = [&mask](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return SoftmaxAttention(q, k, v, mask);
  };
  return Run(tokens, [&masked](int64_t, int64_t) { return masked; })[0];
}

at::Tensor QuaternionToMatrix(const at::Tensor& quat_xyzw) {
  TORCH_CHECK(quat_xyzw.size(-1) == 4, "QuaternionToMatrix: last dim must be 4, got ",
              quat_xyzw.sizes());
  const at::Tensor i = quat_xyzw.select(-1, 0), j = quat_xyzw.select(-1, 1);
  const at::Tensor k = quat_xyzw.select(-1, 2), r = quat_xyzw.select(-1, 3);
  const at::Tensor two_s = 2.0 / (quat_xyzw * quat_xyzw).sum(-1);
  const at::Tensor m =
      at::stack({1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                 two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                 two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)},
                -1);
  std::vector<int64_t> shape = quat_xyzw.sizes().vec();
  shape.back() = 3;
  shape.push_back(3);
  return m.reshape(shape);
}

CameraParameters PoseEncodingToExtrinsicIntrinsic(const at::Tensor& pose_enc, int64_t height,
                                                  int64_t width) {
  TORCH_CHECK(pose_enc.defined() && pose_enc.dim() == 2 && pose_enc.size(1) == 9,
              "PoseEncodingToExtrinsicIntrinsic: pose_enc must be [S, 9], got ",
              pose_enc.defined() ? pose_enc.sizes() : at::IntArrayRef{});
  const at::Tensor t = pose_enc.narrow(1, 0, 3);  // [S, 3]
  const at::Tensor rot = QuaternionToMatrix(pose_enc.narrow(1, 3, 4));
  CameraParameters out;
  out.extrinsic = at::cat({rot, t.unsqueeze(-1)}, -1);  // [S, 3, 4]
  const double half_h = static_cast<double>(height) / 2.0;
  const double half_w = static_cast<double>(width) / 2.0;
  const at::Tensor fy = half_h / at::tan(pose_enc.select(1, 7) / 2.0);
  const at::Tensor fx = half_w / at::tan(pose_enc.select(1, 8) / 2.0);
  at::Tensor k = at::zeros({pose_enc.size(0), 3, 3}, pose_enc.options());
  k.select(1, 0).select(1, 0).copy_(fx);
  k.select(1, 1).select(1, 1).copy_(fy);
  k.select(1, 0).select(1, 2).fill_(half_w);
  k.select(1, 1).select(1, 2).fill_(half_h);
  k.select(1, 2).select(1, 2).fill_(1.0);
  out.intrinsic = k;
  return out;
}

}  // namespace streamkv::models::stream3r
