#include "cache/policies/h2o_policy.h"

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

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using test_util::AppendFrame;
using test_util::HeadScores;
using test_util::KeyIds;
using test_util::MakeCache;
using test_util::Scores;
using test_util::TinyGeometry;
using test_util::ToVector;
using test_util::TokenIds;
using test_util::ValueIds;

std::unique_ptr<EvictionPolicy> MakePolicy(const PolicyParams& params,
                                           const CacheGeometry& geometry) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = CreatePolicy("h2o", params, geometry);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? *std::move(policy) : nullptr;
}

// Runs one frame: append, observe every layer with scores[layer], end the frame.
EvictionOutcome RunFrame(EvictionPolicy& policy, KvCache& cache, int64_t frame,
                         const std::vector<at::Tensor>& scores) {
  AppendFrame(cache, frame, "CRPP");
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    policy.ObserveLayer(frame, layer, scores[layer], cache);
  }
  return policy.EndFrame(frame, cache);
}

TEST(H2oPolicyTest, LayerGranularityKeepsRecentAndHeavyTokens) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy(
      {{"heavy_size", "2"}, {"recent_size", "2"}, {"granularity", "layer"}}, geometry);
  ASSERT_NE(policy, nullptr);
  const ScoreRequest request = policy->score_request();
  EXPECT_TRUE(request.needed);
  EXPECT_FALSE(request.per_head);
  EXPECT_EQ(request.reduction, kernels::QueryReduction::kSum);
  EXPECT_EQ(policy->granularity(), Granularity::kLayer);
  EXPECT_EQ(policy->MaxTokensPerLayer(), 4);
  KvCache cache = MakeCache(geometry, policy->granularity());

  // Frame 0: 4 tokens = heavy 2 + recent 2, nothing evicted.
  EvictionOutcome outcome =
      RunFrame(*policy, cache, 0, {Scores({1, 5, 2, 3}), Scores({4, 1, 1.5, 2})});
  EXPECT_THAT(outcome.evicted, ElementsAre(0, 0));

  // Frame 1: ids 0..7; recent = ids 6, 7; heavy = top 2 of ids 0..5 by accumulated score.
  //   layer 0: 1+1, 5+1, 2+.5, 3+4, 6.5, 1.5 = 2, 6, 2.5, 7, 6.5, 1.5 -> ids 3, 4.
  //   layer 1: 4+.5, 1+3, 1.5+0, 2+0, 1, 5 = 4.5, 4, 1.5, 2, 1, 5    -> ids 0, 5.
  outcome = RunFrame(*policy, cache, 1,
                     {Scores({1, 1, 0.5, 4, 6.5, 1.5, 3, 2.5}),
                      Scores({0.5, 3, 0, 0, 1, 5, 0, 0})});
  EXPECT_THAT(outcome.evicted, ElementsAre(4, 4));
  EXPECT_EQ(outcome.protected_overflow, 0);
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(3, 4, 6, 7));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(0, 5, 6, 7));
  EXPECT_THAT(KeyIds(cache, 0, 1), ElementsAre(3, 4, 6, 7));
  EXPECT_THAT(ValueIds(cache, 1, 0), ElementsAre(0, 5, 6, 7));
  // Scores and exposures move with their tokens.
  EXPECT_THAT(ToVector<float>(cache.layer(0).score[0]), ElementsAre(7, 6.5, 3, 2.5));
  EXPECT_THAT(ToVector<int64_t>(cache.layer(0).exposure[0]), ElementsAre(2, 1, 1, 1));

  // Frame 2, layer 0: ids 3, 4, 6, 7, 8..11; older = 3, 4, 6, 7 score 7, 6.5, 3+1, 2.5+2
  // -> heavy ids 3, 4. Layer 1: ids 0, 5, 6, 7 score 4.5, 5, 0+3, 0+5.5 -> heavy ids 5, 7.
  outcome = RunFrame(*policy, cache, 2,
                     {Scores({0, 0, 1, 2, 0.25, 0.5, 0.75, 1}),
                      Scores({0, 0, 3, 5.5, 0.25, 0.5, 0.75, 1})});
  EXPECT_THAT(outcome.evicted, ElementsAre(4, 4));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(3, 4, 10, 11));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(5, 7, 10, 11));
}

TEST(H2oPolicyTest, HeadGranularityKeepsDifferentHeavyTokensPerHead) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"heavy_size", "2"}, {"recent_size", "2"}}, geometry);  // head
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->granularity(), Granularity::kHead);
  EXPECT_TRUE(policy->score_request().per_head);
  KvCache cache = MakeCache(geometry, policy->granularity());
  ASSERT_EQ(cache.metadata_rows(), 2);

  const std::vector<float> head_a0 = {3, 2, 1, 0.5};
  const std::vector<float> head_b0 = {0.5, 1, 2, 3};
  EvictionOutcome outcome = RunFrame(
      *policy, cache, 0, {HeadScores({head_a0, head_b0}), HeadScores({head_b0, head_a0})});
  EXPECT_THAT(outcome.evicted, ElementsAre(0, 0));

  // Frame 1, recent = ids 6, 7 in every head. Accumulated over ids 0..5:
  //   pattern a: 3+1, 2+.5, 1+.25, .5+.25, 2.75, .125 = 4, 2.5, 1.25, .75, 2.75, .125 -> 0, 4
  //   pattern b: .5+0, 1+0, 2+0, 3+1, .25, 3.5                                       -> 3, 5
  // Layer 0 has a in head 0 and b in head 1; layer 1 the other way round.
  const std::vector<float> head_a1 = {1, 0.5, 0.25, 0.25, 2.75, 0.125, 0, 0};
  const std::vector<float> head_b1 = {0, 0, 0, 1, 0.25, 3.5, 0, 0};
  outcome = RunFrame(*policy, cache, 1,
                     {HeadScores({head_a1, head_b1}), HeadScores({head_b1, head_a1})});
  EXPECT_THAT(outcome.evicted, ElementsAre(4, 4));
  EXPECT_THAT(TokenIds(cache, 0, 0), ElementsAre(0, 4, 6, 7));
  EXPECT_THAT(TokenIds(cache, 0, 1), ElementsAre(3, 5, 6, 7));
  EXPECT_THAT(TokenIds(cache, 1, 0), ElementsAre(3, 5, 6, 7));
  EXPECT_THAT(TokenIds(cache, 1, 1), ElementsAre(0, 4, 6, 7));
  // K and V rows of every head follow that head's selection.
  EXPECT_THAT(KeyIds(cache, 0, 0), ElementsAre(0, 4, 6, 7));
  EXPECT_THAT(KeyIds(cache, 0, 1), ElementsAre(3, 5, 6, 7));
  EXPECT_THAT(ValueIds(cache, 1, 0), ElementsAre(3, 5, 6, 7));
  EXPECT_THAT(ValueIds(cache, 1, 1), ElementsAre(0, 4, 6, 7));
}

TEST(H2oPolicyTest, RatioBudgetsUseLengthBeforeEviction) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy(
      {{"hh_ratio", "0.25"}, {"recent_ratio", "0.5"}, {"granularity", "layer"}}, geometry);
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->MaxTokensPerLayer(), std::nullopt);
  KvCache cache = MakeCache(geometry, policy->granularity());

  // Frame 0: T=4, recent floor(2)=2 (ids 2, 3), heavy floor(1)=1 of ids 0, 1 (1 < 2) -> id 1.
  EvictionOutcome outcome =
      RunFrame(*policy, cache, 0, {Scores({1, 2, 0, 0}), Scores({1, 2, 0, 0})});
  EXPECT_THAT(outcome.evicted, ElementsAre(1, 1));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(1, 2, 3));

  // Frame 1: ids 1, 2, 3, 4..7, T=7: recent floor(3.5)=3 (ids 5, 6, 7), heavy floor(1.75)=1 of
  // ids 1, 2, 3, 4 scored 2+.5, 0+3, 0+1, 2 -> id 2.
  outcome = RunFrame(*policy, cache, 1,
                     {Scores({0.5, 3, 1, 2, 0, 0, 0}), Scores({0.5, 3, 1, 2, 0, 0, 0})});
  EXPECT_THAT(outcome.evicted, ElementsAre(3, 3));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(2, 5, 6, 7));

  // Frame 2: ids 2, 5, 6, 7, 8..11, T=8: recent 4 (ids 8..11), heavy 2 of ids 2, 5, 6, 7 scored
  // 3+0, 0+1, 0+.5, 0+.25 -> ids 2, 5.
  outcome = RunFrame(*policy, cache, 2,
                     {Scores({0, 1, 0.5, 0.25, 0, 0, 0, 0}),
                      Scores({0, 1, 0.5, 0.25, 0, 0, 0, 0})});
  EXPECT_THAT(outcome.evicted, ElementsAre(2, 2));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(2, 5, 8, 9, 10, 11));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(2, 5, 8, 9, 10, 11));
}

// Frame 1 accumulated scores of ids 0..5: 3+1, 2+.5, 1+.25, .5+.25, 2.75, 2.25, over lifetimes
// 2, 2, 2, 2, 1, 1. Raw top 2: ids 0 (4), 4 (2.75). Normalised: 2, 1.25, .625, .375, 2.75, 2.25
// -> ids 4, 5.
std::vector<int64_t> SurvivorsWithLifetimeNormalization(const std::string& normalize) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"heavy_size", "2"},
                            {"recent_size", "2"},
                            {"granularity", "layer"},
                            {"normalize_by_lifetime", normalize}},
                           geometry);
  if (policy == nullptr) return {};
  KvCache cache = MakeCache(geometry, policy->granularity());
  const at::Tensor f0 = Scores({3, 2, 1, 0.5});
  const at::Tensor f1 = Scores({1, 0.5, 0.25, 0.25, 2.75, 2.25, 0, 0});
  EXPECT_THAT(RunFrame(*policy, cache, 0, {f0, f0}).evicted, ElementsAre(0, 0));
  EXPECT_THAT(RunFrame(*policy, cache, 1, {f1, f1}).evicted, ElementsAre(4, 4));
  EXPECT_EQ(TokenIds(cache, 0), TokenIds(cache, 1));
  return TokenIds(cache, 0);
}

TEST(H2oPolicyTest, NormalizeByLifetimeChangesHeavyHitters) {
  EXPECT_THAT(SurvivorsWithLifetimeNormalization("false"), ElementsAre(0, 4, 6, 7));
  EXPECT_THAT(SurvivorsWithLifetimeNormalization("true"), ElementsAre(4, 5, 6, 7));
}

TEST(H2oPolicyTest, TiesKeepTheLaterToken) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/1, /*tokens_per_frame=*/4);
  auto policy = MakePolicy(
      {{"heavy_size", "1"}, {"recent_size", "1"}, {"granularity", "layer"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());
  // Recent = id 3; ids 0, 1, 2 tie for the one heavy slot: the latest, id 2, wins.
  EXPECT_THAT(RunFrame(*policy, cache, 0, {Scores({1, 1, 1, 1})}).evicted, ElementsAre(2));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(2, 3));

  // The shared helper directly: 2s at 1 and 3, then the latest 1 (index 4).
  const at::Tensor rank = at::tensor({1.f, 2.f, 1.f, 2.f, 1.f}).view({1, -1});
  EXPECT_THAT(ToVector<int64_t>(TopRanked(rank, 3)[0]), ElementsAre(1, 3, 4));
}

// Per-head selection rests on TopRanked: each row picks its own top entries, in ascending order.
TEST(H2oPolicyTest, TopRankedSelectsPerRowInAscendingOrder) {
  const at::Tensor rank =
      at::tensor({3.f, 5.f, 1.f, 4.f, 2.f, 4.f, 1.f, 5.f, 2.f, 3.f}).view({2, 5});
  const at::Tensor keep = TopRanked(rank, 3);  // row 0: 5@1, 4@3, 3@0; row 1: 5@2, 4@0, 3@4
  ASSERT_EQ(keep.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_THAT(ToVector<int64_t>(keep[0]), ElementsAre(0, 1, 3));
  EXPECT_THAT(ToVector<int64_t>(keep[1]), ElementsAre(0, 2, 4));
}

// Documented defaults: heavy_size and recent_size are 1024 unless their ratio form is given.
TEST(H2oPolicyTest, DefaultBudgetsAre1024Tokens) {
  auto policy = MakePolicy({}, TinyGeometry());
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->MaxTokensPerLayer(), 2048);
}

TEST(H2oPolicyTest, RatioOfOneBudgetKeepsTheOtherDefault) {
  // hh_ratio alone: recent_size stays 1024, so a 4-token frame is kept whole.
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/1, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"hh_ratio", "0.5"}, {"granularity", "layer"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());
  EXPECT_THAT(RunFrame(*policy, cache, 0, {Scores({4, 3, 2, 1})}).evicted, ElementsAre(0));
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3));
}

void ExpectInvalid(const PolicyParams& params, const std::vector<std::string>& fields) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
      CreatePolicy("h2o", params, TinyGeometry());
  ASSERT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << fields[0];
  for (const std::string& field : fields) {
    EXPECT_THAT(std::string(policy.status().message()), HasSubstr(field));
  }
}

TEST(H2oPolicyTest, RejectsInvalidParameters) {
  ExpectInvalid({{"heavy_size", "8"}, {"hh_ratio", "0.1"}}, {"heavy_size", "hh_ratio"});
  ExpectInvalid({{"recent_size", "8"}, {"recent_ratio", "0.1"}}, {"recent_size", "recent_ratio"});
  ExpectInvalid({{"hh_ratio", "0"}}, {"hh_ratio"});
  ExpectInvalid({{"hh_ratio", "1.5"}}, {"hh_ratio"});
  ExpectInvalid({{"recent_ratio", "-0.5"}}, {"recent_ratio"});
  ExpectInvalid({{"heavy_size", "-1"}}, {"heavy_size"});
  ExpectInvalid({{"heavy_size", "lots"}}, {"heavy_size"});
  ExpectInvalid({{"heavy_size", "0"}, {"recent_size", "0"}}, {"heavy_size", "recent_size"});
  ExpectInvalid({{"granularity", "token"}}, {"granularity"});
  ExpectInvalid({{"normalize_by_lifetime", "maybe"}}, {"normalize_by_lifetime"});
  ExpectInvalid({{"heavy_ratio", "0.1"}}, {"heavy_ratio"});
}

}  // namespace
}  // namespace streamkv::cache
