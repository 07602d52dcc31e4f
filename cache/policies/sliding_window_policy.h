// `sliding_window` (StreamingLLM): attention sinks at the start plus a window of recent tokens.
#pragma once

#include "cache/eviction_policy.h"

namespace streamkv::cache {

// Keeps the first `start_size` and the last `recent_size` tokens of every layer, or, with
// unit=frames, every token of the first `start_size` and the last `recent_size` frames. Needs no
// attention scores. Not thread-safe (one per session).
class SlidingWindowPolicy final : public EvictionPolicy {
 public:
  enum class Unit { kTokens, kFrames };

  static const PolicyDescriptor& Descriptor();

  SlidingWindowPolicy(int64_t start_size, int64_t recent_size, Unit unit,
                      int64_t tokens_per_frame);

  absl::string_view name() const override { return "sliding_window"; }
  std::optional<int64_t> MaxTokensPerLayer() const override;
  EvictionOutcome EndFrame(int64_t frame_index, KvCache& cache) override;

 private:
  // Indices [1, K] of the tokens of `layer` to keep.
  at::Tensor KeepTokens(const KvCache& cache, int64_t layer) const;
  at::Tensor KeepFrames(const KvCache& cache, int64_t layer) const;

  const int64_t start_size_;
  const int64_t recent_size_;
  const Unit unit_;
  const int64_t tokens_per_frame_;
};

}  // namespace streamkv::cache
