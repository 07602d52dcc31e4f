// Stable in-place compaction of token rows: the eviction primitive of the KV cache.
#pragma once

#include <ATen/core/Tensor.h>

namespace streamkv::kernels {

// Moves the kept rows of `data` to the front of their group, keeping their order.
//   data: [G, capacity, ...] contiguous, any dtype; row t of group g is data[g][t].
//   keep: [K] (the same rows for every group) or [G, K] (rows per group), int64, strictly
//         increasing along the last dimension, every value < `length`.
//   length: rows currently live in each group (≤ capacity).
// Afterwards data[g][i] holds what data[g][keep[g][i]] held for i < K; rows ≥ K are unspecified.
// Works on any device: CPU moves rows in place with no scratch memory; other devices gather into
// a scratch tensor of K rows and copy back. Throws c10::Error on malformed arguments. Pass
// keep_checked = true when CheckKeepList already vetted `keep` for this `length` (several tensors
// compacted with one list): the value checks cost a device synchronisation each.
void CompactRows(at::Tensor& data, const at::Tensor& keep, int64_t length,
                 bool keep_checked = false);

// Throws c10::Error unless every index of `keep` lies in [0, length) and each row strictly
// increases.
void CheckKeepList(const at::Tensor& keep, int64_t length);

}  // namespace streamkv::kernels
