#include "models/stream3r/camera_head.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "cache/kv_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/weights/checkpoint.h"
#include "tests/unit/models/stream3r/random_checkpoint.h"

namespace streamkv::models::stream3r {
namespace {

CameraHeadConfig TinyConfig() {
  CameraHeadConfig c;
  c.dim_in = 64;
  c.trunk_depth = 2;
  c.num_heads = 4;
  c.mlp_ratio = 2.0;
  c.num_iterations = 3;
  return c;
}

CameraHead LoadTiny(const CameraHeadConfig& cfg = TinyConfig()) {
  auto ckpt = WriteRandomCheckpoint(CameraHead::ParameterShapes(cfg), "tiny_camera.safetensors");
  CameraHead head = CameraHead::Load(*ckpt, cfg);
  EXPECT_TRUE(ckpt->CheckAllTaken().ok()) << ckpt->CheckAllTaken();
  return head;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

std::unique_ptr<cache::KvCache> TrunkCache(const CameraHead& head) {
  cache::KvCacheOptions options;
  options.geometry = head.TrunkCacheGeometry(at::kFloat);
  return std::make_unique<cache::KvCache>(options);
}

TEST(CameraHeadTest, ParameterShapesUseUpstreamNames) {
  const ParameterShapeList shapes = CameraHead::ParameterShapes(TinyConfig());
  std::map<std::string, std::vector<int64_t>> by_name(shapes.begin(), shapes.end());
  EXPECT_EQ(by_name.size(), shapes.size());
  EXPECT_EQ(by_name.at("camera_head.empty_pose_tokens"), (std::vector<int64_t>{1, 1, 9}));
  EXPECT_EQ(by_name.at("camera_head.embed_pose.weight"), (std::vector<int64_t>{64, 9}));
  EXPECT_EQ(by_name.at("camera_head.poseLN_modulation.1.weight"), (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(by_name.at("camera_head.pose_branch.fc1.weight"), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(by_name.at("camera_head.pose_branch.fc2.weight"), (std::vector<int64_t>{9, 32}));
  EXPECT_EQ(by_name.at("camera_head.trunk.1.ls1.gamma"), (std::vector<int64_t>{64}));
  EXPECT_EQ(by_name.at("camera_head.token_norm.bias"), (std::vector<int64_t>{64}));
  EXPECT_EQ(by_name.count("camera_head.adaln_norm.weight"), 0u);
  EXPECT_EQ(by_name.count("camera_head.trunk.0.attn.q_norm.weight"), 0u);
}

TEST(CameraHeadTest, StreamingEqualsBatchCausal) {
  const CameraHead head = LoadTiny();
  const int64_t s = 4;
  at::manual_seed(21);
  const at::Tensor tokens = at::randn({s, 64});
  const at::Tensor batch = head.ForwardBatchCausal(tokens);
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{s, 9}));
  auto cache = TrunkCache(head);
  for (int64_t t = 0; t < s; ++t) {
    const at::Tensor pose = head.ForwardFrame(tokens[t], t, *cache);
    ASSERT_EQ(pose.sizes(), (std::vector<int64_t>{9}));
    EXPECT_LT(MaxAbsDiff(pose, batch[t]), 1e-5) << "frame " << t;
  }
  ASSERT_EQ(cache->num_layers(), 3 * 2);
  for (int64_t l = 0; l < cache->num_layers(); ++l) {
    EXPECT_EQ(cache->length(l), s);
    EXPECT_TRUE(cache->layer(l)
                    .role.eq(static_cast<int64_t>(cache::TokenRole::kCamera))
                    .all()
                    .item<bool>());
  }
  // fl_act relu: field-of-view entries are never negative.
  EXPECT_GE(batch.narrow(1, 7, 2).min().item<double>(), 0.0);
  // Frame 1 depends on frame 0 through the trunk.
  const at::Tensor other =
      head.ForwardBatchCausal(at::cat({at::randn({1, 64}), tokens.narrow(0, 1, 1)}));
  EXPECT_GT(MaxAbsDiff(other[1], batch[1]), 1e-4);
}

TEST(CameraHeadTest, EvictingTrunkTokensChangesTheNextFrame) {
  const CameraHead head = LoadTiny();
  at::manual_seed(22);
  const at::Tensor tokens = at::randn({3, 64});
  auto full = TrunkCache(head);
  auto evicted = TrunkCache(head);
  for (int64_t t = 0; t < 2; ++t) {
    head.ForwardFrame(tokens[t], t, *full);
    head.ForwardFrame(tokens[t], t, *evicted);
  }
  for (int64_t l = 0; l < evicted->num_layers(); ++l) {
    evicted->Compact(l, at::tensor(std::vector<int64_t>{1}));
  }
  const at::Tensor a = head.ForwardFrame(tokens[2], 2, *full);
  const at::Tensor b = head.ForwardFrame(tokens[2], 2, *evicted);
  EXPECT_GT(MaxAbsDiff(a, b), 1e-5);
  EXPECT_EQ(evicted->length(0), 2);
}

TEST(CameraHeadTest, MissingKeyIsNamed) {
  const CameraHeadConfig cfg = TinyConfig();
  const std::string missing = "camera_head.poseLN_modulation.1.bias";
  auto ckpt = WriteRandomCheckpoint(CameraHead::ParameterShapes(cfg), "camera_missing.safetensors",
                                    missing);
  try {
    CameraHead::Load(*ckpt, cfg);
    FAIL() << "Load succeeded without " << missing;
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(missing));
  }
}

TEST(CameraHeadTest, RejectsBadConfigAndInputs) {
  CameraHeadConfig bad = TinyConfig();
  bad.fl_act = "softplus";
  EXPECT_THROW(CameraHead::ParameterShapes(bad), c10::Error);
  const CameraHead head = LoadTiny();
  auto cache = TrunkCache(head);
  EXPECT_THROW(head.ForwardFrame(at::randn({32}), 0, *cache), c10::Error);
  cache::KvCacheOptions wrong;
  wrong.geometry = head.TrunkCacheGeometry(at::kFloat);
  wrong.geometry.num_layers = 4;
  cache::KvCache wrong_cache(wrong);
  EXPECT_THROW(head.ForwardFrame(at::randn({64}), 0, wrong_cache), c10::Error);
}

TEST(PoseEncodingTest, IdentityQuaternionAndKnownFov) {
  // t = (1, 2, 3), identity rotation, fov_h = 90°, fov_w = 2·atan(0.5).
  const double fov_h = M_PI / 2;
  const double fov_w = 2 * std::atan(0.5);
  const at::Tensor enc =
      at::tensor(std::vector<float>{1, 2, 3, 0, 0, 0, 1, static_cast<float>(fov_h),
                                    static_cast<float>(fov_w)})
          .view({1, 9});
  const CameraParameters cam = PoseEncodingToExtrinsicIntrinsic(enc, 100, 200);
  const at::Tensor want_ext =
      at::tensor(std::vector<float>{1, 0, 0, 1, 0, 1, 0, 2, 0, 0, 1, 3}).view({1, 3, 4});
  // fy = 50 / tan(45°) = 50; fx = 100 / 0.5 = 200; principal point (100, 50).
  const at::Tensor want_int =
      at::tensor(std::vector<float>{200, 0, 100, 0, 50, 50, 0, 0, 1}).view({1, 3, 3});
  EXPECT_LT(MaxAbsDiff(cam.extrinsic, want_ext), 1e-6);
  EXPECT_LT(MaxAbsDiff(cam.intrinsic, want_int), 1e-4);
}

TEST(PoseEncodingTest, QuaternionIsXyzwAndNormalised) {
  // 90° about z, scaled by 2 (upstream divides by the squared norm): x → y.
  const double h = std::sqrt(0.5) * 2;
  const at::Tensor q = at::tensor(std::vector<double>{0, 0, h, h}).view({1, 4});
  const at::Tensor r = QuaternionToMatrix(q)[0];
  const at::Tensor want = at::tensor(std::vector<double>{0, -1, 0, 1, 0, 0, 0, 0, 1}).view({3, 3});
  EXPECT_LT(MaxAbsDiff(r, want), 1e-12);
}

}  // namespace
}  // namespace streamkv::models::stream3r
