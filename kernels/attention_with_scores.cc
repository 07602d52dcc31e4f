#include "kernels/attention_with_scores.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>

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

}  // namespace

AttentionWithScores AttentionWithKeyScores(const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, double scale,
                                           const AttentionScoresOptions& options) {
  CheckArguments(q, k, v, scale, options);
  // Inference only: out= variants reject inputs that require grad while grad mode is on.
  at::NoGradGuard no_grad;
  // Today every device takes the chunked ATen reference; a CUDA kernel will be routed here by
  // device later.
  return ChunkedReferenceAttention(q, k, v, scale, options);
}

}  // namespace streamkv::kernels
