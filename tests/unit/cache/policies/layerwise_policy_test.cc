#include "cache/policies/layerwise_policy.h"

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

absl::StatusOr<std::unique_ptr<EvictionPolicy>> Create(const PolicyParams& params,
                                                       const CacheGeometry& geometry) {
  return CreatePolicy("layerwise", params, geometry);
}

std::unique_ptr<LayerwisePolicy> MakePolicy(const PolicyParams& params,
                                            const CacheGeometry& geometry) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = Create(params, geometry);
  EXPECT_TRUE(policy.ok()) << policy.status();
  if (!policy.ok()) return nullptr;
  auto* layerwise = dynamic_cast<LayerwisePolicy*>(policy->get());
  EXPECT_NE(layerwise, nullptr);
  if (layerwise == nullptr) return nullptr;
  policy->release();
  return std::unique_ptr<LayerwisePolicy>(layerwise);
}

void Observe(LayerwisePolicy& policy, KvCache& cache, int64_t frame,
             const std::vector<at::Tensor>& scores) {
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    policy.ObserveLayer(frame, layer, scores[layer], cache);
  }
}

TEST(LayerwisePolicyTest, KeepTargetsAreFlooredSoftmaxOfNegativeVariance) {
  auto policy = MakePolicy({{"budget_tokens", "100"}, {"temp", "0.5"}}, TinyGeometry(3));
  ASSERT_NE(policy, nullptr);
  // −var/temp = −0.2, −0.4, −0.8; exp: 0.818731, 0.670320, 0.449329 (sum 1.938380);
  // α = 0.422379, 0.345815, 0.231806; ×100 = 42.24, 34.58, 23.18 -> 42, 34, 23.
  EXPECT_THAT(policy->KeepTargets(at::tensor({0.1f, 0.2f, 0.4f})), ElementsAre(42, 34, 23));
  // Equal variances share equally: 100/3 = 33.33 -> 33 each.
  EXPECT_THAT(policy->KeepTargets(at::tensor({0.3f, 0.3f, 0.3f})), ElementsAre(33, 33, 33));

  // A higher temperature flattens the weights: −var/5 = −0.02, −0.04, −0.08;
  // α = 0.342236, 0.335459, 0.322305 -> 34, 33, 32.
  auto hot = MakePolicy({{"budget_tokens", "100"}, {"temp", "5"}}, TinyGeometry(3));
  ASSERT_NE(hot, nullptr);
  EXPECT_THAT(hot->KeepTargets(at::tensor({0.1f, 0.2f, 0.4f})), ElementsAre(34, 33, 32));
}

TEST(LayerwisePolicyTest, BudgetForms) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto budget = [&](const PolicyParams& params) -> int64_t {
    auto policy = MakePolicy(params, geometry);
    return policy == nullptr ? -1 : policy->budget_tokens();
  };
  // Seed form: budget_ratio · num_frames · L · P_tok.
  EXPECT_EQ(budget({{"num_frames", "10"}}), 40);  // 0.5 · 10 · 2 · 4
  EXPECT_EQ(budget({{"num_frames", "10"}, {"budget_ratio", "0.25"}}), 20);
  EXPECT_EQ(budget({{"num_frames", "3"}, {"budget_ratio", "0.3"}}), 7);  // floor(7.2)
  EXPECT_EQ(budget({{"budget_frames", "3"}}), 24);                       // 3 · 2 · 4
  EXPECT_EQ(budget({{"budget_tokens", "100"}}), 100);
  // Bytes per cached token: K+V 2·2 heads·4 dims·4 bytes = 64, metadata 17 -> 81.
  EXPECT_EQ(budget({{"budget_bytes", "810"}}), 10);
  EXPECT_EQ(budget({{"budget_bytes", "890"}}), 10);

  auto policy = MakePolicy({{"budget_tokens", "100"}}, geometry);
  ASSERT_NE(policy, nullptr);
  const ScoreRequest request = policy->score_request();
  EXPECT_TRUE(request.needed);
  EXPECT_FALSE(request.per_head);
  EXPECT_EQ(request.reduction, kernels::QueryReduction::kSum);
  EXPECT_EQ(policy->granularity(), Granularity::kLayer);
}

// Both layers see the same attention, so α = ½ each and keep = floor(22/2) = 11 per layer.
TEST(LayerwisePolicyTest, CumulativeAttentionAndExposure) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"budget_tokens", "22"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());

  // Frame 0 (first): every token +inf, exposure 1.
  AppendFrame(cache, 0, "CRPP");
  const at::Tensor a0 = Scores({0.25, 0.25, 0.25, 0.25});
  Observe(*policy, cache, 0, {a0, a0});
  EXPECT_THAT(ToVector<float>(cache.layer(0).score[0]), Each(kInf));
  EXPECT_THAT(ToVector<int64_t>(cache.layer(1).exposure[0]), ElementsAre(1, 1, 1, 1));
  EXPECT_THAT(policy->EndFrame(0, cache).evicted, ElementsAre(0, 0));

  // Frame 1, T = 8: new camera 4 / register 5 +inf; patches 6, 7: a·T = .25·8 = 2, .125·8 = 1.
  AppendFrame(cache, 1, "CRPP");
  const at::Tensor a1 = Scores({0.125, 0.125, 0.125, 0.125, 0.0625, 0.0625, 0.25, 0.125});
  Observe(*policy, cache, 1, {a1, a1});
  EXPECT_THAT(ToVector<float>(cache.layer(0).score[0]),
              ElementsAre(kInf, kInf, kInf, kInf, kInf, kInf, 2, 1));
  EXPECT_THAT(ToVector<int64_t>(cache.layer(0).exposure[0]), ElementsAre(2, 2, 2, 2, 1, 1, 1, 1));
  EXPECT_THAT(policy->EndFrame(1, cache).evicted, ElementsAre(0, 0));  // 8 <= 11

  // Frame 2, T = 12: id 6: 2 + .25·12 = 5; id 7: 1 + .0625·12 = 1.75; id 10: .125·12 = 1.5;
  // id 11: .5·12 = 6.
  AppendFrame(cache, 2, "CRPP");
  const float e = 0.0078125f;
  const at::Tensor a2 = Scores({e, e, e, e, e, e, 0.25, 0.0625, e, e, 0.125, 0.5});
  Observe(*policy, cache, 2, {a2, a2});
  EXPECT_THAT(ToVector<float>(cache.layer(1).score[0]),
              ElementsAre(kInf, kInf, kInf, kInf, kInf, kInf, 5, 1.75, kInf, kInf, 1.5, 6));
  EXPECT_THAT(ToVector<int64_t>(cache.layer(1).exposure[0]),
              ElementsAre(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1));

  // 12 > 11: evict 1 by CAM/exposure: 6 -> 2.5, 7 -> .875, 10 -> 1.5, 11 -> 6: id 7 goes
  // (by raw CAM id 10 would).
  const EvictionOutcome outcome = policy->EndFrame(2, cache);
  EXPECT_THAT(outcome.evicted, ElementsAre(1, 1));
  EXPECT_EQ(outcome.protected_overflow, 0);
  for (int64_t layer = 0; layer < 2; ++layer) {
    EXPECT_THAT(TokenIds(cache, layer), ElementsAre(0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11));
    EXPECT_THAT(KeyIds(cache, layer, 1), ElementsAre(0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11));
  }
  EXPECT_THAT(ToVector<int64_t>(cache.layer(0).exposure[0]),
              ElementsAre(3, 3, 3, 3, 2, 2, 2, 1, 1, 1, 1));
}

TEST(LayerwisePolicyTest, LowerVarianceLayerGetsMoreBudget) {
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"budget_tokens", "28"}, {"temp", "0.05"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());
  AppendFrame(cache, 0, "CRPP");
  const at::Tensor a0 = Scores({0.25, 0.25, 0.25, 0.25});
  Observe(*policy, cache, 0, {a0, a0});
  EXPECT_THAT(policy->EndFrame(0, cache).evicted, ElementsAre(0, 0));  // 14 each >= 4

  // Frame 1: layer 0 uniform (var 0); layer 1 = (0,0,0,0,0,0,.375,.625): var =
  // (.375² + .625²)/8 − (1/8)² = .05078125. −var/temp = 0, −1.015625; α = 1/(1 + e^−1.015625)
  // = .73412, .26588; ×28 = 20.56, 7.44 -> keep 20, 7. Layer 0 (8 tokens) keeps all; layer 1
  // keeps its 6 protected tokens + id 7 (CAM .625·8 = 5 beats id 6's .375·8 = 3).
  AppendFrame(cache, 1, "CRPP");
  Observe(*policy, cache, 1,
          {Scores({0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125}),
           Scores({0, 0, 0, 0, 0, 0, 0.375, 0.625})});
  const EvictionOutcome outcome = policy->EndFrame(1, cache);
  EXPECT_THAT(outcome.evicted, ElementsAre(0, 1));
  EXPECT_EQ(outcome.protected_overflow, 0);
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(0, 1, 2, 3, 4, 5, 7));
}

TEST(LayerwisePolicyTest, ProtectionBeyondBudgetIsReportedAndKept) {
  // Budget 2 over 2 layers with equal variances: keep target 1 per layer.
  const CacheGeometry geometry = TinyGeometry(/*num_layers=*/2, /*tokens_per_frame=*/4);
  auto policy = MakePolicy({{"budget_tokens", "2"}}, geometry);
  ASSERT_NE(policy, nullptr);
  KvCache cache = MakeCache(geometry, policy->granularity());

  // Frame 0: 4 protected tokens per layer, target 1: overflow 3 per layer.
  AppendFrame(cache, 0, "CRPP");
  const at::Tensor a0 = Scores({0.25, 0.25, 0.25, 0.25});
  Observe(*policy, cache, 0, {a0, a0});
  EvictionOutcome outcome = policy->EndFrame(0, cache);
  EXPECT_THAT(outcome.evicted, ElementsAre(0, 0));
  EXPECT_EQ(outcome.protected_overflow, 6);

  // Frame 1: 6 protected (frame 0 + camera 4, register 5), target 1: both patches go,
  // overflow 5 per layer.
  AppendFrame(cache, 1, "CRPP");
  const at::Tensor a1 = Scores({0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125});
  Observe(*policy, cache, 1, {a1, a1});
  outcome = policy->EndFrame(1, cache);
  EXPECT_THAT(outcome.evicted, ElementsAre(2, 2));
  EXPECT_EQ(outcome.protected_overflow, 10);
  EXPECT_THAT(TokenIds(cache, 0), ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_THAT(TokenIds(cache, 1), ElementsAre(0, 1, 2, 3, 4, 5));
}

void ExpectInvalid(const PolicyParams& params, const std::vector<std::string>& fields,
                   const CacheGeometry& geometry = TinyGeometry()) {
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = Create(params, geometry);
  ASSERT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << fields[0];
  for (const std::string& field : fields) {
    EXPECT_THAT(std::string(policy.status().message()), HasSubstr(field));
  }
}

TEST(LayerwisePolicyTest, RejectsInvalidParameters) {
  ExpectInvalid({}, {"num_frames", "budget_frames", "budget_tokens", "budget_bytes"});
  ExpectInvalid({{"budget_tokens", "10"}, {"budget_frames", "2"}}, {"exactly one budget"});
  ExpectInvalid({{"num_frames", "10"}, {"budget_bytes", "1000"}}, {"exactly one budget"});
  ExpectInvalid({{"budget_tokens", "10"}, {"temp", "0"}}, {"temp"});
  ExpectInvalid({{"budget_tokens", "10"}, {"temp", "-1"}}, {"temp"});
  ExpectInvalid({{"num_frames", "10"}, {"budget_ratio", "0"}}, {"budget_ratio"});
  ExpectInvalid({{"num_frames", "10"}, {"budget_ratio", "1.5"}}, {"budget_ratio"});
  ExpectInvalid({{"num_frames", "ten"}}, {"num_frames"});
  ExpectInvalid({{"budget_tokens", "0"}}, {"budget_tokens"});
  ExpectInvalid({{"budget", "10"}}, {"budget"});
  // Frame-based budgets need a fixed frame size.
  ExpectInvalid({{"num_frames", "10"}}, {"num_frames"}, TinyGeometry(2, /*tokens_per_frame=*/0));
  ExpectInvalid({{"budget_frames", "1"}}, {"budget_frames"}, TinyGeometry(2, 0));
}

TEST(LayerwisePolicyTest, BudgetBelowOneTokenNamesItsField) {
  // 80 bytes < 81 bytes per token.
  ExpectInvalid({{"budget_bytes", "80"}}, {"budget_bytes"});
  // 0.01 · 1 frame · 2 layers · 4 tokens = 0.08 -> 0 tokens.
  ExpectInvalid({{"num_frames", "1"}, {"budget_ratio", "0.01"}}, {"budget_ratio"},
                TinyGeometry(2, /*tokens_per_frame=*/4));
}

}  // namespace
}  // namespace streamkv::cache
