#include "cache/policies/layerwise_policy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamkv::cache {
namespace {

constexpr float kInfinity = std::numeric_limits<float>::infinity();
// Keeps the exposure normalisation finite; as in the seed formula.
constexpr double kExposureEpsilon = 1e-6;

// The total token budget B from whichever budget form was given (exactly one).
absl::StatusOr<int64_t> BudgetTokens(const ParsedParams& p, const CacheGeometry& geometry) {
  const int forms = p.Has("num_frames") + p.Has("budget_frames") + p.Has("budget_tokens") +
                    p.Has("budget_bytes");
  if (forms != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy 'layerwise': give exactly one budget: num_frames (with budget_ratio), "
        "budget_frames, budget_tokens or budget_bytes; got ",
        forms));
  }
  const bool per_frame = p.Has("num_frames") || p.Has("budget_frames");
  if (per_frame && geometry.tokens_per_frame <= 0) {
    return absl::InvalidArgumentError(
        "policy 'layerwise': num_frames and budget_frames need a model with a fixed number of "
        "tokens per frame; use budget_tokens or budget_bytes");
  }
  const double frame_tokens =
      static_cast<double>(geometry.num_layers) * static_cast<double>(geometry.tokens_per_frame);
  if (p.Has("num_frames")) {
    return static_cast<int64_t>(
        std::floor(p.Double("budget_ratio") * static_cast<double>(p.Int("num_frames")) *
                   frame_tokens));
  }
  if (p.Has("budget_frames")) {
    return static_cast<int64_t>(static_cast<double>(p.Int("budget_frames")) * frame_tokens);
  }
  if (p.Has("budget_tokens")) return p.Int("budget_tokens");
  return p.Int("budget_bytes") / geometry.BytesPerToken(Granularity::kLayer);
}

}  // namespace

const PolicyDescriptor& LayerwisePolicy::Descriptor() {
  static const auto* const descriptor = new PolicyDescriptor{
      "layerwise",
      "Per-layer budgets from attention variance; cumulative attention with exposure "
      "normalisation; first frame and camera/register tokens protected.",
      {
          {"budget_ratio", ParamSpec::Type::kDouble, "0.5", 0, 1, true, {},
           "Seed form: fraction of num_frames' tokens kept."},
          {"num_frames", ParamSpec::Type::kInt, "", 1, 1e9, false, {},
           "Seed form: expected stream length; budget = budget_ratio·num_frames·layers·P_tok."},
          {"budget_frames", ParamSpec::Type::kInt, "", 1, 1e9, false, {},
           "Budget of this many frames' tokens in every layer (layers·P_tok per frame)."},
          {"budget_tokens", ParamSpec::Type::kInt, "", 1, 1e12, false, {},
           "Budget in cached tokens summed over layers."},
          {"budget_bytes", ParamSpec::Type::kInt, "", 1, 1e15, false, {},
           "Budget in bytes of K, V and metadata summed over layers."},
          {"temp", ParamSpec::Type::kDouble, "0.5", 0, 1e9, true, {},
           "Softmax temperature of the variance-based layer weights."},
      },
      [](const ParsedParams& p, const CacheGeometry& geometry)
          -> absl::StatusOr<std::unique_ptr<EvictionPolicy>> {
        absl::StatusOr<int64_t> budget = BudgetTokens(p, geometry);
        if (!budget.ok()) return budget.status();
        if (*budget < 1) {
          const char* form = p.Has("budget_bytes")    ? "budget_bytes"
                             : p.Has("budget_tokens") ? "budget_tokens"
                             : p.Has("budget_frames") ? "budget_frames"
                                                      : "budget_ratio";
          return absl::InvalidArgumentError(absl::StrCat(
              "policy 'layerwise': parameter '", form, "' gives a budget of no token (one token "
              "takes ", geometry.BytesPerToken(Granularity::kLayer), " bytes in a layer)"));
        }
        return std::make_unique<LayerwisePolicy>(*budget, p.Double("temp"), geometry.num_layers);
      }};
  return *descriptor;
}

LayerwisePolicy::LayerwisePolicy(int64_t budget_tokens, double temp, int64_t num_layers)
    : budget_tokens_(budget_tokens), temp_(temp), variances_(num_layers) {}

ScoreRequest LayerwisePolicy::score_request() const {
  return ScoreRequest{true, false, kernels::QueryReduction::kSum};
}

void LayerwisePolicy::ObserveLayer(int64_t frame_index, int64_t layer, const at::Tensor& scores,
                                   KvCache& cache) {
  if (first_frame_ < 0) first_frame_ = frame_index;
  LayerView view = cache.layer(layer);
  const at::Tensor a = scores.view({1, -1});
  const int64_t length = a.size(1);
  const at::Tensor is_new = view.frame == frame_index;
  // Old tokens accumulate, new ones start from this frame; +inf stays +inf.
  view.score.copy_(at::where(is_new, a * length, view.score + a * length));
  view.exposure.copy_(at::where(is_new, at::ones_like(view.exposure), view.exposure + 1));
  const at::Tensor protect =
      frame_index == first_frame_ ? is_new : is_new & SpecialTokenMask(view);
  view.score.masked_fill_(protect, kInfinity);
  variances_[layer] = a.var(/*unbiased=*/false);
}

std::vector<int64_t> LayerwisePolicy::KeepTargets(const at::Tensor& variances) const {
  const at::Tensor weights = at::softmax(-variances.to(at::kDouble) / temp_, 0).cpu();
  std::vector<int64_t> targets(weights.numel());
  for (int64_t l = 0; l < weights.numel(); ++l) {
    targets[l] = static_cast<int64_t>(
        std::floor(weights[l].item<double>() * static_cast<double>(budget_tokens_)));
  }
  return targets;
}

EvictionOutcome LayerwisePolicy::EndFrame(int64_t, KvCache& cache) {
  EvictionOutcome outcome{std::vector<int64_t>(cache.num_layers(), 0)};
  for (const at::Tensor& v : variances_) {
    TORCH_CHECK(v.defined(), "layerwise: EndFrame before every layer was observed");
  }
  const std::vector<int64_t> targets = KeepTargets(at::stack(variances_));
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    const int64_t length = cache.length(layer);
    if (length <= targets[layer]) continue;
    const LayerView view = cache.layer(layer);
    const int64_t protected_tokens = view.score.isinf().sum().item<int64_t>();
    const int64_t keep = std::max(targets[layer], protected_tokens);
    outcome.protected_overflow += keep - targets[layer];
    const at::Tensor rank = view.score / (view.exposure.to(at::kFloat) + kExposureEpsilon);
    outcome.evicted[layer] = ApplyKeep(cache, layer, TopRanked(rank, keep));
  }
  for (at::Tensor& v : variances_) v.reset();
  return outcome;
}

}  // namespace streamkv::cache
