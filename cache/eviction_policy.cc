#include "cache/eviction_policy.h"

#include <ATen/ATen.h>

namespace streamkv::cache {

void EvictionPolicy::ObserveLayer(int64_t, int64_t, const at::Tensor&, KvCache&) {}

at::Tensor TopRanked(const at::Tensor& rank, int64_t keep) {
  const int64_t length = rank.size(-1);
  // A stable descending sort of the reversed row ranks equal scores latest-first.
  const at::Tensor order =
      std::get<1>(at::sort(rank.flip(-1), /*stable=*/true, /*dim=*/-1, /*descending=*/true));
  const at::Tensor chosen = (length - 1) - order.narrow(-1, 0, keep);
  return std::get<0>(chosen.sort(/*dim=*/-1, /*descending=*/false));
}

at::Tensor SpecialTokenMask(const LayerView& layer) {
  return (layer.role == static_cast<int64_t>(TokenRole::kCamera)) |
         (layer.role == static_cast<int64_t>(TokenRole::kRegister));
}

int64_t ApplyKeep(KvCache& cache, int64_t layer, const at::Tensor& keep) {
  const int64_t before = cache.length(layer);
  const int64_t kept = keep.size(-1);
  if (kept == before) return 0;
  cache.Compact(layer, keep.size(0) == 1 ? keep.squeeze(0) : keep);
  return before - kept;
}

}  // namespace streamkv::cache
