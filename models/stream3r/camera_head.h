// The VGGT / STream3R camera head: iterative AdaLN-modulated trunk over each frame's camera token,
// causal across frames through a per-(iteration, trunk block) KV cache, and the pose-encoding
// decoding into OpenCV extrinsics/intrinsics.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cache/kv_cache.h"
#include "models/stream3r/layers.h"
#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {

// Named like upstream CameraHead's constructor arguments; defaults are the released model's.
struct CameraHeadConfig {
  int64_t dim_in = 2048;  // 2 · aggregator embed_dim
  int64_t trunk_depth = 4;
  std::string pose_encoding_type = "absT_quaR_FoV";  // the only supported encoding (9-D)
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  double init_values = 0.01;         // LayerScale present iff != 0
  std::string trans_act = "linear";  // linear | inv_log | exp | relu
  std::string quat_act = "linear";
  std::string fl_act = "relu";
  int64_t num_iterations = 4;  // refinement iterations (upstream forward's default)
};

// Predicts the 9-D pose encoding t(3), quaternion xyzw(4), fov_h, fov_w per frame. Immutable after
// Load/To: forwards may run concurrently on distinct caches.
class CameraHead {
 public:
  static constexpr int64_t kPoseDim = 9;

  // Takes every parameter ("camera_head." prefix). Throws c10::Error naming a missing or
  // misshapen key, or an invalid config.
  static CameraHead Load(Checkpoint& ckpt, const CameraHeadConfig& cfg);
  static CameraHead Load(ParamSource& src, const CameraHeadConfig& cfg);
  static ParameterShapeList ParameterShapes(const CameraHeadConfig& cfg);

  void To(c10::Device device, c10::ScalarType dtype);
  const CameraHeadConfig& config() const { return cfg_; }

  // The trunk cache: layer it·trunk_depth + b caches trunk block b of iteration it; one token
  // (role camera) per frame.
  cache::CacheGeometry TrunkCacheGeometry(c10::ScalarType dtype) const;

  // One frame: camera_token [2C] is token 0 of the last aggregated layer. Appends the frame's
  // trunk keys/values to every layer of `trunk_cache` and attends over all it holds. Returns the
  // final iteration's activated pose encoding [9].
  at::Tensor ForwardFrame(const at::Tensor& camera_token, int64_t frame_index,
                          cache::KvCache& trunk_cache) const;

  // Reference: camera_tokens [S, 2C], trunk attention causal over frames, no cache. Returns [S, 9].
  at::Tensor ForwardBatchCausal(const at::Tensor& camera_tokens) const;

 private:
  // tokens [1, S, C] with attend(it, b) the attention of trunk block b in iteration it.
  at::Tensor Run(const at::Tensor& tokens,
                 const std::function<AttendFn(int64_t, int64_t)>& attend) const;
  at::Tensor Activate(const at::Tensor& pose_enc) const;  // [..., 9]

  CameraHeadConfig cfg_;
  std::vector<Block> trunk_;
  LayerNorm token_norm_, trunk_norm_, adaln_norm_;
  at::Tensor empty_pose_tokens_;  // [1, 1, 9]
  Linear embed_pose_;             // [C, 9]
  Linear pose_ln_modulation_;     // [3C, C], applied after SiLU: shift, scale, gate
  Mlp pose_branch_;               // C -> C/2 -> 9
};

struct CameraParameters {
  at::Tensor extrinsic;  // [S, 3, 4] camera-from-world [R | t], OpenCV axes
  at::Tensor intrinsic;  // [S, 3, 3] pixels, principal point at the image centre
};

// Decodes "absT_quaR_FoV" encodings [S, 9] for images of height × width (upstream
// pose_encoding_to_extri_intri): R from the xyzw quaternion (normalised by its squared norm),
// fy = (H/2)/tan(fov_h/2), fx = (W/2)/tan(fov_w/2), cx = W/2, cy = H/2.
CameraParameters PoseEncodingToExtrinsicIntrinsic(const at::Tensor& pose_enc, int64_t height,
                                                  int64_t width);

// Rotation matrices [..., 3, 3] of quaternions [..., 4] in xyzw order.
at::Tensor QuaternionToMatrix(const at::Tensor& quat_xyzw);

}  // namespace streamkv::models::stream3r
