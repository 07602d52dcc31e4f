#include "cache/policies/global_ratio_policy.h"

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "cache/policy_factory.h"
#include "tests/unit/cache/policy_test_util.h"

namespace streamkv::cache {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using test_util::AppendFrame;
using test_util::KeyIds;
using test_util::MakeCache;
using test_util::Scores;
using test_util::TinyGeometry;
using test_util::ToVector;
using test_util::TokenIds;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::unique_ptr<EvictionPolicy> MakePolicy(const PolicyParams& params,
                                           const CacheGeometry& geometry) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      CreatePolicy("global_ratio", params, geometry);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? *std::move(policy) : nullptr;
}

EvictionOutcome RunFrame(EvictionPolicy& policy, KvCache& cache, int64_t frame,
                         absl::string_view roles, const std::vector<at::Tensor>& scores) {
  AppendFrame(cache, frame, roles);
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    policy.ObserveLayer(frame, layer, scores[layer], cache);
  }
  return policy.EndFrame(frame, cache);
}

// P_tok = 5: camera, register, 3 patches. ratio 0.7. Special tokens get score 0 on purpose: only
// their role protects them.
TEST(GlobalRatioPolicyTest, ProtectsFirstFrameAndSpecialTokensByRole) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/5);
  auto policy = MakePolicy({{"ratio", "0.7"}}, geometry);
  ASSERT_NE(policy, nullptr);
  const ScoreRequest request = policy->score_request();
  EXPECT_TRUE(request.needed);
  EXPECT_FALSE(request.per_head);
  EXPECT_EQ(request.reduction, kernels::QueryReduction::kSum);
  KvCache cache = MakeCache(geometry, policy->granularity());

  // Frame 0: every token is from the first frame: nothing evictable.
  const at::Tensor zeros5 = Scores({0, 0, 0, 0, 0});
  EvictionOutcome outcome = RunFrame(*policy, cache, 0, "CRPPP", {zeros5, zeros5});
  EXPECT_THAT(outcome.evicted, ElementsAre(0, 0));
  EXPECT_THAT(ToVector<float>(cache.layer(0).score[0]), Each(kInf));

  // Frame 1: ids 0..9; evictable = patches 7, 8, 9; drop floor(0.7·3) = 2 lowest.
  //   layer 0: 7 .5, 8 .25, 9 1 -> drop 8, 7.   layer 1: 7 2, 8 1, 9 .5 -> drop 9, 8.
  outcome = RunFrame(*policy, cache, 1, "CRPPP",
                     {Scores({0, 0, 0, 0, 0, 0, 0, 0.5, 0.25, 1}),
                      Scores({0, 0, 0, 0, 0, 0, 0, 2, 1, 0.5})});
  EXPECT_THAT(outcome.evicted, ElementsAre(2, 2));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3, 4, 5, 6, 9));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));

  // Frame 2, layer 0 after appending ids 10..14: index 8 = camera 10, 9 = register 11,
  // 10 = patch 12. The index rule `idx % P_tok < 2` would protect patch 12 (10 % 5 == 0) and
  // evict the special tokens (8 % 5, 9 % 5 >= 2). Evictable: 9, 12, 13, 14; drop floor(2.8) = 2:
  //   layer 0: 9 3, 12 .25, 13 2, 14 .5 -> drop 12, 14.
  //   layer 1: 7 .125, 12 1, 13 .25, 14 3 -> drop 7, 13.
  outcome = RunFrame(*policy, cache, 2, "CRPPP",
                     {Scores({0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0.25, 2, 0.5}),
                      Scores({0, 0, 0, 0, 0, 0, 0, 0.125, 0, 0, 1, 0.25, 3})});
  EXPECT_THAT(outcome.evicted, ElementsAre(2, 2));
  EXPECT_EQ(outcome.protected_overflow, 0);
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 13));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 14));
  EXPECT_THAT(KeyIds(cache, 0, 1), ElementsAre(0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 13));
  // Protected tokens hold +inf; the surviving patches hold this frame's score.
  EXPECT_THAT(ToVector<float>(cache.layer(0).score[0]),
              ElementsAre(kInf, kInf, kInf, kInf, kInf, kInf, kInf, 3, kInf, kInf, 2));
}

TEST(GlobalRatioPolicyTest, ScoreIsTheCurrentFrameOnly) {
  // Unlike h2o nothing accumulates: id 4 led in frame 1 (9) but goes for its low frame-2 score.
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/1, /*tokens_per_frame=*/3);
  auto policy = MakePolicy({{"ratio", "0.5"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());
  RunFrame(*policy, cache, 0, "CPP", {Scores({0, 0, 0})});
  // Frame 1: ids 0..5, evictable 4, 5 -> drop floor(1) = 1: id 5 (1 < 9).
  EXPECT_THAT(RunFrame(*policy, cache, 1, "CPP", {Scores({0, 0, 0, 0, 9, 1})}).evicted,
              ElementsAre(1));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3, 4));
  // Frame 2: ids 0..4, 6, 7, 8; evictable 4, 7, 8 -> drop 1: id 4 (.5 < 1 < 2).
  EXPECT_THAT(RunFrame(*policy, cache, 2, "CPP", {Scores({0, 0, 0, 0, 0.5, 0, 1, 2})}).evicted,
              ElementsAre(1));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3, 6, 7, 8));
}

// One frame after the first, scores reduced from two queries' attention as the policy requests.
// Patches 6, 7 (1 of them dropped):  query 0: .625, .375;  query 1: .0625, .375.
//   sum: 6 -> .6875, 7 -> .75 (drop 6);   max: 6 -> .625, 7 -> .375 (drop 7).
std::vector<int64_t> SurvivorsWithReduction(const std::string& reduction,
                                            kernels::QueryReduction expected_request) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/1, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"ratio", "0.5"}, {"reduction", reduction}}, geometry);
  if (policy == nullptr) return {};
  EXPECT_EQ(policy->score_request().reduction, expected_request) << reduction;
  KvCache cache = MakeCache(geometry, policy->granularity());
  RunFrame(*policy, cache, 0, "CRPP", {Scores({0.25, 0.25, 0.25, 0.25})});
  const at::Tensor attention = at::stack({
      Scores({0, 0, 0, 0, 0, 0, 0.625, 0.375}),
      Scores({0.125, 0.125, 0.125, 0.125, 0.03125, 0.03125, 0.0625, 0.375}),
  });  // [queries, T]
  const at::Tensor scores = policy->score_request().reduction == kernels::QueryReduction::kMax
                                ? std::get<0>(attention.max(0))
                                : attention.sum(0);
  EXPECT_THAT(RunFrame(*policy, cache, 1, "CRPP", {scores}).evicted, ElementsAre(1));
  return TokenIds(cache, 0);
}

TEST(GlobalRatioPolicyTest, ReductionSelectsTheScoreRequest) {
  EXPECT_THAT(SurvivorsWithReduction("sum", kernels::QueryReduction::kSum),
              ElementsAre(0, 1, 2, 3, 4, 5, 7));
  // The mean ranks exactly like the sum: the policy asks for the sum.
  EXPECT_THAT(SurvivorsWithReduction("mean", kernels::QueryReduction::kSum),
              ElementsAre(0, 1, 2, 3, 4, 5, 7));
  EXPECT_THAT(SurvivorsWithReduction("max", kernels::QueryReduction::kMax),
              ElementsAre(0, 1, 2, 3, 4, 5, 6));
}

TEST(GlobalRatioPolicyTest, RatioBoundsAreInclusive) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/1, /*tokens_per_frame=*/4);
  const at::Tensor f0 = Scores({1, 2, 3, 4});
  const at::Tensor f1 = Scores({1, 2, 3, 4, 5, 6, 7, 8});
  auto keep_all = MakePolicy({{"ratio", "0"}}, geometry);
  ASSERT_NE(keep_all, nullptr);
  KvCache cache = MakeCache(geometry, keep_all->granularity());
  RunFrame(*keep_all, cache, 0, "CRPP", {f0});
  EXPECT_THAT(RunFrame(*keep_all, cache, 1, "CRPP", {f1}).evicted, ElementsAre(0));

  // ratio 1 drops every evictable token: only frame 0 and frame 1's camera/register remain.
  auto drop_all = MakePolicy({{"ratio", "1"}}, geometry);
  ASSERT_NE(drop_all, nullptr);
  KvCache cache2 = MakeCache(geometry, drop_all->granularity());
  RunFrame(*drop_all, cache2, 0, "CRPP", {f0});
  EXPECT_THAT(RunFrame(*drop_all, cache2, 1, "CRPP", {f1}).evicted, ElementsAre(2));
  EXPECT_THAT(TokenIds(cache2, 0), ElementsAre(0, 1, 2, 3, 4, 5));
}

void ExpectInvalid(const PolicyParams& params, const std::string& field) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      CreatePolicy("global_ratio", params, TinyGeometry());
  ASSERT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_THAT(std::string(policy.status().message()), HasSubstr(field));
}

TEST(GlobalRatioPolicyTest, RejectsInvalidParameters) {
  ExpectInvalid({{"ratio", "1.5"}}, "ratio");
  ExpectInvalid({{"ratio", "-0.1"}}, "ratio");
  ExpectInvalid({{"ratio", "most"}}, "ratio");
  ExpectInvalid({{"ratio", "nan"}}, "ratio");
  ExpectInvalid({{"reduction", "median"}}, "reduction");
  ExpectInvalid({{"fraction", "0.3"}}, "fraction");
}

}  // namespace
}  // namespace streamkv::cache
