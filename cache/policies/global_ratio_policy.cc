#include "cache/policies/global_ratio_policy.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>

namespace streamkv::cache {

const PolicyDescriptor& GlobalRatioPolicy::Descriptor() {
  static const auto* const descriptor = new PolicyDescriptor{
      "global_ratio",
      "Each frame, drop the given fraction of evictable tokens with the lowest attention from "
      "the current frame; first frame and camera/register tokens are protected.",
      {
          {"ratio", ParamSpec::Type::kDouble, "0.3", 0, 1, false, {},
           "Fraction of the evictable tokens removed every frame."},
          {"reduction", ParamSpec::Type::kEnum, "sum", 0, 0, false, {"sum", "max", "mean"},
           "How the current frame's queries' attention is reduced into one score per token."},
      },
      [](const ParsedParams& p, const CacheGeometry&)
          -> absl::StatusOr<std::unique_ptr<EvictionPolicy>> {
        const std::string& reduction = p.Enum("reduction");
        return std::make_unique<GlobalRatioPolicy>(
            p.Double("ratio"), reduction == "max"    ? Reduction::kMax
                               : reduction == "mean" ? Reduction::kMean
                                                     : Reduction::kSum);
      }};
  return *descriptor;
}

GlobalRatioPolicy::GlobalRatioPolicy(double ratio, Reduction reduction)
    : ratio_(ratio), reduction_(reduction) {}

ScoreRequest GlobalRatioPolicy::score_request() const {
  // The mean over a frame's queries is the sum divided by their count: it ranks tokens exactly
  // as the sum does.
  return ScoreRequest{true, false,
                      reduction_ == Reduction::kMax ? kernels::QueryReduction::kMax
                                                    : kernels::QueryReduction::kSum};
}

// The score is this frame's attention only; protected tokens hold +inf.
void GlobalRatioPolicy::ObserveLayer(int64_t frame_index, int64_t layer, const at::Tensor& scores,
                                     KvCache& cache) {
  if (first_frame_ < 0) first_frame_ = frame_index;
  LayerView view = cache.layer(layer);
  view.score.copy_(scores.view({1, -1}));
  view.score.masked_fill_(SpecialTokenMask(view) | (view.frame == first_frame_),
                          std::numeric_limits<float>::infinity());
  view.exposure.add_(1);
}

EvictionOutcome GlobalRatioPolicy::EndFrame(int64_t, KvCache& cache) {
  EvictionOutcome outcome;
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    const LayerView view = cache.layer(layer);
    const int64_t length = cache.length(layer);
    const int64_t evictable = length - view.score.isinf().sum().item<int64_t>();
    const auto drop = static_cast<int64_t>(std::floor(ratio_ * evictable));
    outcome.evicted.push_back(drop > 0 ? ApplyKeep(cache, layer, TopRanked(view.score,
                                                                           length - drop))
                                       : 0);
  }
  return outcome;
}

}  // namespace streamkv::cache
