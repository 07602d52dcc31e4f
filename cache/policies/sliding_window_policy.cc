#include "cache/policies/sliding_window_policy.h"

#include <ATen/ATen.h>

namespace streamkv::cache {

const PolicyDescriptor& SlidingWindowPolicy::Descriptor() {
  static const auto* const descriptor = new PolicyDescriptor{
      "sliding_window",
      "StreamingLLM: keep the first start_size and the last recent_size tokens (or frames).",
      {
          {"start_size", ParamSpec::Type::kInt, "4", 0, 1e9, false, {},
           "Sink tokens (or frames) kept from the start of the stream."},
          {"recent_size", ParamSpec::Type::kInt, "512", 1, 1e9, false, {},
           "Most recent tokens (or frames) kept."},
          {"unit", ParamSpec::Type::kEnum, "tokens", 0, 0, false, {"tokens", "frames"},
           "Whether the sizes count tokens or whole frames."},
      },
      [](const ParsedParams& p, const CacheGeometry& geometry)
          -> absl::StatusOr<std::unique_ptr<EvictionPolicy>> {
        const Unit unit = p.Enum("unit") == "frames" ? Unit::kFrames : Unit::kTokens;
        return std::make_unique<SlidingWindowPolicy>(p.Int("start_size"), p.Int("recent_size"),
                                                     unit, geometry.tokens_per_frame);
      }};
  return *descriptor;
}

SlidingWindowPolicy::SlidingWindowPolicy(int64_t start_size, int64_t recent_size, Unit unit,
                                         int64_t tokens_per_frame)
    : start_size_(start_size),
      recent_size_(recent_size),
      unit_(unit),
      tokens_per_frame_(tokens_per_frame) {}

std::optional<int64_t> SlidingWindowPolicy::MaxTokensPerLayer() const {
  if (unit_ == Unit::kTokens) return start_size_ + recent_size_;
  if (tokens_per_frame_ > 0) return (start_size_ + recent_size_) * tokens_per_frame_;
  return std::nullopt;
}

at::Tensor SlidingWindowPolicy::KeepTokens(const KvCache& cache, int64_t layer) const {
  const int64_t length = cache.length(layer);
  const auto options = at::TensorOptions().dtype(at::kLong).device(cache.options().device);
  return at::cat({at::arange(start_size_, options),
                  at::arange(length - recent_size_, length, options)})
      .unsqueeze(0);
}

// Frame indices never decrease along a layer, so frame boundaries are where the index changes.
at::Tensor SlidingWindowPolicy::KeepFrames(const KvCache& cache, int64_t layer) const {
  const at::Tensor frames = cache.layer(layer).frame.select(0, 0);
  const at::Tensor distinct = std::get<0>(at::unique_consecutive(frames)).cpu();
  const int64_t count = distinct.numel();
  if (count <= start_size_ + recent_size_) return at::Tensor();
  const int32_t* frame_at = distinct.data_ptr<int32_t>();
  at::Tensor keep = frames >= frame_at[count - recent_size_];
  if (start_size_ > 0) keep |= frames <= frame_at[start_size_ - 1];
  return keep.nonzero().view({1, -1});
}

EvictionOutcome SlidingWindowPolicy::EndFrame(int64_t, KvCache& cache) {
  EvictionOutcome outcome;
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    at::Tensor keep;
    if (unit_ == Unit::kFrames) {
      keep = KeepFrames(cache, layer);
    } else if (cache.length(layer) > start_size_ + recent_size_) {
      keep = KeepTokens(cache, layer);
    }
    outcome.evicted.push_back(keep.defined() ? ApplyKeep(cache, layer, keep) : 0);
  }
  return outcome;
}

}  // namespace streamkv::cache
