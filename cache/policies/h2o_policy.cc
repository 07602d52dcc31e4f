#include "cache/policies/h2o_policy.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "absl/status/status.h"

namespace streamkv::cache {
namespace {

// Picks the token count or the ratio form of one budget, leaving `size` at its default when
// neither is given; giving both is ambiguous.
absl::Status ChooseBudget(const ParsedParams& p, const char* size_name, const char* ratio_name,
                          int64_t& size, double& ratio) {
  if (p.Has(size_name) && p.Has(ratio_name)) {
    return absl::InvalidArgumentError(std::string("policy 'h2o': give either '") + size_name +
                                      "' or '" + ratio_name + "', not both");
  }
  if (p.Has(ratio_name)) ratio = p.Double(ratio_name);
  if (p.Has(size_name)) size = p.Int(size_name);
  return absl::OkStatus();
}

}  // namespace

const PolicyDescriptor& H2oPolicy::Descriptor() {
  static const auto* const descriptor = new PolicyDescriptor{
      "h2o",
      "Heavy-Hitter Oracle: keep the recent window plus the tokens with the most accumulated "
      "attention.",
      {
          {"heavy_size", ParamSpec::Type::kInt, "", 0, 1e9, false, {},
           "Heavy-hitter tokens kept per layer (per head). Default 1024 unless hh_ratio is given."},
          {"recent_size", ParamSpec::Type::kInt, "", 0, 1e9, false, {},
           "Most recent tokens kept per layer. Default 1024 unless recent_ratio is given."},
          {"hh_ratio", ParamSpec::Type::kDouble, "", 0, 1, true, {},
           "Heavy budget as a fraction of the layer's length before eviction."},
          {"recent_ratio", ParamSpec::Type::kDouble, "", 0, 1, true, {},
           "Recent budget as a fraction of the layer's length before eviction."},
          {"normalize_by_lifetime", ParamSpec::Type::kBool, "false", 0, 0, false, {},
           "Rank by accumulated attention divided by the number of frames that scored the token."},
          {"granularity", ParamSpec::Type::kEnum, "head", 0, 0, false, {"head", "layer"},
           "Select heavy hitters per attention head (as H2O) or once per layer."},
      },
      [](const ParsedParams& p, const CacheGeometry&)
          -> absl::StatusOr<std::unique_ptr<EvictionPolicy>> {
        Options options;
        options.heavy_size = options.recent_size = 1024;
        if (absl::Status s = ChooseBudget(p, "heavy_size", "hh_ratio", options.heavy_size,
                                          options.heavy_ratio);
            !s.ok()) {
          return s;
        }
        if (absl::Status s = ChooseBudget(p, "recent_size", "recent_ratio", options.recent_size,
                                          options.recent_ratio);
            !s.ok()) {
          return s;
        }
        if (options.heavy_ratio == 0 && options.recent_ratio == 0 &&
            options.heavy_size + options.recent_size == 0) {
          return absl::InvalidArgumentError(
              "policy 'h2o': heavy_size + recent_size must be at least 1");
        }
        options.normalize_by_lifetime = p.Bool("normalize_by_lifetime");
        options.granularity =
            p.Enum("granularity") == "head" ? Granularity::kHead : Granularity::kLayer;
        return std::make_unique<H2oPolicy>(options);
      }};
  return *descriptor;
}

H2oPolicy::H2oPolicy(const Options& options) : options_(options) {}

ScoreRequest H2oPolicy::score_request() const {
  return ScoreRequest{true, options_.granularity == Granularity::kHead,
                      kernels::QueryReduction::kSum};
}

std::optional<int64_t> H2oPolicy::MaxTokensPerLayer() const {
  if (options_.heavy_ratio > 0 || options_.recent_ratio > 0) return std::nullopt;
  return options_.heavy_size + options_.recent_size;
}

void H2oPolicy::ObserveLayer(int64_t, int64_t layer, const at::Tensor& scores, KvCache& cache) {
  LayerView view = cache.layer(layer);
  view.score.add_(scores.view({view.score.size(0), -1}));
  view.exposure.add_(1);
}

EvictionOutcome H2oPolicy::EndFrame(int64_t, KvCache& cache) {
  EvictionOutcome outcome;
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    const int64_t length = cache.length(layer);
    const auto budget = [length](int64_t size, double ratio) {
      return ratio > 0 ? static_cast<int64_t>(std::floor(ratio * length)) : size;
    };
    const int64_t recent = std::min(budget(options_.recent_size, options_.recent_ratio), length);
    const int64_t heavy =
        std::min(budget(options_.heavy_size, options_.heavy_ratio), length - recent);
    if (recent + heavy >= length) {
      outcome.evicted.push_back(0);
      continue;
    }
    // Heavy hitters come from the tokens before the recent window. Recent tokens are never
    // evicted, so the window holds the same tokens in every head.
    const LayerView view = cache.layer(layer);
    const int64_t older = length - recent;
    at::Tensor rank = view.score.narrow(1, 0, older);
    if (options_.normalize_by_lifetime) {
      rank = rank / view.exposure.narrow(1, 0, older).clamp_min(1).to(at::kFloat);
    }
    const at::Tensor heavy_keep = TopRanked(rank, heavy);
    const at::Tensor recent_keep =
        at::arange(older, length, heavy_keep.options()).expand({heavy_keep.size(0), recent});
    outcome.evicted.push_back(ApplyKeep(cache, layer, at::cat({heavy_keep, recent_keep}, 1)));
  }
  return outcome;
}

}  // namespace streamkv::cache
