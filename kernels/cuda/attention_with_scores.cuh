// CUDA attention with per-key scores, without the [H, N, T] probability matrix.
//
// Host launchers only (device code stays in attention_with_scores.cu); raw pointers, sizes and
// element strides, no LibTorch types, so the .cu compiles with nvcc alone. The dispatch point is
// kernels/attention_with_scores.cc, which allocates every buffer named here.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace streamkv::kernels::cuda {

// Element type of q, k, v and the output; accumulation is always float32.
enum class AttentionDtype { kFloat16, kBFloat16 };

// How the probabilities of the N queries are reduced into one score per key (mirrors
// kernels::QueryReduction without including its LibTorch header).
enum class ScoreReduction { kSum, kMax };

// One attention problem. Tensors are [H, rows, D] with element strides for the head and row
// dimensions; the last dimension must be contiguous (stride 1). The cache's narrowed [H, T, D]
// views (row stride D, head stride capacity·D) are accepted as they are.
struct AttentionWithScoresArgs {
  AttentionDtype dtype = AttentionDtype::kBFloat16;
  int head_dim = 64;        // D: 64 or 128
  int64_t num_heads = 0;    // H
  int64_t num_queries = 0;  // N >= 1
  int64_t num_keys = 0;     // T >= 1

  const void* q = nullptr;  // [H, N, D]
  int64_t q_stride_head = 0, q_stride_row = 0;
  const void* k = nullptr;  // [H, T, D]
  int64_t k_stride_head = 0, k_stride_row = 0;
  const void* v = nullptr;  // [H, T, D]
  int64_t v_stride_head = 0, v_stride_row = 0;
  void* out = nullptr;  // [H, N, D], written
  int64_t out_stride_head = 0, out_stride_row = 0;

  float scale = 1.0f;  // logit multiplier, usually 1/sqrt(D)
  ScoreReduction reduction = ScoreReduction::kSum;

  // Workspace [H, N] float32, contiguous: per-row log-sum-exp (base 2) from pass 1 for pass 2.
  float* lse = nullptr;
  // Outputs, contiguous float32, nullptr when not wanted:
  float* head_scores = nullptr;  // [H, T]: reduction over queries of p[h, n, t]
  float* key_scores = nullptr;   // [T]:   kSum: Σ_n mean_h p; kMax: max_n mean_h p
  // Workspace [H, T] float32, needed only when key_scores is wanted with kSum and head_scores is
  // nullptr (the head mean is taken from per-head sums); otherwise may be nullptr.
  float* head_workspace = nullptr;
};

// Enqueues the kernels on `stream`: pass 1 (output + lse), then the score passes that were asked
// for. Returns the first launch error (cudaErrorInvalidValue for unsupported arguments); does not
// synchronise. Memory beyond the caller's buffers: none (shared memory only).
cudaError_t LaunchAttentionWithScores(const AttentionWithScoresArgs& args, cudaStream_t stream);

// Sizes of the workspaces, for callers that preallocate: lse always holds H·N floats;
// head_workspace (H·T floats) is needed only when AttentionNeedsHeadWorkspace is true.
inline int64_t AttentionLseWorkspaceElements(int64_t num_heads, int64_t num_queries) {
  return num_heads * num_queries;
}
inline bool AttentionNeedsHeadWorkspace(bool key_scores, bool head_scores,
                                        ScoreReduction reduction) {
  return key_scores && !head_scores && reduction == ScoreReduction::kSum;
}

}  // namespace streamkv::kernels::cuda
