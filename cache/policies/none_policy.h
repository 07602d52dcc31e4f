// `none`: keeps every token (the unbounded baseline).
#pragma once

#include "cache/eviction_policy.h"

namespace streamkv::cache {

// Never evicts. Stateless; thread-compatible.
class NonePolicy final : public EvictionPolicy {
 public:
  static const PolicyDescriptor& Descriptor();

  absl::string_view name() const override { return "none"; }
  EvictionOutcome EndFrame(int64_t frame_index, KvCache& cache) override;
};

}  // namespace streamkv::cache
