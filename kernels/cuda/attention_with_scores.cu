// CUDA attention with per-key scores: two passes over the keys, no [H, N, T] matrix.
//
// Pass 1 (AttentionForwardKernel): FlashAttention-2 style. A CTA owns one head and a tile of
//   kTileQ queries and loops over key tiles of kTileK keys held in shared memory, keeping a running
//   row max m, row sum l and float32 output accumulators (online softmax). It writes the output and
//   the per-row log-sum-exp lse = m + log2(l).
// Pass 2 (HeadScoresKernel): a CTA owns one head and one key tile for *all* queries: it loops over
//   query tiles, recomputes the logits of its tile exactly as pass 1 did, and reduces
//   p = exp2(s − lse) over queries (sum or max) in registers. Because one CTA sees every query of
//   its keys, per-key results are written once, without atomics.
// Head mean, kSum: MeanOverHeadsKernel averages the per-head sums (the mean of sums is the sum of
//   means). Head mean, kMax (HeadMeanMaxKernel): max_n mean_h p needs every head of a query at
//   once, so a CTA owns a key tile and, per query tile, accumulates p over all heads before taking
//   the max over queries.
//
// Logits live in base 2: q is multiplied by scale·log2(e) when staged, so exp(x) = exp2(x·log2 e)
// becomes one exp2f. All arithmetic is float32; inputs are converted when loaded into shared
// memory, the output is rounded to the input type once at the end.
//
// Thread layout shared by every tile computation (kThreads = 256 = 16 × 16):
//   ty = tid / 16 owns tile rows      r = ty + 16·i, i < 4   (kTileQ = 64 query rows)
//   tx = tid % 16 owns tile columns   c = tx + 16·j, j < 4   (kTileK = 64 keys)
//   and, for the output, head-dim columns c = tx + 16·j, j < D/16.
// The 16 threads of a row group are 16 consecutive lanes of one warp, so row reductions are
// shuffles over lane bits 0–3. Shared-memory rows are padded to D + 1 (and kTileK + 1) floats so
// that the 16 column threads of a half-warp hit 16 distinct banks.
#include "kernels/cuda/attention_with_scores.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace streamkv::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTileQ = 64;                   // query rows per tile
constexpr int kTileK = 64;                   // keys per tile
constexpr int kRowsPerThread = kTileQ / 16;  // 4
constexpr int kColsPerThread = kTileK / 16;  // 4
constexpr float kLog2e = 1.4426950408889634f;

static_assert(kThreads == 256, "the 16 × 16 thread layout above assumes 256 threads");

template <typename T>
struct Convert;
template <>
struct Convert<__half> {
  static __device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half FromFloat(float x) { return __float2half_rn(x); }
};
template <>
struct Convert<__nv_bfloat16> {
  static __device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 FromFloat(float x) {
    return __float2bfloat16_rn(x);
  }
};

// Row stride, in floats, of a [rows, D] tile in shared memory (padded against bank conflicts).
template <int D>
__host__ __device__ constexpr int TileStride() {
  return D + 1;
}

// Stages rows [row0, row0 + kRows) of one head of a [rows, D] tensor into shared memory as
// float32 multiplied by `factor`; rows ≥ num_rows are zero-filled (so they never produce NaN).
// Consecutive threads read consecutive elements of a row: coalesced. Caller synchronises.
template <typename T, int D, int kRows>
__device__ __forceinline__ void LoadTile(float* __restrict__ dst, const T* __restrict__ head_base,
                                         int64_t row_stride, int64_t row0, int64_t num_rows,
                                         float factor) {
  for (int idx = threadIdx.x; idx < kRows * D; idx += kThreads) {
    const int r = idx / D;
    const int d = idx % D;
    const int64_t row = row0 + r;
    float x = 0.0f;
    if (row < num_rows) x = Convert<T>::ToFloat(head_base[row * row_stride + d]) * factor;
    dst[r * TileStride<D>() + d] = x;
  }
}

// s[i][j] = Σ_d qs[r_i][d] · ks[c_j][d] for this thread's 4 × 4 micro-tile (r_i = ty + 16·i,
// c_j = tx + 16·j). Pass 1 and pass 2 both use this, so they compute bit-identical logits.
template <int D>
__device__ __forceinline__ void TileLogits(const float* __restrict__ qs,
                                           const float* __restrict__ ks, int ty, int tx,
                                           float (&s)[kRowsPerThread][kColsPerThread]) {
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) s[i][j] = 0.0f;
  }
#pragma unroll 8
  for (int d = 0; d < D; ++d) {
    float a[kRowsPerThread], b[kColsPerThread];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) a[i] = qs[(ty + 16 * i) * TileStride<D>() + d];
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) b[j] = ks[(tx + 16 * j) * TileStride<D>() + d];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) s[i][j] = fmaf(a[i], b[j], s[i][j]);
    }
  }
}

// Reductions over the 16 lanes of a row group (lane bits 0–3; tx == lane % 16).
__device__ __forceinline__ float RowGroupMax(float x) {
#pragma unroll
  for (int offset = 8; offset >= 1; offset >>= 1) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  }
  return x;
}
__device__ __forceinline__ float RowGroupSum(float x) {
#pragma unroll
  for (int offset = 8; offset >= 1; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Shared memory of pass 1, in floats: q tile [kTileQ][D+1], one k-or-v tile [kTileK][D+1]
// (k is consumed before v overwrites it), probabilities [kTileQ][kTileK+1].
template <int D>
__host__ __device__ constexpr int ForwardSmemFloats() {
  return kTileQ * TileStride<D>() + kTileK * TileStride<D>() + kTileQ * (kTileK + 1);
}

// Pass 1. Grid (ceil(N / kTileQ), H); block kThreads. CTA (x, h) owns queries
// [x·kTileQ, (x+1)·kTileQ) of head h and writes their output rows and lse entries, nothing else.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    AttentionForwardKernel(AttentionWithScoresArgs args, float q_factor) {
  constexpr int kOutCols = D / 16;  // output columns per thread
  extern __shared__ float smem[];
  float* qs = smem;                            // [kTileQ][D+1]
  float* kvs = qs + kTileQ * TileStride<D>();  // [kTileK][D+1], k then v
  float* ps = kvs + kTileK * TileStride<D>();  // [kTileQ][kTileK+1]

  const int tid = threadIdx.x;
  const int ty = tid / 16;
  const int tx = tid % 16;
  const int64_t h = blockIdx.y;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kTileQ;
  const int64_t n_queries = args.num_queries;
  const int64_t n_keys = args.num_keys;
  const T* q = static_cast<const T*>(args.q) + h * args.q_stride_head;
  const T* k = static_cast<const T*>(args.k) + h * args.k_stride_head;
  const T* v = static_cast<const T*>(args.v) + h * args.v_stride_head;

  LoadTile<T, D, kTileQ>(qs, q, args.q_stride_row, q0, n_queries, q_factor);

  float row_max[kRowsPerThread];  // running max of base-2 logits, identical across a row group
  float row_sum[kRowsPerThread];  // running Σ exp2(s − row_max), identical across a row group
  float acc[kRowsPerThread][kOutCols];  // unnormalised output, columns tx + 16·j
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    row_max[i] = -INFINITY;
    row_sum[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < kOutCols; ++j) acc[i][j] = 0.0f;
  }

  for (int64_t k0 = 0; k0 < n_keys; k0 += kTileK) {
    // Invariant at loop top: every thread is done with kvs and ps of the previous tile.
    LoadTile<T, D, kTileK>(kvs, k, args.k_stride_row, k0, n_keys, 1.0f);
    __syncthreads();  // q tile (first iteration) and k tile visible

    float s[kRowsPerThread][kColsPerThread];
    TileLogits<D>(qs, kvs, ty, tx, s);
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) {
      if (k0 + tx + 16 * j >= n_keys) {
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) s[i][j] = -INFINITY;  // padding keys
      }
    }

#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      float tile_max = s[i][0];
#pragma unroll
      for (int j = 1; j < kColsPerThread; ++j) tile_max = fmaxf(tile_max, s[i][j]);
      tile_max = RowGroupMax(tile_max);
      const float new_max = fmaxf(row_max[i], tile_max);
      // A row whose logits are all −inf so far keeps zero weight instead of exp2(−inf + inf).
      const float ref = new_max == -INFINITY ? 0.0f : new_max;
      const float rescale = exp2f(row_max[i] - ref);  // 0 on the first tile (row_max = −inf)
      float tile_sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) {
        const float p = exp2f(s[i][j] - ref);
        tile_sum += p;
        ps[(ty + 16 * i) * (kTileK + 1) + tx + 16 * j] = p;
      }
      tile_sum = RowGroupSum(tile_sum);
      row_sum[i] = row_sum[i] * rescale + tile_sum;
      row_max[i] = new_max;
#pragma unroll
      for (int j = 0; j < kOutCols; ++j) acc[i][j] *= rescale;
    }
    __syncthreads();  // everyone is done reading the k tile; ps complete

    LoadTile<T, D, kTileK>(kvs, v, args.v_stride_row, k0, n_keys, 1.0f);  // padding rows = 0
    __syncthreads();                                                      // v tile visible

    for (int c = 0; c < kTileK; ++c) {
      float p[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) p[i] = ps[(ty + 16 * i) * (kTileK + 1) + c];
#pragma unroll
      for (int j = 0; j < kOutCols; ++j) {
        const float vv = kvs[c * TileStride<D>() + tx + 16 * j];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) acc[i][j] = fmaf(p[i], vv, acc[i][j]);
      }
    }
    __syncthreads();  // done with kvs and ps before the next tile overwrites them
  }

  T* out = static_cast<T*>(args.out) + h * args.out_stride_head;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t n = q0 + ty + 16 * i;
    if (n >= n_queries) continue;
    const float inv_sum = 1.0f / row_sum[i];
#pragma unroll
    for (int j = 0; j < kOutCols; ++j) {
      out[n * args.out_stride_row + tx + 16 * j] = Convert<T>::FromFloat(acc[i][j] * inv_sum);
    }
    if (tx == 0) args.lse[h * n_queries + n] = row_max[i] + log2f(row_sum[i]);
  }
}

// Stages lse of query rows [q0, q0 + kTileQ) of head h; rows ≥ N get +inf, so exp2(s − lse) = 0.
__device__ __forceinline__ void LoadLse(float* __restrict__ dst, const float* __restrict__ lse,
                                        int64_t h, int64_t q0, int64_t n_queries) {
  for (int r = threadIdx.x; r < kTileQ; r += kThreads) {
    const int64_t n = q0 + r;
    dst[r] = n < n_queries ? lse[h * n_queries + n] : INFINITY;
  }
}

// Shared memory of the score passes, in floats: k tile, q tile [64][D+1] each, lse [kTileQ],
// reduction scratch [16][kTileK].
template <int D>
__host__ __device__ constexpr int ScoresSmemFloats() {
  return kTileK * TileStride<D>() + kTileQ * TileStride<D>() + kTileQ + 16 * kTileK;
}

// Combines the 16 row groups' partial column results and writes kTileK keys from k0 to dst[t].
// `partial[j]` is this thread's result for key k0 + tx + 16·j. Ends with all threads synchronised.
template <bool kMax>
__device__ __forceinline__ void WriteColumns(float* __restrict__ scratch,
                                             const float (&partial)[kColsPerThread], int ty, int tx,
                                             int64_t k0, int64_t n_keys, float factor,
                                             float* __restrict__ dst) {
#pragma unroll
  for (int j = 0; j < kColsPerThread; ++j) scratch[ty * kTileK + tx + 16 * j] = partial[j];
  __syncthreads();
  if (threadIdx.x < kTileK) {
    const int c = threadIdx.x;
    float total = scratch[c];
    for (int g = 1; g < 16; ++g) {
      const float x = scratch[g * kTileK + c];
      total = kMax ? fmaxf(total, x) : total + x;
    }
    if (k0 + c < n_keys) dst[k0 + c] = total * factor;
  }
  __syncthreads();
}

// Pass 2, per head. Grid (ceil(T / kTileK), H); block kThreads. CTA (x, h) owns keys
// [x·kTileK, (x+1)·kTileK) of head h for every query, and writes dst[h·T + t] for those keys:
// Σ_n p[h, n, t] (kMax false) or max_n p[h, n, t] (kMax true).
template <typename T, int D, bool kMax>
__global__ void __launch_bounds__(kThreads)
    HeadScoresKernel(AttentionWithScoresArgs args, float q_factor, float* __restrict__ dst) {
  extern __shared__ float smem[];
  float* ks = smem;                              // [kTileK][D+1]
  float* qs = ks + kTileK * TileStride<D>();     // [kTileQ][D+1]
  float* lse_s = qs + kTileQ * TileStride<D>();  // [kTileQ]
  float* scratch = lse_s + kTileQ;               // [16][kTileK]

  const int tid = threadIdx.x;
  const int ty = tid / 16;
  const int tx = tid % 16;
  const int64_t h = blockIdx.y;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTileK;
  const int64_t n_queries = args.num_queries;
  const int64_t n_keys = args.num_keys;
  const T* q = static_cast<const T*>(args.q) + h * args.q_stride_head;
  const T* k = static_cast<const T*>(args.k) + h * args.k_stride_head;

  LoadTile<T, D, kTileK>(ks, k, args.k_stride_row, k0, n_keys, 1.0f);
  float partial[kColsPerThread];  // over this thread's rows of every query tile so far
#pragma unroll
  for (int j = 0; j < kColsPerThread; ++j) partial[j] = 0.0f;  // p ≥ 0: identity of sum and max

  for (int64_t q0 = 0; q0 < n_queries; q0 += kTileQ) {
    // Invariant at loop top: every thread is done with qs and lse_s of the previous tile.
    LoadTile<T, D, kTileQ>(qs, q, args.q_stride_row, q0, n_queries, q_factor);
    LoadLse(lse_s, args.lse, h, q0, n_queries);
    __syncthreads();
    float s[kRowsPerThread][kColsPerThread];
    TileLogits<D>(qs, ks, ty, tx, s);
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const float lse = lse_s[ty + 16 * i];
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) {
        const float p = exp2f(s[i][j] - lse);
        partial[j] = kMax ? fmaxf(partial[j], p) : partial[j] + p;
      }
    }
    __syncthreads();
  }
  WriteColumns<kMax>(scratch, partial, ty, tx, k0, n_keys, 1.0f, dst + h * n_keys);
}

// Pass 2, head mean with kMax. Grid (ceil(T / kTileK)); block kThreads. CTA x owns keys
// [x·kTileK, (x+1)·kTileK) for every query and head, and writes key_scores[t] = max_n mean_h p.
// Per query tile it sums p over heads in registers (k and q tiles restaged per head), then folds
// the max over its rows.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    HeadMeanMaxKernel(AttentionWithScoresArgs args, float q_factor) {
  extern __shared__ float smem[];
  float* ks = smem;
  float* qs = ks + kTileK * TileStride<D>();
  float* lse_s = qs + kTileQ * TileStride<D>();
  float* scratch = lse_s + kTileQ;

  const int tid = threadIdx.x;
  const int ty = tid / 16;
  const int tx = tid % 16;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTileK;
  const int64_t n_queries = args.num_queries;
  const int64_t n_keys = args.num_keys;

  float partial[kColsPerThread];  // max over this thread's rows of Σ_h p, query tiles so far
#pragma unroll
  for (int j = 0; j < kColsPerThread; ++j) partial[j] = 0.0f;

  for (int64_t q0 = 0; q0 < n_queries; q0 += kTileQ) {
    float head_sum[kRowsPerThread][kColsPerThread];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) head_sum[i][j] = 0.0f;
    }
    for (int64_t h = 0; h < args.num_heads; ++h) {
      // Invariant: every thread is done with ks, qs and lse_s of the previous (head, tile).
      LoadTile<T, D, kTileK>(ks, static_cast<const T*>(args.k) + h * args.k_stride_head,
                             args.k_stride_row, k0, n_keys, 1.0f);
      LoadTile<T, D, kTileQ>(qs, static_cast<const T*>(args.q) + h * args.q_stride_head,
                             args.q_stride_row, q0, n_queries, q_factor);
      LoadLse(lse_s, args.lse, h, q0, n_queries);
      __syncthreads();
      float s[kRowsPerThread][kColsPerThread];
      TileLogits<D>(qs, ks, ty, tx, s);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const float lse = lse_s[ty + 16 * i];
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) head_sum[i][j] += exp2f(s[i][j] - lse);
      }
      __syncthreads();
    }
    // Padding query rows have lse = +inf, so their head_sum is 0 and cannot raise the max.
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) partial[j] = fmaxf(partial[j], head_sum[i][j]);
    }
  }
  WriteColumns</*kMax=*/true>(scratch, partial, ty, tx, k0, n_keys,
                              1.0f / static_cast<float>(args.num_heads), args.key_scores);
}

// key_scores[t] = mean_h head_sums[h, t]. Grid-stride over t; head_sums is [H, T] contiguous.
__global__ void MeanOverHeadsKernel(const float* __restrict__ head_sums, int64_t num_heads,
                                    int64_t num_keys, float* __restrict__ key_scores) {
  const float inv_heads = 1.0f / static_cast<float>(num_heads);
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < num_keys;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float total = 0.0f;
    for (int64_t h = 0; h < num_heads; ++h) total += head_sums[h * num_keys + t];
    key_scores[t] = total * inv_heads;
  }
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Opts a kernel into `bytes` of dynamic shared memory (above the 48 KiB default) and launches it.
template <typename Kernel, typename... Args>
cudaError_t LaunchWithSmem(Kernel kernel, dim3 grid, size_t bytes, cudaStream_t stream,
                           Args... args) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes));
  if (err != cudaSuccess) return err;
  kernel<<<grid, kThreads, bytes, stream>>>(args...);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t Launch(const AttentionWithScoresArgs& args, cudaStream_t stream) {
  const float q_factor = args.scale * kLog2e;
  const int64_t query_tiles = CeilDiv(args.num_queries, kTileQ);
  const int64_t key_tiles = CeilDiv(args.num_keys, kTileK);
  if (args.num_heads > 65535 || query_tiles > INT32_MAX || key_tiles > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  const dim3 forward_grid(static_cast<unsigned>(query_tiles),
                          static_cast<unsigned>(args.num_heads));
  cudaError_t err = LaunchWithSmem(AttentionForwardKernel<T, D>, forward_grid,
                                   sizeof(float) * ForwardSmemFloats<D>(), stream, args, q_factor);
  if (err != cudaSuccess) return err;

  const size_t scores_smem = sizeof(float) * ScoresSmemFloats<D>();
  const dim3 per_head_grid(static_cast<unsigned>(key_tiles), static_cast<unsigned>(args.num_heads));
  const bool sum = args.reduction == ScoreReduction::kSum;
  // Per-head sums also feed the kSum head mean; use the caller's output when there is one.
  float* head_dst = args.head_scores;
  if (head_dst == nullptr && sum && args.key_scores != nullptr) head_dst = args.head_workspace;
  if (head_dst != nullptr) {
    err = sum ? LaunchWithSmem(HeadScoresKernel<T, D, false>, per_head_grid, scores_smem, stream,
                               args, q_factor, head_dst)
              : LaunchWithSmem(HeadScoresKernel<T, D, true>, per_head_grid, scores_smem, stream,
                               args, q_factor, head_dst);
    if (err != cudaSuccess) return err;
  }
  if (args.key_scores != nullptr) {
    if (sum) {
      const int threads = 256;
      const int64_t blocks = std::min<int64_t>(CeilDiv(args.num_keys, threads), 4096);
      MeanOverHeadsKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
          head_dst, args.num_heads, args.num_keys, args.key_scores);
      err = cudaGetLastError();
    } else {
      err = LaunchWithSmem(HeadMeanMaxKernel<T, D>, dim3(static_cast<unsigned>(key_tiles)),
                           scores_smem, stream, args, q_factor);
    }
  }
  return err;
}

template <typename T>
cudaError_t LaunchForType(const AttentionWithScoresArgs& args, cudaStream_t stream) {
  switch (args.head_dim) {
    case 64:
      return Launch<T, 64>(args, stream);
    case 128:
      return Launch<T, 128>(args, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t LaunchAttentionWithScores(const AttentionWithScoresArgs& args, cudaStream_t stream) {
  if (args.num_heads < 1 || args.num_queries < 1 || args.num_keys < 1 || args.q == nullptr ||
      args.k == nullptr || args.v == nullptr || args.out == nullptr || args.lse == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (args.key_scores != nullptr && args.reduction == ScoreReduction::kSum &&
      args.head_scores == nullptr && args.head_workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  return args.dtype == AttentionDtype::kFloat16 ? LaunchForType<__half>(args, stream)
                                                : LaunchForType<__nv_bfloat16>(args, stream);
}

}  // namespace streamkv::kernels::cuda
