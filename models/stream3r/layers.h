// Functional transformer building blocks of the VGGT / STream3R family over ATen, with parameters
// taken from a checkpoint by their upstream (PyTorch module path) names.
//
// Every struct holds plain tensors and is immutable after loading (To() aside), so one loaded model
// may run forwards from many threads at once.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {

// Supplies parameters by full upstream name and expected shape. Throws c10::Error naming the key
// when a parameter is missing or misshapen.
class ParamSource {
 public:
  virtual ~ParamSource() = default;
  virtual at::Tensor Get(const std::string& name, at::IntArrayRef shape) = 0;
};

// Parameters from a checkpoint (Checkpoint::Take: float32, CPU).
class CheckpointParamSource final : public ParamSource {
 public:
  explicit CheckpointParamSource(Checkpoint& checkpoint) : checkpoint_(checkpoint) {}
  at::Tensor Get(const std::string& name, at::IntArrayRef shape) override;

 private:
  Checkpoint& checkpoint_;
};

// Records every requested name and shape and returns storage-free zero tensors of that shape, so a
// model's Load doubles as its parameter listing (one source of truth for names and shapes).
class ShapeRecorder final : public ParamSource {
 public:
  at::Tensor Get(const std::string& name, at::IntArrayRef shape) override;
  std::vector<std::pair<std::string, std::vector<int64_t>>> TakeShapes() {
    return std::move(shapes_);
  }

 private:
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes_;
};

using ParameterShapeList = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// Moves `t` (if defined) to `device`/`dtype` in place of the handle.
void MoveTensor(at::Tensor& t, c10::Device device, c10::ScalarType dtype);

// y = x·Wᵀ + b.
struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out], undefined without bias

  static Linear Load(ParamSource& src, const std::string& prefix, int64_t in, int64_t out,
                     bool bias);
  at::Tensor Forward(const at::Tensor& x) const;  // [..., in] -> [..., out]
  void To(c10::Device device, c10::ScalarType dtype);
};

// LayerNorm over the last dimension; weight/bias undefined when not elementwise-affine.
struct LayerNorm {
  at::Tensor weight;  // [dim]
  at::Tensor bias;    // [dim]
  int64_t dim = 0;
  double eps = 1e-5;  // torch.nn.LayerNorm's default

  static LayerNorm Load(ParamSource& src, const std::string& prefix, int64_t dim, double eps);
  static LayerNorm NoAffine(int64_t dim, double eps);
  at::Tensor Forward(const at::Tensor& x) const;
  void To(c10::Device device, c10::ScalarType dtype);
};

// fc1 → exact (erf) GELU → fc2.
struct Mlp {
  Linear fc1;  // [hidden, in]
  Linear fc2;  // [out, hidden]

  static Mlp Load(ParamSource& src, const std::string& prefix, int64_t in, int64_t hidden,
                  int64_t out, bool bias);
  at::Tensor Forward(const at::Tensor& x) const;
  void To(c10::Device device, c10::ScalarType dtype);
};

// x·γ; identity when γ is undefined (upstream init_values = 0/None).
struct LayerScale {
  at::Tensor gamma;  // [dim]

  static LayerScale Load(ParamSource& src, const std::string& prefix, int64_t dim, bool enabled);
  at::Tensor Forward(const at::Tensor& x) const;
  void To(c10::Device device, c10::ScalarType dtype);
};

// 2-D rotary position embedding (VGGT RotaryPositionEmbedding2D). The head dim D splits in two
// halves: the first is rotated by the token's y, the second by its x. Within a half of size F, the
// frequencies are 1/base^(2i/F), i < F/2, each used twice ([θ, θ]), and the rotation pairs channel
// j with j + F/2 (rotate-half convention).
struct RotaryTables {
  at::Tensor cos;  // [N, D]
  at::Tensor sin;  // [N, D]
};

// Tables for positions `pos` [N, 2] (int64: y, x) and head dim `head_dim` (multiple of 4),
// in `dtype` on pos's device.
RotaryTables MakeRotaryTables(const at::Tensor& pos, int64_t head_dim, double base,
                              c10::ScalarType dtype);
// x [..., N, D] rotated by the tables of its N tokens.
at::Tensor ApplyRotary(const at::Tensor& x, const RotaryTables& tables);

// Token positions of one frame, [1 + R + h·w, 2] int64 (y, x): special tokens (camera + R
// registers) at (0, 0), patch (i, j) of the row-major h×w grid at (i + 1, j + 1).
at::Tensor FramePositions(int64_t num_special, int64_t grid_h, int64_t grid_w, c10::Device device);

// Chooses how queries attend: q, k, v [B, H, N, D] (after qk-norm and RoPE) -> [B, H, N, D].
// Callers pass plain, masked, or cached streaming attention.
using AttendFn =
    std::function<at::Tensor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>;

// softmax(q·kᵀ/√D + mask)·v. q [B, H, N, D], k/v [B, H, T, D], mask [N, T] additive or undefined.
at::Tensor SoftmaxAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& mask = at::Tensor());

// Additive [S·P, S·P] mask: frame i's P tokens see frames 0..i (block-causal), -inf elsewhere.
at::Tensor BlockCausalMask(int64_t num_frames, int64_t tokens_per_frame,
                           const at::TensorOptions& options);

struct BlockConfig {
  int64_t dim = 0;
  int64_t num_heads = 1;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  bool proj_bias = true;
  bool ffn_bias = true;
  bool qk_norm = false;
  bool layer_scale = true;  // upstream: LayerScale iff init_values is truthy
  double norm_eps = 1e-5;   // norm1/norm2 (DINOv2 uses 1e-6); q_norm/k_norm always use 1e-5
};

// Multi-head self-attention: qkv → (q_norm, k_norm over head_dim) → RoPE → attend → proj.
struct Attention {
  Linear qkv;                // [3C, C]
  Linear proj;               // [C, C]
  LayerNorm q_norm, k_norm;  // [D]; dim == 0 when qk_norm is off
  int64_t num_heads = 1;
  int64_t head_dim = 0;

  static Attention Load(ParamSource& src, const std::string& prefix, const BlockConfig& cfg);
  // x [B, N, C]; rope null for no RoPE. Returns [B, N, C].
  at::Tensor Forward(const at::Tensor& x, const RotaryTables* rope, const AttendFn& attend) const;
  void To(c10::Device device, c10::ScalarType dtype);
};

// Pre-norm transformer block: x + ls1(attn(norm1(x))), then + ls2(mlp(norm2(x))).
struct Block {
  LayerNorm norm1, norm2;
  Attention attn;
  LayerScale ls1, ls2;
  Mlp mlp;

  static Block Load(ParamSource& src, const std::string& prefix, const BlockConfig& cfg);
  // x [B, N, C] -> [B, N, C].
  at::Tensor Forward(const at::Tensor& x, const RotaryTables* rope, const AttendFn& attend) const;
  void To(c10::Device device, c10::ScalarType dtype);
};

}  // namespace streamkv::models::stream3r
