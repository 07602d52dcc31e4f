// The eviction policy interface and the helpers policies share.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "cache/kv_cache.h"
#include "cache/policy_params.h"
#include "kernels/attention_with_scores.h"

namespace streamkv::cache {

// What a policy needs from each layer's attention. Without scores the model may use its fastest
// attention; with them it uses kernels::AttentionWithKeyScores.
struct ScoreRequest {
  bool needed = false;
  bool per_head = false;  // [H, T] scores instead of the head average [T]
  kernels::QueryReduction reduction = kernels::QueryReduction::kSum;
};

// What one frame's eviction did.
struct EvictionOutcome {
  std::vector<int64_t> evicted;  // tokens evicted per layer
  // Tokens kept beyond the policy's budget because they are protected, summed over layers. When
  // positive the budget cannot hold the protected tokens: the caller reports it (metric, log).
  int64_t protected_overflow = 0;
};

// Decides which cached tokens survive each frame. Protocol per frame, after the model appended the
// frame's K/V to every layer: ObserveLayer once per layer (only if score_request().needed), with
// that layer's attention scores over all its cached tokens; then EndFrame, which compacts the
// cache. One instance per session; not thread-safe.
class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  virtual absl::string_view name() const = 0;
  virtual ScoreRequest score_request() const { return {}; }
  virtual Granularity granularity() const { return Granularity::kLayer; }
  // Upper bound on live tokens per layer after EndFrame, if the policy has one; lets the cache be
  // allocated once.
  virtual std::optional<int64_t> MaxTokensPerLayer() const { return std::nullopt; }

  // scores: [T] (or [H, T] when per_head) float32 on the cache's device, T = cache.length(layer);
  // the attention the current frame's queries paid to each cached token, reduced over queries as
  // requested.
  virtual void ObserveLayer(int64_t frame_index, int64_t layer, const at::Tensor& scores,
                            KvCache& cache);

  virtual EvictionOutcome EndFrame(int64_t frame_index, KvCache& cache) = 0;
};

// A policy as the factory knows it: its name, what it does, its parameters, and how to build it.
struct PolicyDescriptor {
  std::string name;
  std::string summary;
  std::vector<ParamSpec> params;
  std::function<absl::StatusOr<std::unique_ptr<EvictionPolicy>>(const ParsedParams&,
                                                                const CacheGeometry&)>
      create;
};

// Helpers shared by the policies.

// Indices [G, keep] (ascending) of the `keep` highest-ranked tokens of every row of rank [G, T].
// Ties go to the later token.
at::Tensor TopRanked(const at::Tensor& rank, int64_t keep);

// Mask [G, T] of tokens whose role is camera or register.
at::Tensor SpecialTokenMask(const LayerView& layer);

// Compacts `layer` of `cache` to `keep` ([G, K] rows) and returns the number of tokens evicted.
int64_t ApplyKeep(KvCache& cache, int64_t layer, const at::Tensor& keep);

}  // namespace streamkv::cache
