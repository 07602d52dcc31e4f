#include "cache/policies/none_policy.h"

namespace streamkv::cache {

const PolicyDescriptor& NonePolicy::Descriptor() {
  static const auto* const descriptor = new PolicyDescriptor{
      "none",
      "Keep every token; the cache grows with every frame.",
      {},
      [](const ParsedParams&, const CacheGeometry&)
          -> absl::StatusOr<std::unique_ptr<EvictionPolicy>> {
        return std::make_unique<NonePolicy>();
      }};
  return *descriptor;
}

EvictionOutcome NonePolicy::EndFrame(int64_t, KvCache& cache) {
  return EvictionOutcome{std::vector<int64_t>(cache.num_layers(), 0)};
}

}  // namespace streamkv::cache
