// AttentionWithKeyScores on CUDA (the two-pass kernel for float16/bfloat16 with head dim 64 or 128)
// against a naive float64 reference holding the full [H, N, T] matrix and against the CPU chunked
// reference. Every test skips itself without a CUDA GPU.
#include "kernels/attention_with_scores.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/version.h>

#include "tests/unit/kernels/naive_attention.h"

namespace streamkv::kernels {
namespace {

struct Case {
  int64_t h, n, t, d;
  at::ScalarType dtype;
  double logit_scale;  // multiplies 1/sqrt(D); 300 puts scale·q·k at ±1e3
};

std::string CaseName(const Case& c) {
  return "H" + std::to_string(c.h) + "_N" + std::to_string(c.n) + "_T" + std::to_string(c.t) +
         "_D" + std::to_string(c.d) + (c.dtype == at::kHalf ? "_f16" : "_bf16") +
         (c.logit_scale > 1 ? "_extreme" : "");
}

// Tolerances. Output: rounded once to the input type (bf16 keeps 8 significand bits, fp16 11),
// |output| ≲ 3 → bf16 atol 2e-2, fp16 4e-3. Scores are float32 sums of float32 probabilities:
// 1e-3 relative. Extreme logits (|scale·q·k| ~ 1e3): a float32 logit of that size carries an
// absolute error ~1e-4, which is a relative error of the same size in each probability, so the
// score tolerances loosen to 1e-2 relative.
struct Tolerance {
  double out_rtol, out_atol, score_rtol, score_atol;
};
Tolerance TolFor(const Case& c) {
  const bool bf16 = c.dtype == at::kBFloat16;
  const bool extreme = c.logit_scale > 1;
  return {bf16 ? 2e-2 : 4e-3, bf16 ? 2e-2 : 4e-3, extreme ? 1e-2 : 1e-3, extreme ? 1e-3 : 1e-5};
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  const std::vector<Case> shapes = {
      {1, 1, 1, 64, at::kBFloat16, 1},         // smallest problem
      {2, 5, 7, 64, at::kBFloat16, 1},         // T < tile, odd T
      {3, 70, 131, 64, at::kBFloat16, 1},      // N and T just past a tile, odd T
      {2, 64, 64, 128, at::kBFloat16, 1},      // exact tiles
      {2, 3, 5000, 128, at::kBFloat16, 1},     // T ≫ N
      {4, 65, 257, 128, at::kBFloat16, 300},   // extreme logits
      {2, 33, 99, 64, at::kBFloat16, 300},     // extreme logits, odd
      {16, 1041, 2000, 64, at::kBFloat16, 1},  // the aggregator's frame size
  };
  for (const Case& s : shapes) {
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
      Case c = s;
      c.dtype = dtype;
      cases.push_back(c);
    }
  }
  return cases;
}

// Random q, k, v on the GPU; k and v are narrowed views of a larger [H, capacity, D] buffer, as
// the cache hands them over (head stride capacity·D, row stride D).
struct Inputs {
  at::Tensor q, k, v;
  double scale;
};
Inputs MakeInputs(const Case& c, uint64_t seed) {
  at::manual_seed(seed);
  const at::TensorOptions opts = at::TensorOptions().dtype(c.dtype).device(at::kCUDA);
  const int64_t capacity = c.t + 17;
  Inputs in;
  in.q = at::randn({c.h, c.n, c.d}, opts);
  in.k = at::randn({c.h, capacity, c.d}, opts).narrow(1, 0, c.t);
  in.v = at::randn({c.h, capacity, c.d}, opts).narrow(1, 0, c.t);
  in.scale = c.logit_scale / std::sqrt(static_cast<double>(c.d));
  return in;
}

AttentionScoresOptions BothForms(QueryReduction reduction) {
  AttentionScoresOptions options;
  options.head_mean_scores = true;
  options.per_head_scores = true;
  options.reduction = reduction;
  return options;
}

TEST(AttentionWithScoresGpuTest, MatchesNaiveAndChunkedReferences) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  uint64_t seed = 1;
  for (const Case& c : Cases()) {
    const Inputs in = MakeInputs(c, seed++);
    const Reference ref = NaiveReference(in.q, in.k, in.v, in.scale);
    const Tolerance tol = TolFor(c);
    for (QueryReduction reduction : {QueryReduction::kSum, QueryReduction::kMax}) {
      const bool sum = reduction == QueryReduction::kSum;
      const std::string name = CaseName(c) + (sum ? "_sum" : "_max");
      SCOPED_TRACE(name);
      const AttentionWithScores gpu =
          AttentionWithKeyScores(in.q, in.k, in.v, in.scale, BothForms(reduction));
      ASSERT_TRUE(gpu.output.is_cuda());
      EXPECT_EQ(gpu.output.scalar_type(), c.dtype);
      ExpectClose(gpu.output, ref.output, tol.out_rtol, tol.out_atol, name + " output");
      ExpectClose(gpu.key_scores, sum ? ref.head_mean_sum : ref.head_mean_max, tol.score_rtol,
                  tol.score_atol, name + " key_scores");
      ExpectClose(gpu.head_key_scores, sum ? ref.per_head_sum : ref.per_head_max, tol.score_rtol,
                  tol.score_atol, name + " head_key_scores");

      // The CPU chunked reference on the same (rounded) inputs.
      const AttentionWithScores cpu = AttentionWithKeyScores(in.q.cpu(), in.k.cpu(), in.v.cpu(),
                                                             in.scale, BothForms(reduction));
      ExpectClose(gpu.output, cpu.output, tol.out_rtol, tol.out_atol, name + " output vs cpu");
      ExpectClose(gpu.key_scores, cpu.key_scores, tol.score_rtol, tol.score_atol,
                  name + " key_scores vs cpu");
      ExpectClose(gpu.head_key_scores, cpu.head_key_scores, tol.score_rtol, tol.score_atol,
                  name + " head_key_scores vs cpu");
    }
  }
}

TEST(AttentionWithScoresGpuTest, EachScoreFormAloneMatchesBoth) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  const Case c{3, 70, 131, 64, at::kBFloat16, 1};
  const Inputs in = MakeInputs(c, 99);
  for (QueryReduction reduction : {QueryReduction::kSum, QueryReduction::kMax}) {
    const AttentionWithScores both =
        AttentionWithKeyScores(in.q, in.k, in.v, in.scale, BothForms(reduction));
    AttentionScoresOptions mean_only = BothForms(reduction);
    mean_only.per_head_scores = false;
    AttentionScoresOptions head_only = BothForms(reduction);
    head_only.head_mean_scores = false;
    AttentionScoresOptions none = BothForms(reduction);
    none.head_mean_scores = none.per_head_scores = false;
    const AttentionWithScores m = AttentionWithKeyScores(in.q, in.k, in.v, in.scale, mean_only);
    const AttentionWithScores p = AttentionWithKeyScores(in.q, in.k, in.v, in.scale, head_only);
    const AttentionWithScores o = AttentionWithKeyScores(in.q, in.k, in.v, in.scale, none);
    EXPECT_FALSE(m.head_key_scores.defined());
    EXPECT_FALSE(p.key_scores.defined());
    EXPECT_FALSE(o.key_scores.defined() || o.head_key_scores.defined());
    // Same kernels on the same data: identical results.
    EXPECT_TRUE(at::equal(m.key_scores, both.key_scores));
    EXPECT_TRUE(at::equal(p.head_key_scores, both.head_key_scores));
    EXPECT_TRUE(at::equal(o.output, both.output));
  }
}

TEST(AttentionWithScoresGpuTest, ContiguousAndStridedInputsAgree) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  const Case c{2, 40, 300, 128, at::kHalf, 1};
  const Inputs in = MakeInputs(c, 5);
  const AttentionWithScores strided =
      AttentionWithKeyScores(in.q, in.k, in.v, in.scale, BothForms(QueryReduction::kSum));
  // q as a transposed-then-transposed view: head stride D, row stride H·D.
  const at::Tensor q_rows = in.q.transpose(0, 1).contiguous().transpose(0, 1);
  const AttentionWithScores contiguous = AttentionWithKeyScores(
      q_rows, in.k.contiguous(), in.v.contiguous(), in.scale, BothForms(QueryReduction::kSum));
  EXPECT_TRUE(at::equal(strided.output, contiguous.output));
  EXPECT_TRUE(at::equal(strided.key_scores, contiguous.key_scores));
}

TEST(AttentionWithScoresGpuTest, ScoresOfEveryQuerySumToOnePerHead) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  // Σ_t Σ_n p[h, n, t] = N for every head: a cheap global invariant at a long T.
  const Case c{4, 37, 20000, 64, at::kBFloat16, 1};
  const Inputs in = MakeInputs(c, 8);
  AttentionScoresOptions options = BothForms(QueryReduction::kSum);
  const AttentionWithScores r = AttentionWithKeyScores(in.q, in.k, in.v, in.scale, options);
  ExpectClose(r.head_key_scores.sum(1), at::full({c.h}, static_cast<double>(c.n)), 1e-4, 0,
              "per-head totals");
  ExpectClose(r.key_scores.sum(), at::full({}, static_cast<double>(c.n)), 1e-4, 0, "mean total");
}

TEST(AttentionWithScoresGpuTest, UnsupportedConfigurationsUseTheReferenceOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  // float32 and head dim 80 are not kernel configurations; they must still work on CUDA.
  for (const auto& [dtype, d] :
       std::vector<std::pair<at::ScalarType, int64_t>>{{at::kFloat, 64}, {at::kBFloat16, 80}}) {
    at::manual_seed(3);
    const at::TensorOptions opts = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    const at::Tensor q = at::randn({2, 9, d}, opts), k = at::randn({2, 21, d}, opts),
                     v = at::randn({2, 21, d}, opts);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const AttentionWithScores r =
        AttentionWithKeyScores(q, k, v, scale, BothForms(QueryReduction::kSum));
    const Reference ref = NaiveReference(q, k, v, scale);
    ExpectClose(r.output, ref.output, 2e-2, 2e-2, "output");
    ExpectClose(r.key_scores, ref.head_mean_sum, 1e-3, 1e-5, "key_scores");
  }
}

#if TORCH_VERSION_MAJOR >= 2
TEST(AttentionWithScoresGpuTest, FusedAttentionAgreesWithTheKernel) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  // Score-free policies take PyTorch's fused attention; it must agree with the scoring kernel to
  // within the output rounding of the input type (both accumulate in float32).
  for (const Case& c :
       {Case{16, 1041, 2000, 64, at::kBFloat16, 1}, Case{2, 3, 5000, 128, at::kHalf, 1}}) {
    SCOPED_TRACE(CaseName(c));
    const Inputs in = MakeInputs(c, 21);
    AttentionScoresOptions none;
    none.head_mean_scores = false;
    const at::Tensor kernel = AttentionWithKeyScores(in.q, in.k, in.v, in.scale, none).output;
    const c10::optional<at::Tensor> no_mask;
    const at::Tensor fused =
        at::scaled_dot_product_attention(in.q.unsqueeze(0), in.k.unsqueeze(0), in.v.unsqueeze(0),
                                         no_mask, /*dropout_p=*/0.0, /*is_causal=*/false)[0];
    const Tolerance tol = TolFor(c);
    ExpectClose(kernel, fused.to(at::kDouble), tol.out_rtol, tol.out_atol, "kernel vs fused");
  }
}
#endif

}  // namespace
}  // namespace streamkv::kernels
