// `h2o` (Heavy-Hitter Oracle): the recent window plus the tokens with the most accumulated
// attention.
#pragma once

#include "cache/eviction_policy.h"

namespace streamkv::cache {

// Each frame, per layer (or per head): score += attention received (sum over the frame's
// queries); keeps the `recent` most recent tokens and the `heavy` highest-scoring others. Budgets
// are token counts, or ratios of the layer's length before eviction (the H2O hh_ratio form).
// Optionally ranks by score / exposure (lifetime normalisation) so old tokens do not win by age
// alone. Not thread-safe (one per session).
class H2oPolicy final : public EvictionPolicy {
 public:
  struct Options {
    int64_t heavy_size = 0;    // used when heavy_ratio == 0
    int64_t recent_size = 0;   // used when recent_ratio == 0
    double heavy_ratio = 0;    // heavy = floor(heavy_ratio · T) when > 0
    double recent_ratio = 0;   // recent = floor(recent_ratio · T) when > 0
    bool normalize_by_lifetime = false;
    Granularity granularity = Granularity::kHead;
  };

  static const PolicyDescriptor& Descriptor();

  explicit H2oPolicy(const Options& options);

  absl::string_view name() const override { return "h2o"; }
  ScoreRequest score_request() const override;
  Granularity granularity() const override { return options_.granularity; }
  std::optional<int64_t> MaxTokensPerLayer() const override;
  void ObserveLayer(int64_t frame_index, int64_t layer, const at::Tensor& scores,
                    KvCache& cache) override;
  EvictionOutcome EndFrame(int64_t frame_index, KvCache& cache) override;

 private:
  const Options options_;
};

}  // namespace streamkv::cache
