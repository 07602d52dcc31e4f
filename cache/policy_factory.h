// Builds eviction policies by name. Adding a policy: one class with a Descriptor(), one line in
// policy_factory.cc.
#pragma once

#include <memory>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "cache/eviction_policy.h"

namespace streamkv::cache {

// Every registered policy, in a stable order (for Describe and documentation).
const std::vector<const PolicyDescriptor*>& RegisteredPolicies();

// The policy `name` with `params` validated against its schema, for a cache of `geometry`.
// InvalidArgument names the unknown policy or the offending parameter.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> CreatePolicy(absl::string_view name,
                                                             const PolicyParams& params,
                                                             const CacheGeometry& geometry);

// Options for a KvCache that `policy` will manage: granularity, and capacity when bounded.
KvCacheOptions CacheOptionsFor(const EvictionPolicy& policy, const CacheGeometry& geometry,
                               c10::Device device);

}  // namespace streamkv::cache
