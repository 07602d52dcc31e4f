// `layerwise` (StreamVGGT / Evict3R style): per-layer budgets from attention variance, cumulative
// attention with exposure normalisation, first frame and special tokens protected.
#pragma once

#include <vector>

#include "cache/eviction_policy.h"

namespace streamkv::cache {

// Per frame and layer l, with a_l the head-averaged attention summed over the frame's queries
// (one value per cached token, T_l tokens):
//   CAM[old] += a_l[old]·T_l;  CAM[new] = a_l[new]·T_l;  exposure[old] += 1, exposure[new] = 1;
//   first frame and each frame's camera/register tokens: CAM = +inf (never evicted).
// Then α = softmax(−var(a_l)/temp) over layers (population variance), keep_l = floor(α_l·B), and
// each layer keeps its keep_l tokens with the largest CAM/(exposure+1e-6). B is the total token
// budget over all layers: budget_ratio·num_frames·L·P_tok (seed form), budget_frames·L·P_tok,
// budget_tokens, or budget_bytes / bytes per cached token. Not thread-safe (one per session).
class LayerwisePolicy final : public EvictionPolicy {
 public:
  static const PolicyDescriptor& Descriptor();

  LayerwisePolicy(int64_t budget_tokens, double temp, int64_t num_layers);

  absl::string_view name() const override { return "layerwise"; }
  ScoreRequest score_request() const override;
  void ObserveLayer(int64_t frame_index, int64_t layer, const at::Tensor& scores,
                    KvCache& cache) override;
  EvictionOutcome EndFrame(int64_t frame_index, KvCache& cache) override;

  int64_t budget_tokens() const { return budget_tokens_; }
  // keep_l = floor(softmax(−variance/temp)_l · budget) for the given per-layer variances.
  std::vector<int64_t> KeepTargets(const at::Tensor& variances) const;

 private:
  const int64_t budget_tokens_;
  const double temp_;
  int64_t first_frame_ = -1;  // the session's first frame, protected for good
  std::vector<at::Tensor> variances_;  // per layer: var(a_l) of the current frame (0-dim)
};

}  // namespace streamkv::cache
