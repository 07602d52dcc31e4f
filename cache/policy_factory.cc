#include "cache/policy_factory.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cache/policies/global_ratio_policy.h"
#include "cache/policies/h2o_policy.h"
#include "cache/policies/layerwise_policy.h"
#include "cache/policies/none_policy.h"
#include "cache/policies/sliding_window_policy.h"

namespace streamkv::cache {

const std::vector<const PolicyDescriptor*>& RegisteredPolicies() {
  static const auto* const policies = new std::vector<const PolicyDescriptor*>{
      &NonePolicy::Descriptor(),
      &SlidingWindowPolicy::Descriptor(),
      &H2oPolicy::Descriptor(),
      &GlobalRatioPolicy::Descriptor(),
      &LayerwisePolicy::Descriptor(),
  };
  return *policies;
}

absl::StatusOr<std::unique_ptr<EvictionPolicy>> CreatePolicy(absl::string_view name,
                                                             const PolicyParams& params,
                                                             const CacheGeometry& geometry) {
  std::vector<absl::string_view> names;
  for (const PolicyDescriptor* policy : RegisteredPolicies()) {
    if (policy->name != name) {
      names.push_back(policy->name);
      continue;
    }
    absl::StatusOr<ParsedParams> parsed = ParseParams(name, policy->params, params);
    if (!parsed.ok()) return parsed.status();
    return policy->create(*parsed, geometry);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown policy '", name,
                                                 "' (known: ", absl::StrJoin(names, ", "), ")"));
}

KvCacheOptions CacheOptionsFor(const EvictionPolicy& policy, const CacheGeometry& geometry,
                               c10::Device device) {
  KvCacheOptions options;
  options.geometry = geometry;
  options.device = device;
  options.granularity = policy.granularity();
  // A bounded layer never holds more than its bound plus the frame being appended.
  if (std::optional<int64_t> bound = policy.MaxTokensPerLayer()) {
    options.initial_capacity = *bound + geometry.tokens_per_frame;
  }
  return options;
}

}  // namespace streamkv::cache
