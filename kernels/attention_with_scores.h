// Attention that also reports how much attention every key received.
//
// Eviction policies score cached tokens by the softmax probabilities the current frame's queries
// put on them. Materialising the [H, N, T] probability matrix costs O(N·T) memory, so this operator
// returns the attention output together with per-key reductions of the probabilities and never
// holds more than one chunk of queries' probabilities at a time.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace streamkv::kernels {

// How the probabilities of the N queries are reduced into one score per key.
enum class QueryReduction {
  kSum,  // Σ_n p[n, t]: the total attention key t received (H2O, layerwise).
  kMax,  // max_n p[n, t]: the strongest single query's attention on key t.
};

struct AttentionScoresOptions {
  // Which score forms to compute; the attention output is always computed.
  bool head_mean_scores = true;  // `key_scores` [T]: probabilities averaged over heads.
  bool per_head_scores = false;  // `head_key_scores` [H, T]: one row per head.
  QueryReduction reduction = QueryReduction::kSum;
  // Queries processed per chunk by the reference implementation: peak scratch memory is
  // O(H · query_chunk · T). Results do not depend on it.
  int64_t query_chunk = 128;
};

struct AttentionWithScores {
  at::Tensor output;           // [H, N, D], dtype of q.
  at::Tensor key_scores;       // [T] float32, or undefined when not requested.
  at::Tensor head_key_scores;  // [H, T] float32, or undefined when not requested.
};

// softmax(q·kᵀ·scale)·v for one sequence, plus the requested key scores.
//   q:     [H, N, D]   queries of the current frame
//   k, v:  [H, T, D]   keys and values attended to (cache and current frame), same dtype as q
//   scale: logit multiplier, usually 1/sqrt(D)
// Accumulates in float32 whatever the input dtype. The single dispatch point: bf16/fp16 CUDA
// tensors with head_dim 64 or 128 take the two-pass CUDA kernel (when built with CUDA); everything
// else takes the chunked ATen reference.
// Throws c10::Error on malformed shapes; callers at module boundaries convert it to a Status.
AttentionWithScores AttentionWithKeyScores(const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, double scale,
                                           const AttentionScoresOptions& options = {});

}  // namespace streamkv::kernels
