#include "models/stream3r/aggregator.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "cache/policy_factory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/stream3r/layers.h"
#include "models/weights/checkpoint.h"
#include "tests/unit/models/stream3r/random_checkpoint.h"

namespace streamkv::models::stream3r {
namespace {

constexpr int64_t kHeight = 28;
constexpr int64_t kWidth = 42;  // 2×3 patches: the 2×2 pos_embed is resized (bicubic, antialias)

AggregatorConfig TinyConfig() {
  AggregatorConfig c;
  c.img_size = 28;
  c.patch_size = 14;
  c.embed_dim = 32;
  c.depth = 3;
  c.num_heads = 2;
  c.mlp_ratio = 2.0;
  c.num_register_tokens = 2;
  c.patch_embed = "dinov2_vits14_reg";
  c.patch_embed_depth = 2;
  c.patch_embed_num_heads = 2;
  return c;
}

Aggregator LoadTiny(const AggregatorConfig& cfg = TinyConfig()) {
  auto ckpt =
      WriteRandomCheckpoint(Aggregator::ParameterShapes(cfg), "tiny_aggregator.safetensors");
  Aggregator agg = Aggregator::Load(*ckpt, cfg);
  EXPECT_TRUE(ckpt->CheckAllTaken().ok()) << ckpt->CheckAllTaken();
  return agg;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

struct Session {
  std::unique_ptr<cache::EvictionPolicy> policy;
  std::unique_ptr<cache::KvCache> cache;
};

Session MakeSession(const Aggregator& agg, const std::string& policy_name,
                    const cache::PolicyParams& params = {}) {
  const cache::CacheGeometry geometry = agg.CacheGeometryFor(kHeight, kWidth, at::kFloat);
  auto policy = cache::CreatePolicy(policy_name, params, geometry);
  EXPECT_TRUE(policy.ok()) << policy.status();
  Session s;
  s.policy = std::move(policy).value();
  s.cache = std::make_unique<cache::KvCache>(cache::CacheOptionsFor(*s.policy, geometry, at::kCPU));
  return s;
}

TEST(AggregatorTest, ParameterShapesUseUpstreamNames) {
  const ParameterShapeList shapes = Aggregator::ParameterShapes(TinyConfig());
  std::map<std::string, std::vector<int64_t>> by_name(shapes.begin(), shapes.end());
  EXPECT_EQ(by_name.size(), shapes.size()) << "duplicate names";
  EXPECT_EQ(by_name.at("aggregator.camera_token"), (std::vector<int64_t>{1, 2, 1, 32}));
  EXPECT_EQ(by_name.at("aggregator.register_token"), (std::vector<int64_t>{1, 2, 2, 32}));
  EXPECT_EQ(by_name.at("aggregator.patch_embed.pos_embed"), (std::vector<int64_t>{1, 5, 32}));
  EXPECT_EQ(by_name.at("aggregator.patch_embed.patch_embed.proj.weight"),
            (std::vector<int64_t>{32, 3, 14, 14}));
  EXPECT_EQ(by_name.at("aggregator.patch_embed.register_tokens"), (std::vector<int64_t>{1, 2, 32}));
  EXPECT_EQ(by_name.at("aggregator.patch_embed.blocks.1.ls2.gamma"), (std::vector<int64_t>{32}));
  EXPECT_EQ(by_name.at("aggregator.global_blocks.2.attn.k_norm.weight"),
            (std::vector<int64_t>{16}));
  EXPECT_EQ(by_name.at("aggregator.frame_blocks.0.mlp.fc1.weight"), (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(by_name.count("aggregator.patch_embed.blocks.0.attn.q_norm.weight"), 0u);
  EXPECT_EQ(by_name.count("aggregator.global_blocks.3.norm1.weight"), 0u);
}

TEST(AggregatorTest, RealConfigShapes) {
  const ParameterShapeList shapes = Aggregator::ParameterShapes(AggregatorConfig{});
  int64_t total = 0;
  for (const auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    total += n;
  }
  // VGGT-1B's aggregator: ~0.9 B parameters (DINOv2-L 0.3 B + 48 blocks of 12.6 M).
  EXPECT_GT(total, 850'000'000);
  EXPECT_LT(total, 950'000'000);
}

TEST(AggregatorTest, StreamingWithNonePolicyEqualsBatchCausal) {
  const Aggregator agg = LoadTiny();
  const int64_t s = 4;
  at::manual_seed(7);
  const at::Tensor images = at::rand({s, 3, kHeight, kWidth});
  const std::vector<int64_t> keep = {0, 1, 2};
  const std::vector<at::Tensor> batch = agg.ForwardBatchCausal(images, keep);
  const int64_t p = agg.TokensPerFrame(kHeight, kWidth);
  ASSERT_EQ(p, 1 + 2 + 6);
  ASSERT_EQ(batch.size(), keep.size());
  EXPECT_EQ(batch[0].sizes(), (std::vector<int64_t>{s, p, 64}));

  Session session = MakeSession(agg, "none");
  for (int64_t t = 0; t < s; ++t) {
    const std::vector<at::Tensor> out =
        agg.ForwardFrame(images[t], t, t == 0, *session.cache, *session.policy, keep);
    ASSERT_EQ(out.size(), keep.size());
    for (size_t j = 0; j < keep.size(); ++j) {
      EXPECT_EQ(out[j].sizes(), (std::vector<int64_t>{p, 64}));
      EXPECT_LT(MaxAbsDiff(out[j], batch[j][t]), 1e-5) << "frame " << t << " layer " << keep[j];
    }
    session.policy->EndFrame(t, *session.cache);
  }
  // Later frames really see earlier ones: changing frame 0 changes frame 1's output.
  const at::Tensor other = at::cat({at::rand({1, 3, kHeight, kWidth}), images.narrow(0, 1, 1)});
  const std::vector<at::Tensor> changed = agg.ForwardBatchCausal(other, {2});
  EXPECT_GT(MaxAbsDiff(changed[0][1], batch[2][1]), 1e-3);
}

TEST(AggregatorTest, BatchCausalIgnoresLaterFrames) {
  const Aggregator agg = LoadTiny();
  at::manual_seed(8);
  const at::Tensor images = at::rand({3, 3, kHeight, kWidth});
  const std::vector<at::Tensor> all = agg.ForwardBatchCausal(images, {1, 2});
  const std::vector<at::Tensor> first_two = agg.ForwardBatchCausal(images.narrow(0, 0, 2), {1, 2});
  for (size_t j = 0; j < all.size(); ++j) {
    EXPECT_LT(MaxAbsDiff(all[j].narrow(0, 0, 2), first_two[j]), 1e-5);
  }
}

TEST(AggregatorTest, OutputIsFrameThenGlobalBlockOutput) {
  const Aggregator agg = LoadTiny();
  at::manual_seed(9);
  const at::Tensor images = at::rand({2, 3, kHeight, kWidth});
  const std::vector<at::Tensor> out = agg.ForwardBatchCausal(images, {2, 0, 2});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(at::equal(out[0], out[2]));
  // Duplicated keep indices get the same tensor; a layer's two halves (frame-block output, then
  // global-block output) differ.
  EXPECT_GT(MaxAbsDiff(out[1].narrow(2, 0, 32), out[1].narrow(2, 32, 32)), 1e-3);
  EXPECT_GT(MaxAbsDiff(out[1], out[0]), 1e-3);
}

TEST(AggregatorTest, CacheHoldsEveryTokenWithRoles) {
  const Aggregator agg = LoadTiny();
  const int64_t s = 3;
  const int64_t p = agg.TokensPerFrame(kHeight, kWidth);
  at::manual_seed(10);
  const at::Tensor images = at::rand({s, 3, kHeight, kWidth});
  Session session = MakeSession(agg, "none");
  for (int64_t t = 0; t < s; ++t) {
    agg.ForwardFrame(images[t], t, t == 0, *session.cache, *session.policy, {});
  }
  ASSERT_EQ(session.cache->num_layers(), 3);
  for (int64_t l = 0; l < 3; ++l) {
    ASSERT_EQ(session.cache->length(l), s * p);
    const cache::LayerView view = session.cache->layer(l);
    EXPECT_EQ(view.keys.sizes(), (std::vector<int64_t>{2, s * p, 16}));
    for (int64_t t = 0; t < s; ++t) {
      const at::Tensor roles = view.role[0].narrow(0, t * p, p).to(at::kLong);
      EXPECT_EQ(roles[0].item<int64_t>(), static_cast<int64_t>(cache::TokenRole::kCamera));
      EXPECT_EQ(roles.narrow(0, 1, 2)
                    .eq(static_cast<int64_t>(cache::TokenRole::kRegister))
                    .all()
                    .item<bool>(),
                true);
      EXPECT_EQ(roles.narrow(0, 3, p - 3)
                    .eq(static_cast<int64_t>(cache::TokenRole::kPatch))
                    .all()
                    .item<bool>(),
                true);
      EXPECT_TRUE(view.frame[0].narrow(0, t * p, p).eq(t).all().item<bool>());
    }
  }
}

TEST(AggregatorTest, CachedKeysAreAfterRope) {
  // Two frames that are identical except for the frame index produce identical keys: positions
  // are per-frame 2-D coordinates, so the cache never needs re-rotation.
  const Aggregator agg = LoadTiny();
  at::manual_seed(11);
  const at::Tensor image = at::rand({3, kHeight, kWidth});
  Session session = MakeSession(agg, "none");
  agg.ForwardFrame(image, 0, false, *session.cache, *session.policy, {});
  agg.ForwardFrame(image, 1, false, *session.cache, *session.policy, {});
  const int64_t p = agg.TokensPerFrame(kHeight, kWidth);
  const cache::LayerView view = session.cache->layer(0);
  EXPECT_LT(MaxAbsDiff(view.keys.narrow(1, 0, p), view.keys.narrow(1, p, p)), 1e-6);
}

TEST(AggregatorTest, FirstFrameUsesAnchorTokens) {
  const Aggregator agg = LoadTiny();
  at::manual_seed(12);
  const at::Tensor image = at::rand({3, kHeight, kWidth});
  Session a = MakeSession(agg, "none");
  Session b = MakeSession(agg, "none");
  const at::Tensor anchor = agg.ForwardFrame(image, 0, true, *a.cache, *a.policy, {0})[0];
  const at::Tensor other = agg.ForwardFrame(image, 0, false, *b.cache, *b.policy, {0})[0];
  EXPECT_GT(MaxAbsDiff(anchor.narrow(0, 0, 3), other.narrow(0, 0, 3)), 1e-3);
}

TEST(AggregatorTest, CompactingTheCacheChangesTheNextFrame) {
  const Aggregator agg = LoadTiny();
  at::manual_seed(13);
  const at::Tensor images = at::rand({3, 3, kHeight, kWidth});
  const int64_t p = agg.TokensPerFrame(kHeight, kWidth);
  Session full = MakeSession(agg, "none");
  Session same = MakeSession(agg, "none");
  Session evicted = MakeSession(agg, "none");
  for (int64_t t = 0; t < 2; ++t) {
    for (Session* s : {&full, &same, &evicted}) {
      agg.ForwardFrame(images[t], t, t == 0, *s->cache, *s->policy, {});
    }
  }
  const at::Tensor all = at::arange(2 * p, at::kLong);
  const at::Tensor without_patch = at::cat({all.narrow(0, 0, 5), all.narrow(0, 6, 2 * p - 6)});
  for (int64_t l = 0; l < 3; ++l) {
    same.cache->Compact(l, all);
    evicted.cache->Compact(l, without_patch);
  }
  const at::Tensor ref = agg.ForwardFrame(images[2], 2, false, *full.cache, *full.policy, {2})[0];
  const at::Tensor kept = agg.ForwardFrame(images[2], 2, false, *same.cache, *same.policy, {2})[0];
  const at::Tensor dropped =
      agg.ForwardFrame(images[2], 2, false, *evicted.cache, *evicted.policy, {2})[0];
  EXPECT_TRUE(at::equal(ref, kept));
  EXPECT_GT(MaxAbsDiff(ref, dropped), 1e-4);
  EXPECT_EQ(evicted.cache->length(0), 3 * p - 1);
}

class AggregatorScoresTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AggregatorScoresTest, ScoredAttentionMatchesAndFeedsPolicy) {
  const Aggregator agg = LoadTiny();
  at::manual_seed(14);
  const at::Tensor images = at::rand({2, 3, kHeight, kWidth});
  const int64_t p = agg.TokensPerFrame(kHeight, kWidth);
  const std::vector<at::Tensor> batch = agg.ForwardBatchCausal(images, {0, 2});
  Session session = MakeSession(agg, "h2o", {{"granularity", GetParam()}});
  ASSERT_TRUE(session.policy->score_request().needed);
  for (int64_t t = 0; t < 2; ++t) {
    const std::vector<at::Tensor> out =
        agg.ForwardFrame(images[t], t, t == 0, *session.cache, *session.policy, {0, 2});
    EXPECT_LT(MaxAbsDiff(out[0], batch[0][t]), 1e-5);
    EXPECT_LT(MaxAbsDiff(out[1], batch[1][t]), 1e-5);
  }
  // Every query's probabilities sum to 1, so each metadata row's summed score is the number of
  // queries seen: 2 frames × P.
  for (int64_t l = 0; l < 3; ++l) {
    const at::Tensor sums = session.cache->layer(l).score.sum(1);
    EXPECT_LT((sums - 2.0 * p).abs().max().item<double>(), 1e-3) << "layer " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(Granularity, AggregatorScoresTest, ::testing::Values("head", "layer"));

TEST(AggregatorTest, MissingKeyIsNamed) {
  const AggregatorConfig cfg = TinyConfig();
  const std::string missing = "aggregator.global_blocks.1.attn.q_norm.bias";
  auto ckpt =
      WriteRandomCheckpoint(Aggregator::ParameterShapes(cfg), "missing_key.safetensors", missing);
  try {
    Aggregator::Load(*ckpt, cfg);
    FAIL() << "Load succeeded without " << missing;
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(missing));
  }
}

TEST(AggregatorTest, WrongShapeIsNamed) {
  AggregatorConfig cfg = TinyConfig();
  auto ckpt = WriteRandomCheckpoint(Aggregator::ParameterShapes(cfg), "wrong_shape.safetensors");
  cfg.num_register_tokens = 3;
  try {
    Aggregator::Load(*ckpt, cfg);
    FAIL() << "Load accepted 2 registers for 3";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("aggregator.patch_embed.register_tokens"));
  }
}

TEST(AggregatorTest, RejectsBadInputs) {
  const Aggregator agg = LoadTiny();
  Session session = MakeSession(agg, "none");
  EXPECT_THROW(
      agg.ForwardFrame(at::rand({3, 30, 42}), 0, true, *session.cache, *session.policy, {}),
      c10::Error);
  EXPECT_THROW(
      agg.ForwardFrame(at::rand({3, 28, 42}), 0, true, *session.cache, *session.policy, {3}),
      c10::Error);
  EXPECT_THROW(agg.ForwardBatchCausal(at::rand({2, 1, 28, 42}), {}), c10::Error);
  AggregatorConfig bad = TinyConfig();
  bad.patch_embed = "conv";
  EXPECT_THROW(Aggregator::ParameterShapes(bad), c10::Error);
}

TEST(RotaryTest, HandComputedLayout) {
  // head_dim 8: half 4 per axis, frequencies {1, 1/sqrt(100)} for base 100; channel j pairs with
  // j + 2 inside each half. Position (y=2, x=3).
  const at::Tensor pos = at::tensor(std::vector<int64_t>{2, 3}).view({1, 2});
  const RotaryTables tables = MakeRotaryTables(pos, 8, 100.0, at::kFloat);
  const at::Tensor x = at::arange(1, 9, at::kFloat).view({1, 1, 1, 8});
  const at::Tensor y = ApplyRotary(x, tables).view({8});
  const double f1 = 1.0 / std::sqrt(100.0);
  const auto rot = [](double a, double b, double angle) {
    return std::make_pair(a * std::cos(angle) - b * std::sin(angle),
                          b * std::cos(angle) + a * std::sin(angle));
  };
  const auto [y0, y2] = rot(1, 3, 2 * 1.0);
  const auto [y1, y3] = rot(2, 4, 2 * f1);
  const auto [x4, x6] = rot(5, 7, 3 * 1.0);
  const auto [x5, x7] = rot(6, 8, 3 * f1);
  const std::vector<double> want = {y0, y1, y2, y3, x4, x5, x6, x7};
  for (int64_t i = 0; i < 8; ++i) EXPECT_NEAR(y[i].item<double>(), want[i], 1e-5) << i;
}

TEST(RotaryTest, FramePositionsSpecialAtOriginPatchesOffsetByOne) {
  const at::Tensor pos = FramePositions(3, 2, 3, at::kCPU);
  ASSERT_EQ(pos.sizes(), (std::vector<int64_t>{9, 2}));
  const std::vector<int64_t> want = {0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 1, 3, 2, 1, 2, 2, 2, 3};
  EXPECT_TRUE(at::equal(pos.reshape({-1}), at::tensor(want)));
}

}  // namespace
}  // namespace streamkv::models::stream3r
