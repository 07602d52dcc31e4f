#include "kernels/attention_with_scores.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>

#ifdef STREAMKV_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/attention_with_scores.cuh"
#endif

namespace streamkv::kernels {
namespace {

bool IsSupportedDtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16;
}

void CheckArguments(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                    const AttentionScoresOptions& options) {
  constexpr const char* kWhere = "AttentionWithKeyScores: ";
  TORCH_CHECK(q.defined() && k.defined() && v.defined(), kWhere,
              "q, k and v must all be defined tensors");
  TORCH_CHECK(q.dim() == 3, kWhere, "q must be 3-D [H, N, D], got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 3, kWhere, "k must be 3-D [H, T, D], got shape ", k.sizes());
  TORCH_CHECK(v.dim() == 3, kWhere, "v must be 3-D [H, T, D], got shape ", v.sizes());
  TORCH_CHECK(q.size(0) >= 1 && q.size(2) >= 1, kWhere,
              "q must have at least one head and one channel (H >= 1, D >= 1), got shape ",
              q.sizes());
  TORCH_CHECK(q.size(1) >= 1, kWhere, "q must have at least one query (N >= 1), got shape ",
              q.sizes());
  TORCH_CHECK(k.size(0) == q.size(0), kWhere, "k has ", k.size(0), " heads but q has ", q.size(0),
              " (k shape ", k.sizes(), ", q shape ", q.sizes(), ")");
  TORCH_CHECK(k.size(2) == q.size(2), kWhere, "k has head dim ", k.size(2), " but q has ",
              q.size(2), " (k shape ", k.sizes(), ", q shape ", q.sizes(), ")");
  TORCH_CHECK(k.size(1) >= 1, kWhere, "k must have at least one key (T >= 1), got shape ",
              k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), kWhere, "v must have the shape of k ", k.sizes(), ", got ",
              v.sizes());
  TORCH_CHECK(IsSupportedDtype(q.scalar_type()), kWhere,
              "q must be float32, float16 or bfloat16, got ", q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), kWhere, "k has dtype ", k.scalar_type(),
              " but q has ", q.scalar_type());
  TORCH_CHECK(v.scalar_type() == q.scalar_type(), kWhere, "v has dtype ", v.scalar_type(),
              " but q has ", q.scalar_type());
  TORCH_CHECK(k.device() == q.device(), kWhere, "k is on device ", k.device(), " but q is on ",
              q.device());
  TORCH_CHECK(v.device() == q.device(), kWhere, "v is on device ", v.device(), " but q is on ",
              q.device());
  TORCH_CHECK(std::isfinite(scale), kWhere, "scale must be finite, got ", scale);
  TORCH_CHECK(options.query_chunk >= 1, kWhere, "options.query_chunk must be >= 1, got ",
              options.query_chunk);
}

// Contiguous [d0, d1, d2] view of the first d0·d1·d2 elements of a flat scratch buffer, so one
// allocation serves every chunk, the shorter last one included.
at::Tensor Prefix(const at::Tensor& flat, int64_t d0, int64_t d1, int64_t d2) {
  return flat.narrow(0, 0, d0 * d1 * d2).view({d0, d1, d2});
}

// The reference: queries in chunks of `query_chunk`, all arithmetic in float32 with ATen ops, so it
// runs on any device. Invariants: the only O(T)-per-query scratch is one [H, c, T] float32 buffer,
// reused across chunks, holding a chunk's logits and then, in place, its probabilities (each row
// sums to 1); the score accumulators hold the reduction over the queries of the chunks so far.
AttentionWithScores ChunkedReferenceAttention(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v, double scale,
                                              const AttentionScoresOptions& options) {
  const int64_t num_heads = q.size(0);
  const int64_t num_queries = q.size(1);
  const int64_t head_dim = q.size(2);
  const int64_t num_keys = k.size(1);
  const int64_t chunk = std::min(options.query_chunk, num_queries);
  const bool sum_reduction = options.reduction == QueryReduction::kSum;

  // Scaled once here, [H, N, D], rather than every [H, c, T] logits chunk. The k and v conversions
  // are no-ops for float32 inputs; bmm takes the transposed view of k without a copy.
  const at::Tensor qs = q.scalar_type() == at::kFloat ? q * scale : q.to(at::kFloat).mul_(scale);
  const at::Tensor kt = k.to(at::kFloat).transpose(1, 2);  // [H, D, T]
  const at::Tensor vf = v.to(at::kFloat);

  const at::TensorOptions f32 = q.options().dtype(at::kFloat);
  const at::Tensor probs_buf = at::empty({num_heads * chunk * num_keys}, f32);
  const at::Tensor out_buf = at::empty({num_heads * chunk * head_dim}, f32);
  AttentionWithScores result;
  result.output = at::empty({num_heads, num_queries, head_dim}, q.options());

  // Accumulators. For kSum the head mean is derived from the per-head sums at the end (the mean
  // of sums is the sum of means), so only per-head sums are accumulated. For kMax the head mean
  // must be max_n mean_h p, so it is reduced from the head-summed probabilities of every chunk
  // (divided by H at the end: max commutes with a positive factor).
  const bool need_head_reduction =
      options.per_head_scores || (sum_reduction && options.head_mean_scores);
  const bool need_mean_max = !sum_reduction && options.head_mean_scores;
  at::Tensor head_acc, head_tmp, mean_acc, mean_tmp, head_summed_buf;
  if (need_head_reduction) {
    head_acc = at::empty({num_heads, num_keys}, f32);
    head_tmp = at::empty({num_heads, num_keys}, f32);
  }
  if (need_mean_max) {
    mean_acc = at::empty({num_keys}, f32);
    mean_tmp = at::empty({num_keys}, f32);
    head_summed_buf = at::empty({chunk * num_keys}, f32);
  }

  for (int64_t start = 0; start < num_queries; start += chunk) {
    const int64_t c = std::min(chunk, num_queries - start);
    const bool first = start == 0;
    at::Tensor probs = Prefix(probs_buf, num_heads, c, num_keys);
    at::Tensor out = Prefix(out_buf, num_heads, c, head_dim);

    // logits = (scale · q_chunk) · kᵀ. (baddbmm with beta = 0 would fold the scale in, but on CPU
    // it can propagate NaN from the buffer's stale contents.)
    at::bmm_out(probs, qs.narrow(1, start, c), kt);
    // In place (as ATen's own attention does), numerically stable softmax over keys: subtracts the
    // row max, i.e. exp(logits − logsumexp(logits)).
    at::_softmax_out(probs, probs, /*dim=*/-1, /*half_to_float=*/false);
    at::bmm_out(out, probs, vf);
    result.output.narrow(1, start, c).copy_(out);

    if (need_head_reduction) {
      at::Tensor& dst = first ? head_acc : head_tmp;
      if (sum_reduction) {
        at::sum_out(dst, probs, /*dim=*/{1});
      } else {
        at::amax_out(dst, probs, /*dim=*/{1});
      }
      if (!first && sum_reduction) head_acc.add_(head_tmp);
      if (!first && !sum_reduction) at::maximum_out(head_acc, head_acc, head_tmp);
    }
    if (need_mean_max) {
      at::Tensor head_summed = head_summed_buf.narrow(0, 0, c * num_keys).view({c, num_keys});
      at::sum_out(head_summed, probs, /*dim=*/{0});
      at::Tensor& dst = first ? mean_acc : mean_tmp;
      at::amax_out(dst, head_summed, /*dim=*/{0});
      if (!first) at::maximum_out(mean_acc, mean_acc, mean_tmp);
    }
  }

  if (options.head_mean_scores) {
    result.key_scores = sum_reduction ? head_acc.mean(/*dim=*/{0}) : mean_acc.div_(num_heads);
  }
  if (options.per_head_scores) result.head_key_scores = head_acc;
  return result;
}

#ifdef STREAMKV_WITH_CUDA
// The CUDA kernel covers the serving configurations: float16/bfloat16 inputs with head dim 64
// (aggregator) or 128 (camera trunk). Everything else on CUDA takes the chunked reference.
bool CudaKernelSupports(const at::Tensor& q) {
  const bool half_type = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  return q.is_cuda() && half_type && (q.size(2) == 64 || q.size(2) == 128);
}

// The kernel reads [H, rows, D] through element strides but needs unit stride along D.
at::Tensor UnitStrideLastDim(const at::Tensor& t) {
  return t.stride(2) == 1 ? t : t.contiguous();
}

// Two-pass CUDA kernel (kernels/cuda/attention_with_scores.cu). Allocates the output, the [H, N]
// log-sum-exp workspace and the requested scores; the only other scratch is an [H, T] buffer for
// head-mean sums when per-head scores are not requested. Nothing is O(N·T).
AttentionWithScores CudaKernelAttention(const at::Tensor& q_in, const at::Tensor& k_in,
                                        const at::Tensor& v_in, double scale,
                                        const AttentionScoresOptions& options) {
  const c10::cuda::CUDAGuard device_guard(q_in.device());
  const at::Tensor q = UnitStrideLastDim(q_in);
  const at::Tensor k = UnitStrideLastDim(k_in);
  const at::Tensor v = UnitStrideLastDim(v_in);
  const int64_t num_heads = q.size(0);
  const int64_t num_queries = q.size(1);
  const int64_t num_keys = k.size(1);
  const at::TensorOptions f32 = q.options().dtype(at::kFloat);
  const cuda::ScoreReduction reduction = options.reduction == QueryReduction::kSum
                                             ? cuda::ScoreReduction::kSum
                                             : cuda::ScoreReduction::kMax;

  AttentionWithScores result;
  result.output = at::empty({num_heads, num_queries, q.size(2)}, q.options());
  const at::Tensor lse = at::empty({num_heads, num_queries}, f32);
  if (options.head_mean_scores) result.key_scores = at::empty({num_keys}, f32);
  if (options.per_head_scores) result.head_key_scores = at::empty({num_heads, num_keys}, f32);
  at::Tensor head_workspace;
  if (cuda::AttentionNeedsHeadWorkspace(options.head_mean_scores, options.per_head_scores,
                                        reduction)) {
    head_workspace = at::empty({num_heads, num_keys}, f32);
  }

  cuda::AttentionWithScoresArgs args;
  args.dtype = q.scalar_type() == at::kHalf ? cuda::AttentionDtype::kFloat16
                                            : cuda::AttentionDtype::kBFloat16;
  args.head_dim = static_cast<int>(q.size(2));
  args.num_heads = num_heads;
  args.num_queries = num_queries;
  args.num_keys = num_keys;
  args.q = q.data_ptr();
  args.q_stride_head = q.stride(0);
  args.q_stride_row = q.stride(1);
  args.k = k.data_ptr();
  args.k_stride_head = k.stride(0);
  args.k_stride_row = k.stride(1);
  args.v = v.data_ptr();
  args.v_stride_head = v.stride(0);
  args.v_stride_row = v.stride(1);
  args.out = result.output.data_ptr();
  args.out_stride_head = result.output.stride(0);
  args.out_stride_row = result.output.stride(1);
  args.scale = static_cast<float>(scale);
  args.reduction = reduction;
  args.lse = lse.data_ptr<float>();
  args.key_scores = options.head_mean_scores ? result.key_scores.data_ptr<float>() : nullptr;
  args.head_scores = options.per_head_scores ? result.head_key_scores.data_ptr<float>() : nullptr;
  args.head_workspace = head_workspace.defined() ? head_workspace.data_ptr<float>() : nullptr;
  const cudaError_t err =
      cuda::LaunchAttentionWithScores(args, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "AttentionWithKeyScores: CUDA kernel launch failed: ",
              cudaGetErrorString(err));
  return result;
}
#endif  // STREAMKV_WITH_CUDA

}  // namespace

AttentionWithScores AttentionWithKeyScores(const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, double scale,
                                           const AttentionScoresOptions& options) {
  CheckArguments(q, k, v, scale, options);
  // Inference only: out= variants reject inputs that require grad while grad mode is on.
  at::NoGradGuard no_grad;
#ifdef STREAMKV_WITH_CUDA
  if (CudaKernelSupports(q)) return CudaKernelAttention(q, k, v, scale, options);
#endif
  // CPU, and CUDA configurations the kernel does not cover (float32, other head dims).
  return ChunkedReferenceAttention(q, k, v, scale, options);
}

}  // namespace streamkv::kernels
