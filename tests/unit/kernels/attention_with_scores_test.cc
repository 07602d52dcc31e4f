#include "kernels/attention_with_scores.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/kernels/naive_attention.h"

namespace streamkv::kernels {
namespace {

using ::testing::HasSubstr;

std::string Name(QueryReduction reduction) {
  return reduction == QueryReduction::kSum ? "sum" : "max";
}

AttentionScoresOptions BothForms(QueryReduction reduction, int64_t chunk) {
  AttentionScoresOptions options;
  options.head_mean_scores = true;
  options.per_head_scores = true;
  options.reduction = reduction;
  options.query_chunk = chunk;
  return options;
}

struct Shape {
  int64_t h, n, t, d;
};

std::string ShapeName(const Shape& s) {
  return "H" + std::to_string(s.h) + "_N" + std::to_string(s.n) + "_T" + std::to_string(s.t) +
         "_D" + std::to_string(s.d);
}

void PrintTo(const Shape& s, std::ostream* os) { *os << ShapeName(s); }

class AttentionWithScoresShapeTest
    : public ::testing::TestWithParam<std::tuple<Shape, QueryReduction>> {};

// Every chunk size, including 1, 7, N and > N, matches the float64 reference and each other.
TEST_P(AttentionWithScoresShapeTest, MatchesNaiveReferenceForEveryChunkSize) {
  const auto [shape, reduction] = GetParam();
  at::manual_seed(1234);
  const at::Tensor q = at::randn({shape.h, shape.n, shape.d});
  const at::Tensor k = at::randn({shape.h, shape.t, shape.d});
  const at::Tensor v = at::randn({shape.h, shape.t, shape.d});
  const double scale = 1.0 / std::sqrt(static_cast<double>(shape.d));
  const Reference ref = NaiveReference(q, k, v, scale);

  const AttentionWithScores whole =
      AttentionWithKeyScores(q, k, v, scale, BothForms(reduction, shape.n));
  for (const int64_t chunk : {int64_t{1}, int64_t{7}, shape.n, shape.n + 5}) {
    SCOPED_TRACE("query_chunk=" + std::to_string(chunk));
    const AttentionWithScores got =
        AttentionWithKeyScores(q, k, v, scale, BothForms(reduction, chunk));
    EXPECT_EQ(got.output.scalar_type(), at::kFloat);
    EXPECT_EQ(got.key_scores.scalar_type(), at::kFloat);
    EXPECT_EQ(got.head_key_scores.scalar_type(), at::kFloat);
    ExpectClose(got.output, ref.output, 1e-4, 1e-5, "output");
    ExpectClose(got.key_scores, RefKeyScores(ref, reduction), 1e-4, 1e-6, "key_scores");
    ExpectClose(got.head_key_scores, RefHeadScores(ref, reduction), 1e-4, 1e-6, "head_key_scores");
    // Chunking must not change the results.
    ExpectClose(got.output, whole.output, 1e-5, 1e-5, "output vs one chunk");
    ExpectClose(got.key_scores, whole.key_scores, 1e-5, 1e-6, "key_scores vs one chunk");
    ExpectClose(got.head_key_scores, whole.head_key_scores, 1e-5, 1e-6,
                "head_key_scores vs one chunk");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionWithScoresShapeTest,
    ::testing::Combine(::testing::Values(Shape{1, 1, 1, 1},     // everything minimal
                                         Shape{2, 5, 1, 8},     // T = 1
                                         Shape{3, 1, 9, 4},     // N = 1
                                         Shape{4, 3, 500, 16},  // T >> N
                                         Shape{2, 37, 11, 5},   // N > T
                                         Shape{3, 13, 17, 7}),  // odd sizes
                       ::testing::Values(QueryReduction::kSum, QueryReduction::kMax)),
    [](const auto& info) {
      return ShapeName(std::get<0>(info.param)) + "_" + Name(std::get<1>(info.param));
    });

// The head-mean max is max_n mean_h p, not the mean over heads of the per-head maxima.
TEST(AttentionWithScoresTest, HeadMeanMaxIsMaxOfHeadMean) {
  at::manual_seed(7);
  const at::Tensor q = at::randn({4, 9, 8}) * 2;
  const at::Tensor k = at::randn({4, 20, 8});
  const at::Tensor v = at::randn({4, 20, 8});
  const Reference ref = NaiveReference(q, k, v, 0.5);
  const at::Tensor mean_of_maxima = ref.per_head_max.mean(0);
  // The two orders differ on this input, so the comparison below distinguishes them.
  ASSERT_GT((mean_of_maxima - ref.head_mean_max).abs().max().item<double>(), 1e-3);
  for (const int64_t chunk : {1, 4, 9}) {
    SCOPED_TRACE("query_chunk=" + std::to_string(chunk));
    const AttentionWithScores got =
        AttentionWithKeyScores(q, k, v, 0.5, BothForms(QueryReduction::kMax, chunk));
    ExpectClose(got.key_scores, ref.head_mean_max, 1e-4, 1e-6, "key_scores");
  }
}

// Every probability row sums to 1, so sum scores total N (head mean and every head).
TEST(AttentionWithScoresTest, SumScoresTotalNumberOfQueries) {
  at::manual_seed(11);
  const int64_t h = 3, n = 21, t = 40, d = 16;
  const at::Tensor q = at::randn({h, n, d}), k = at::randn({h, t, d}), v = at::randn({h, t, d});
  const AttentionWithScores got =
      AttentionWithKeyScores(q, k, v, 0.25, BothForms(QueryReduction::kSum, 8));
  EXPECT_NEAR(got.key_scores.sum().item<double>(), n, 1e-4);
  ExpectClose(got.head_key_scores.sum(1), at::full({h}, static_cast<double>(n)), 0, 1e-4,
              "per-head totals");
  EXPECT_TRUE((got.key_scores >= 0).all().item<bool>());
}

// Logits around ±1e3 overflow a naive exp in float32; the result must stay finite and correct.
TEST(AttentionWithScoresTest, LargeMagnitudeLogitsAreStable) {
  at::manual_seed(3);
  const int64_t h = 2, n = 6, t = 30, d = 16;
  const at::Tensor q = at::randn({h, n, d}) * 10;
  const at::Tensor k = at::randn({h, t, d}) * 10;
  const at::Tensor v = at::randn({h, t, d});
  const double scale = 1.0;
  const Reference ref = NaiveReference(q, k, v, scale);
  ASSERT_GT(ref.logits.abs().max().item<double>(), 500.0);
  for (const QueryReduction reduction : {QueryReduction::kSum, QueryReduction::kMax}) {
    for (const int64_t chunk : {1, 4, 6}) {
      SCOPED_TRACE(Name(reduction) + " query_chunk=" + std::to_string(chunk));
      const AttentionWithScores got =
          AttentionWithKeyScores(q, k, v, scale, BothForms(reduction, chunk));
      // ExpectClose also rejects NaN/inf. float32 logits of magnitude 1e3 carry ~1e-4 absolute
      // error, hence the looser tolerance.
      ExpectClose(got.output, ref.output, 2e-3, 2e-3, "output");
      ExpectClose(got.key_scores, RefKeyScores(ref, reduction), 2e-3, 2e-3, "key_scores");
      ExpectClose(got.head_key_scores, RefHeadScores(ref, reduction), 2e-3, 2e-3,
                  "head_key_scores");
    }
  }
}

// Reduced-precision inputs: output in the input dtype, scores float32 computed in float32.
class AttentionWithScoresDtypeTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(AttentionWithScoresDtypeTest, MatchesFloat32Reference) {
  const at::ScalarType dtype = GetParam();
  at::manual_seed(5);
  const int64_t h = 4, n = 19, t = 70, d = 32;
  const at::Tensor q32 = at::randn({h, n, d}), k32 = at::randn({h, t, d});
  const at::Tensor v32 = at::randn({h, t, d});
  const at::Tensor q = q32.to(dtype), k = k32.to(dtype), v = v32.to(dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const double tol = dtype == at::kBFloat16 ? 5e-2 : 1e-2;

  for (const QueryReduction reduction : {QueryReduction::kSum, QueryReduction::kMax}) {
    SCOPED_TRACE(Name(reduction));
    const AttentionWithScores got = AttentionWithKeyScores(q, k, v, scale, BothForms(reduction, 8));
    EXPECT_EQ(got.output.scalar_type(), dtype);
    EXPECT_EQ(got.key_scores.scalar_type(), at::kFloat);
    EXPECT_EQ(got.head_key_scores.scalar_type(), at::kFloat);

    // Against the float32 inputs: only the input rounding separates the two.
    const Reference ref32 = NaiveReference(q32, k32, v32, scale);
    ExpectClose(got.output, ref32.output, tol, tol, "output vs float32 inputs");
    ExpectClose(got.key_scores, RefKeyScores(ref32, reduction), tol, tol / 10,
                "key_scores vs float32 inputs");

    // Against the rounded inputs: scores are float32 throughout, so they match tightly; the
    // output additionally rounds to `dtype` once.
    const Reference ref = NaiveReference(q, k, v, scale);
    ExpectClose(got.key_scores, RefKeyScores(ref, reduction), 1e-4, 1e-6, "key_scores");
    ExpectClose(got.head_key_scores, RefHeadScores(ref, reduction), 1e-4, 1e-6, "head_key_scores");
    ExpectClose(got.output, ref.output, dtype == at::kBFloat16 ? 8e-3 : 1e-3, 1e-3, "output");
  }
}

INSTANTIATE_TEST_SUITE_P(ReducedPrecision, AttentionWithScoresDtypeTest,
                         ::testing::Values(at::kHalf, at::kBFloat16), [](const auto& info) {
                           return std::string(info.param == at::kHalf ? "float16" : "bfloat16");
                         });

// Only the requested score forms are computed; the output never depends on them.
TEST(AttentionWithScoresTest, OnlyRequestedFormsAreDefined) {
  at::manual_seed(9);
  const int64_t h = 3, n = 5, t = 12, d = 8;
  const at::Tensor q = at::randn({h, n, d}), k = at::randn({h, t, d}), v = at::randn({h, t, d});
  const Reference ref = NaiveReference(q, k, v, 0.3);
  for (const QueryReduction reduction : {QueryReduction::kSum, QueryReduction::kMax}) {
    for (const bool head_mean : {false, true}) {
      for (const bool per_head : {false, true}) {
        SCOPED_TRACE(Name(reduction) + " head_mean=" + std::to_string(head_mean) +
                     " per_head=" + std::to_string(per_head));
        AttentionScoresOptions options;
        options.head_mean_scores = head_mean;
        options.per_head_scores = per_head;
        options.reduction = reduction;
        options.query_chunk = 2;
        const AttentionWithScores got = AttentionWithKeyScores(q, k, v, 0.3, options);
        ExpectClose(got.output, ref.output, 1e-4, 1e-5, "output");
        EXPECT_EQ(got.key_scores.defined(), head_mean);
        EXPECT_EQ(got.head_key_scores.defined(), per_head);
        if (head_mean) {
          ExpectClose(got.key_scores, RefKeyScores(ref, reduction), 1e-4, 1e-6, "key_scores");
        }
        if (per_head) {
          ExpectClose(got.head_key_scores, RefHeadScores(ref, reduction), 1e-4, 1e-6,
                      "head_key_scores");
        }
      }
    }
  }
}

// Strided views (e.g. [N, H, D] activations permuted to [H, N, D]) are accepted as they are.
TEST(AttentionWithScoresTest, AcceptsNonContiguousInputs) {
  at::manual_seed(13);
  const int64_t h = 4, n = 10, t = 25, d = 8;
  const at::Tensor q = at::randn({n, h, d}).transpose(0, 1);
  const at::Tensor k = at::randn({t, h, d}).transpose(0, 1);
  const at::Tensor v = at::randn({h, d, t}).transpose(1, 2);
  ASSERT_FALSE(q.is_contiguous());
  const Reference ref = NaiveReference(q, k, v, 0.4);
  const AttentionWithScores got =
      AttentionWithKeyScores(q, k, v, 0.4, BothForms(QueryReduction::kSum, 3));
  ExpectClose(got.output, ref.output, 1e-4, 1e-5, "output");
  ExpectClose(got.key_scores, ref.head_mean_sum, 1e-4, 1e-6, "key_scores");
  ExpectClose(got.head_key_scores, ref.per_head_sum, 1e-4, 1e-6, "head_key_scores");
}

// The same ATen code on CUDA tensors matches the CPU result (runs only in CUDA builds with a GPU).
TEST(AttentionWithScoresTest, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(17);
  const at::Tensor q = at::randn({4, 33, 16}), k = at::randn({4, 90, 16});
  const at::Tensor v = at::randn({4, 90, 16});
  for (const QueryReduction reduction : {QueryReduction::kSum, QueryReduction::kMax}) {
    SCOPED_TRACE(Name(reduction));
    const AttentionWithScores cpu = AttentionWithKeyScores(q, k, v, 0.25, BothForms(reduction, 8));
    const AttentionWithScores gpu =
        AttentionWithKeyScores(q.cuda(), k.cuda(), v.cuda(), 0.25, BothForms(reduction, 8));
    EXPECT_TRUE(gpu.output.is_cuda());
    EXPECT_TRUE(gpu.key_scores.is_cuda());
    ExpectClose(gpu.output.cpu(), cpu.output, 1e-4, 1e-5, "output");
    ExpectClose(gpu.key_scores.cpu(), cpu.key_scores, 1e-4, 1e-6, "key_scores");
    ExpectClose(gpu.head_key_scores.cpu(), cpu.head_key_scores, 1e-4, 1e-6, "head_key_scores");
  }
}

struct InvalidCase {
  std::string name;
  std::function<void(at::Tensor& q, at::Tensor& k, at::Tensor& v, double& scale,
                     AttentionScoresOptions& options)>
      mutate;
  std::string message;  // must appear in the error
};

class AttentionWithScoresInvalidTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(AttentionWithScoresInvalidTest, ThrowsNamingTheArgument) {
  const InvalidCase& c = GetParam();
  at::Tensor q = at::randn({2, 3, 4}), k = at::randn({2, 5, 4}), v = at::randn({2, 5, 4});
  double scale = 0.5;
  AttentionScoresOptions options;
  // The unmodified arguments are valid, so the throw below comes from the mutation.
  ASSERT_NO_THROW(AttentionWithKeyScores(q, k, v, scale, options));
  c.mutate(q, k, v, scale, options);
  try {
    AttentionWithKeyScores(q, k, v, scale, options);
    ADD_FAILURE() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr(c.message));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Arguments, AttentionWithScoresInvalidTest,
    ::testing::Values(
        InvalidCase{"QNot3D",
                    [](auto& q, auto&, auto&, auto&, auto&) {
                      q = at::randn({3, 4});
                    },
                    "q must be 3-D"},
        InvalidCase{"KNot3D",
                    [](auto&, auto& k, auto&, auto&, auto&) {
                      k = at::randn({5, 4});
                    },
                    "k must be 3-D"},
        InvalidCase{"VNot3D",
                    [](auto&, auto&, auto& v, auto&, auto&) {
                      v = at::randn({1, 2, 5, 4});
                    },
                    "v must be 3-D"},
        InvalidCase{"KHeadsMismatch",
                    [](auto&, auto& k, auto& v, auto&, auto&) {
                      k = at::randn({3, 5, 4});
                      v = at::randn({3, 5, 4});
                    },
                    "k has 3 heads but q has 2"},
        InvalidCase{"KHeadDimMismatch",
                    [](auto&, auto& k, auto& v, auto&, auto&) {
                      k = at::randn({2, 5, 6});
                      v = at::randn({2, 5, 6});
                    },
                    "k has head dim 6 but q has 4"},
        InvalidCase{"VShapeMismatch",
                    [](auto&, auto&, auto& v, auto&, auto&) {
                      v = at::randn({2, 6, 4});
                    },
                    "v must have the shape of k"},
        InvalidCase{"NoKeys",
                    [](auto&, auto& k, auto& v, auto&, auto&) {
                      k = at::randn({2, 0, 4});
                      v = at::randn({2, 0, 4});
                    },
                    "k must have at least one key (T >= 1)"},
        InvalidCase{"NoQueries",
                    [](auto& q, auto&, auto&, auto&, auto&) {
                      q = at::randn({2, 0, 4});
                    },
                    "q must have at least one query (N >= 1)"},
        InvalidCase{"UnsupportedDtype",
                    [](auto& q, auto& k, auto& v, auto&, auto&) {
                      q = q.to(at::kDouble);
                      k = k.to(at::kDouble);
                      v = v.to(at::kDouble);
                    },
                    "q must be float32, float16 or bfloat16"},
        InvalidCase{"KDtypeMismatch",
                    [](auto&, auto& k, auto&, auto&, auto&) { k = k.to(at::kHalf); },
                    "k has dtype Half but q has Float"},
        InvalidCase{"VDtypeMismatch",
                    [](auto&, auto&, auto& v, auto&, auto&) { v = v.to(at::kBFloat16); },
                    "v has dtype BFloat16 but q has Float"},
        InvalidCase{"KDeviceMismatch",
                    [](auto&, auto& k, auto&, auto&,
                       auto&) { k = at::empty({2, 5, 4}, at::TensorOptions().device(at::kMeta)); },
                    "k is on device meta but q is on cpu"},
        InvalidCase{"VDeviceMismatch",
                    [](auto&, auto&, auto& v, auto&,
                       auto&) { v = at::empty({2, 5, 4}, at::TensorOptions().device(at::kMeta)); },
                    "v is on device meta but q is on cpu"},
        InvalidCase{"NonFiniteScale",
                    [](auto&, auto&, auto&, auto& scale, auto&) { scale = std::nan(""); },
                    "scale must be finite"},
        InvalidCase{"ZeroQueryChunk",
                    [](auto&, auto&, auto&, auto&, auto& options) { options.query_chunk = 0; },
                    "options.query_chunk must be >= 1"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace streamkv::kernels
