#include "models/stream3r/layers.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cmath>
#include <limits>

#include "kernels/attention_with_scores.h"

namespace streamkv::models::stream3r {

at::Tensor CheckpointParamSource::Get(const std::string& name, at::IntArrayRef shape) {
  return checkpoint_.Take(name, shape);
}

at::Tensor ShapeRecorder::Get(const std::string& name, at::IntArrayRef shape) {
  shapes_.emplace_back(name, shape.vec());
  // A broadcast scalar: the right shape without storage for it.
  return at::zeros({}, at::kFloat).expand(shape);
}

void MoveTensor(at::Tensor& t, c10::Device device, c10::ScalarType dtype) {
  if (t.defined()) t = t.to(device, dtype);
}

// ---- Linear, LayerNorm, Mlp, LayerScale ----

Linear Linear::Load(ParamSource& src, const std::string& prefix, int64_t in, int64_t out,
                    bool bias) {
  Linear l;
  l.weight = src.Get(prefix + ".weight", {out, in});
  if (bias) l.bias = src.Get(prefix + ".bias", {out});
  return l;
}

at::Tensor Linear::Forward(const at::Tensor& x) const { return at::linear(x, weight, bias); }

void Linear::To(c10::Device device, c10::ScalarType dtype) {
  MoveTensor(weight, device, dtype);
  MoveTensor(bias, device, dtype);
}

LayerNorm LayerNorm::Load(ParamSource& src, const std::string& prefix, int64_t dim, double eps) {
  LayerNorm n;
  n.weight = src.Get(prefix + ".weight", {dim});
  n.bias = src.Get(prefix + ".bias", {dim});
  n.dim = dim;
  n.eps = eps;
  return n;
}

LayerNorm LayerNorm::NoAffine(int64_t dim, double eps) {
  LayerNorm n;
  n.dim = dim;
  n.eps = eps;
  return n;
}

at::Tensor LayerNorm::Forward(const at::Tensor& x) const {
  return at::layer_norm(x, {dim}, weight, bias, eps);
}

void LayerNorm::To(c10::Device device, c10::ScalarType dtype) {
  MoveTensor(weight, device, dtype);
  MoveTensor(bias, device, dtype);
}

Mlp Mlp::Load(ParamSource& src, const std::string& prefix, int64_t in, int64_t hidden, int64_t out,
              bool bias) {
  Mlp m;
  m.fc1 = Linear::Load(src, prefix + ".fc1", in, hidden, bias);
  m.fc2 = Linear::Load(src, prefix + ".fc2", hidden, out, bias);
  return m;
}

at::Tensor Mlp::Forward(const at::Tensor& x) const { return fc2.Forward(at::gelu(fc1.Forward(x))); }

void Mlp::To(c10::Device device, c10::ScalarType dtype) {
  fc1.To(device, dtype);
  fc2.To(device, dtype);
}

LayerScale LayerScale::Load(ParamSource& src, const std::string& prefix, int64_t dim,
                            bool enabled) {
  LayerScale s;
  if (enabled) s.gamma = src.Get(prefix + ".gamma", {dim});
  return s;
}

at::Tensor LayerScale::Forward(const at::Tensor& x) const {
  return gamma.defined() ? x * gamma : x;
}

void LayerScale::To(c10::Device device, c10::ScalarType dtype) { MoveTensor(gamma, device, dtype); }

// ---- RoPE and positions ----

RotaryTables MakeRotaryTables(const at::Tensor& pos, int64_t head_dim, double base,
                              c10::ScalarType dtype) {
  TORCH_CHECK(pos.dim() == 2 && pos.size(1) == 2, "MakeRotaryTables: pos must be [N, 2], got ",
              pos.sizes());
  TORCH_CHECK(head_dim % 4 == 0, "MakeRotaryTables: head_dim must be a multiple of 4, got ",
              head_dim);
  const int64_t half = head_dim / 2;  // channels per axis
  const auto f32 = pos.options().dtype(at::kFloat);
  // inv_freq[i] = 1 / base^(2i / half), i < half/2; computed in float32 as upstream.
  const at::Tensor exponents = at::arange(0, half, 2, f32) / static_cast<double>(half);
  const at::Tensor inv_freq = at::pow(base, exponents).reciprocal();  // [half/2]
  const auto axis_angles = [&](int64_t axis) {
    const at::Tensor a = at::outer(pos.select(1, axis).to(at::kFloat), inv_freq);  // [N, half/2]
    return at::cat({a, a}, -1).to(dtype);                                          // [N, half]
  };
  const at::Tensor y = axis_angles(0);
  const at::Tensor x = axis_angles(1);
  return {at::cat({y.cos(), x.cos()}, -1), at::cat({y.sin(), x.sin()}, -1)};
}

at::Tensor ApplyRotary(const at::Tensor& x, const RotaryTables& tables) {
  const int64_t q = x.size(-1) / 4;
  // Rotate-half within each axis half: [a, b | c, d] -> [-b, a | -d, c].
  const at::Tensor rotated = at::cat(
      {-x.narrow(-1, q, q), x.narrow(-1, 0, q), -x.narrow(-1, 3 * q, q), x.narrow(-1, 2 * q, q)},
      -1);
  return x * tables.cos + rotated * tables.sin;
}

at::Tensor FramePositions(int64_t num_special, int64_t grid_h, int64_t grid_w, c10::Device device) {
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor ys = at::arange(1, grid_h + 1, i64).repeat_interleave(grid_w);
  const at::Tensor xs = at::arange(1, grid_w + 1, i64).repeat({grid_h});
  const at::Tensor patches = at::stack({ys, xs}, 1);  // [h·w, 2]
  return at::cat({at::zeros({num_special, 2}, i64), patches}, 0);
}

// ---- Attention ----

at::Tensor SoftmaxAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& mask) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    // PyTorch's fused attention (flash / memory-efficient / cuDNN, picked by ATen) when no scores
    // are needed; its default scale is 1/sqrt(D), as above. An additive mask must have q's dtype.
    c10::optional<at::Tensor> attn_mask;
    if (mask.defined()) attn_mask = mask.to(q.scalar_type());
    return at::scaled_dot_product_attention(q, k, v, attn_mask, /*dropout_p=*/0.0,
                                            /*is_causal=*/false);
  }
#endif
  if (!mask.defined()) {
    // Every (batch, head) pair attends independently: fold them into the kernel's head axis. The
    // chunked kernel reuses its buffers, so it never holds a [B, H, N, T] matrix.
    kernels::AttentionScoresOptions output_only;
    output_only.head_mean_scores = false;
    return kernels::AttentionWithKeyScores(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1),
                                           scale, output_only)
        .output.view(q.sizes());
  }
  at::Tensor logits = at::matmul(q, k.transpose(-2, -1)).mul_(scale);  // [B, H, N, T]
  logits.add_(mask);
  return at::matmul(at::softmax(logits, -1), v);
}

at::Tensor BlockCausalMask(int64_t num_frames, int64_t tokens_per_frame,
                           const at::TensorOptions& options) {
  const at::Tensor frame = at::arange(num_frames * tokens_per_frame, options.dtype(at::kLong))
                               .div(tokens_per_frame, "floor");
  const at::Tensor future = frame.unsqueeze(0) > frame.unsqueeze(1);  // [query, key]
  return at::zeros(future.sizes(), options)
      .masked_fill_(future, -std::numeric_limits<double>::infinity());
}

Attention Attention::Load(ParamSource& src, const std::string& prefix, const BlockConfig& cfg) {
  TORCH_CHECK(cfg.num_heads > 0 && cfg.dim % cfg.num_heads == 0, "Attention ", prefix, ": dim ",
              cfg.dim, " is not divisible by num_heads ", cfg.num_heads);
  Attention a;
  a.num_heads = cfg.num_heads;
  a.head_dim = cfg.dim / cfg.num_heads;
  a.qkv = Linear::Load(src, prefix + ".qkv", cfg.dim, 3 * cfg.dim, cfg.qkv_bias);
  if (cfg.qk_norm) {
    // Upstream builds q_norm/k_norm with nn.LayerNorm's default eps.
    a.q_norm = LayerNorm::Load(src, prefix + ".q_norm", a.head_dim, 1e-5);
    a.k_norm = LayerNorm::Load(src, prefix + ".k_norm", a.head_dim, 1e-5);
  }
  a.proj = Linear::Load(src, prefix + ".proj", cfg.dim, cfg.dim, cfg.proj_bias);
  return a;
}

at::Tensor Attention::Forward(const at::Tensor& x, const RotaryTables* rope,
                              const AttendFn& attend) const {
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2);
  // [B, N, 3C] -> [3, B, H, N, D]
  const at::Tensor qkv_heads =
      qkv.Forward(x).view({b, n, 3, num_heads, head_dim}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv_heads[0], k = qkv_heads[1];
  const at::Tensor v = qkv_heads[2];
  if (q_norm.dim > 0) {
    q = q_norm.Forward(q);
    k = k_norm.Forward(k);
  }
  if (rope != nullptr) {
    q = ApplyRotary(q, *rope);
    k = ApplyRotary(k, *rope);
  }
  const at::Tensor out = attend(q, k, v);  // [B, H, N, D]
  return proj.Forward(out.transpose(1, 2).reshape({b, n, c}));
}

void Attention::To(c10::Device device, c10::ScalarType dtype) {
  qkv.To(device, dtype);
  proj.To(device, dtype);
  q_norm.To(device, dtype);
  k_norm.To(device, dtype);
}

// ---- Block ----

Block Block::Load(ParamSource& src, const std::string& prefix, const BlockConfig& cfg) {
  Block blk;
  blk.norm1 = LayerNorm::Load(src, prefix + ".norm1", cfg.dim, cfg.norm_eps);
  blk.attn = Attention::Load(src, prefix + ".attn", cfg);
  blk.ls1 = LayerScale::Load(src, prefix + ".ls1", cfg.dim, cfg.layer_scale);
  blk.norm2 = LayerNorm::Load(src, prefix + ".norm2", cfg.dim, cfg.norm_eps);
  const auto hidden = static_cast<int64_t>(static_cast<double>(cfg.dim) * cfg.mlp_ratio);
  blk.mlp = Mlp::Load(src, prefix + ".mlp", cfg.dim, hidden, cfg.dim, cfg.ffn_bias);
  blk.ls2 = LayerScale::Load(src, prefix + ".ls2", cfg.dim, cfg.layer_scale);
  return blk;
}

at::Tensor Block::Forward(const at::Tensor& x, const RotaryTables* rope,
                          const AttendFn& attend) const {
  const at::Tensor h = x + ls1.Forward(attn.Forward(norm1.Forward(x), rope, attend));
  return h + ls2.Forward(mlp.Forward(norm2.Forward(h)));
}

void Block::To(c10::Device device, c10::ScalarType dtype) {
  norm1.To(device, dtype);
  norm2.To(device, dtype);
  attn.To(device, dtype);
  ls1.To(device, dtype);
  ls2.To(device, dtype);
  mlp.To(device, dtype);
}

}  // namespace streamkv::models::stream3r
