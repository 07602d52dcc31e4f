// `global_ratio`: each frame drops a fixed fraction of the evictable tokens that the current
// frame attended to least, the same fraction in every layer.
#pragma once

#include "cache/eviction_policy.h"

namespace streamkv::cache {

// Each frame, per layer: evictable = tokens that are neither from the session's first frame nor
// camera/register tokens; removes floor(ratio · evictable) of them with the lowest score from the
// current frame alone (sum, max or mean of attention over the frame's queries).
//
// Deviation from the public implementation: it recognises special tokens by `index % P_tok < 5`,
// which stops matching once any token has been evicted; here they are recognised by their role
// metadata, which compaction keeps aligned. Not thread-safe (one per session).
class GlobalRatioPolicy final : public EvictionPolicy {
 public:
  enum class Reduction { kSum, kMax, kMean };

  static const PolicyDescriptor& Descriptor();

  GlobalRatioPolicy(double ratio, Reduction reduction);

  absl::string_view name() const override { return "global_ratio"; }
  ScoreRequest score_request() const override;
  void ObserveLayer(int64_t frame_index, int64_t layer, const at::Tensor& scores,
                    KvCache& cache) override;
  EvictionOutcome EndFrame(int64_t frame_index, KvCache& cache) override;

 private:
  const double ratio_;
  const Reduction reduction_;
  int64_t first_frame_ = -1;  // the session's first frame, protected for good
};

}  // namespace streamkv::cache
