// Test helpers shared by the CPU and GPU attention tests: a naive float64 reference that holds the
// full [H, N, T] probability matrix, and an elementwise closeness check.
#pragma once

#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/attention_with_scores.h"

namespace streamkv::kernels {

struct Reference {
  at::Tensor logits;         // [H, N, T], scaled
  at::Tensor output;         // [H, N, D]
  at::Tensor head_mean_sum;  // [T]    probs.mean(0).sum(0)
  at::Tensor per_head_sum;   // [H, T] probs.sum(1)
  at::Tensor head_mean_max;  // [T]    probs.mean(0).max(0)
  at::Tensor per_head_max;   // [H, T] probs.max(1)
};

// Computed on CPU in float64 from the very values given (already rounded to their dtype).
inline Reference NaiveReference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale) {
  const at::Tensor qd = q.cpu().to(at::kDouble), kd = k.cpu().to(at::kDouble),
                   vd = v.cpu().to(at::kDouble);
  Reference ref;
  ref.logits = at::bmm(qd, kd.transpose(1, 2)) * scale;
  const at::Tensor probs = at::softmax(ref.logits, /*dim=*/-1);  // stable: subtracts the row max
  ref.output = at::bmm(probs, vd);
  ref.head_mean_sum = probs.mean(0).sum(0);
  ref.per_head_sum = probs.sum(1);
  ref.head_mean_max = std::get<0>(probs.mean(0).max(0));
  ref.per_head_max = std::get<0>(probs.max(1));
  return ref;
}

inline const at::Tensor& RefKeyScores(const Reference& ref, QueryReduction reduction) {
  return reduction == QueryReduction::kSum ? ref.head_mean_sum : ref.head_mean_max;
}
inline const at::Tensor& RefHeadScores(const Reference& ref, QueryReduction reduction) {
  return reduction == QueryReduction::kSum ? ref.per_head_sum : ref.per_head_max;
}

// Elementwise |actual − expected| <= atol + rtol·|expected|, with the worst offender on failure.
inline void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, double rtol,
                        double atol, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what << " is undefined";
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const at::Tensor a = actual.cpu().to(at::kDouble), e = expected.cpu().to(at::kDouble);
  ASSERT_TRUE(at::isfinite(a).all().item<bool>()) << what << " has NaN/inf";
  const at::Tensor excess = (a - e).abs() - (atol + rtol * e.abs());
  EXPECT_LE(excess.max().item<double>(), 0.0)
      << what << ": max |diff| " << (a - e).abs().max().item<double>() << " exceeds atol " << atol
      << " + rtol " << rtol << "·|expected|";
}

}  // namespace streamkv::kernels
