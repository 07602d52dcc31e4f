#include "models/stream3r/dpt_head.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {
namespace {

using ::testing::HasSubstr;

// Tiny heads: 28×42 image = 2×3 patches of 14, 3 special tokens, 2 frames.
constexpr int64_t kHeight = 28;
constexpr int64_t kWidth = 42;
constexpr int64_t kPatchStart = 3;
constexpr int64_t kTokens = kPatchStart + 2 * 3;
constexpr int64_t kFrames = 2;
constexpr int64_t kDimIn = 16;

DptHeadConfig TinyConfig(bool depth) {
  DptHeadConfig cfg = depth ? DepthHeadConfig(kDimIn / 2) : PointHeadConfig(kDimIn / 2);
  cfg.features = 8;
  cfg.out_channels = {4, 8, 8, 8};
  return cfg;
}

std::string Prefix(bool depth) { return depth ? "depth_head." : "point_head."; }

using Params = std::map<std::string, at::Tensor>;

// Random parameters scaled by 1/√fan_in (LayerNorm weights near 1), keyed prefix + name.
Params RandomParams(const DptHeadConfig& cfg, const std::string& prefix, uint64_t seed) {
  at::manual_seed(seed);
  Params params;
  for (const auto& [name, shape] : DptHead::ParameterShapes(cfg)) {
    at::Tensor t = at::randn(shape);
    if (name == "norm.weight") {
      t = 1 + 0.1 * t;
    } else if (shape.size() == 4) {
      t = t / std::sqrt(static_cast<double>(shape[1] * shape[2] * shape[3]));
    } else {
      t = 0.1 * t;
    }
    params.emplace(prefix + name, t);
  }
  return params;
}

std::unique_ptr<Checkpoint> WriteAndOpen(const Params& params, const std::string& file) {
  const std::string path = ::testing::TempDir() + "/" + file + ".safetensors";
  std::vector<std::pair<std::string, at::Tensor>> list(params.begin(), params.end());
  const absl::Status written = WriteSafetensors(path, list);
  EXPECT_TRUE(written.ok()) << written;
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(path);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  return std::move(ckpt).value();
}

DptHead LoadHead(const DptHeadConfig& cfg, const Params& params, const std::string& prefix,
                 const std::string& file) {
  std::unique_ptr<Checkpoint> ckpt = WriteAndOpen(params, file);
  DptHead head = DptHead::Load(*ckpt, cfg, prefix);
  const absl::Status all_taken = ckpt->CheckAllTaken();
  EXPECT_TRUE(all_taken.ok()) << all_taken;
  return head;
}

std::vector<at::Tensor> RandomTokens(uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> layers;
  for (int i = 0; i < 4; ++i) layers.push_back(at::randn({kFrames, kTokens, kDimIn}));
  return layers;
}

std::vector<at::Tensor> Clone(const std::vector<at::Tensor>& layers) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : layers) out.push_back(t.clone());
  return out;
}

TEST(DptHeadTest, OutputShapes) {
  for (const bool depth : {true, false}) {
    const DptHeadConfig cfg = TinyConfig(depth);
    const DptHead head = LoadHead(cfg, RandomParams(cfg, Prefix(depth), 1), Prefix(depth),
                                  depth ? "shapes_depth" : "shapes_point");
    const auto [pred, conf] = head.Forward(RandomTokens(2), kHeight, kWidth, kPatchStart);
    const int64_t channels = depth ? 1 : 3;
    EXPECT_EQ(pred.sizes(), at::IntArrayRef({kFrames, kHeight, kWidth, channels}));
    EXPECT_EQ(conf.sizes(), at::IntArrayRef({kFrames, kHeight, kWidth}));
    EXPECT_EQ(pred.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::isfinite(pred).all().item<bool>());
  }
}

TEST(DptHeadTest, DepthIsPositiveAndConfidenceAboveOne) {
  const DptHeadConfig cfg = TinyConfig(true);
  const DptHead head = LoadHead(cfg, RandomParams(cfg, "depth_head.", 3), "depth_head.", "act");
  const auto [depth, conf] = head.Forward(RandomTokens(4), kHeight, kWidth, kPatchStart);
  EXPECT_TRUE((depth > 0).all().item<bool>());
  EXPECT_TRUE((conf > 1).all().item<bool>());
}

// With output_conv2.2's weight zero every pixel's raw output is that conv's bias.
TEST(DptHeadTest, ActivationsOfConstantOutput) {
  {
    const DptHeadConfig cfg = TinyConfig(true);
    Params params = RandomParams(cfg, "depth_head.", 5);
    params["depth_head.scratch.output_conv2.2.weight"].zero_();
    params["depth_head.scratch.output_conv2.2.bias"] = at::tensor({0.3f, -0.7f});
    const DptHead head = LoadHead(cfg, params, "depth_head.", "const_depth");
    const auto [depth, conf] = head.Forward(RandomTokens(6), kHeight, kWidth, kPatchStart);
    for (const float d :
         std::vector<float>(depth.data_ptr<float>(), depth.data_ptr<float>() + depth.numel())) {
      ASSERT_FLOAT_EQ(d, std::exp(0.3f));
    }
    for (const float c :
         std::vector<float>(conf.data_ptr<float>(), conf.data_ptr<float>() + conf.numel())) {
      ASSERT_FLOAT_EQ(c, 1 + std::exp(-0.7f));
    }
  }
  {
    const DptHeadConfig cfg = TinyConfig(false);
    Params params = RandomParams(cfg, "point_head.", 7);
    params["point_head.scratch.output_conv2.2.weight"].zero_();
    params["point_head.scratch.output_conv2.2.bias"] = at::tensor({-0.5f, 0.0f, 0.8f, 0.2f});
    const DptHead head = LoadHead(cfg, params, "point_head.", "const_point");
    const auto [points, conf] = head.Forward(RandomTokens(8), kHeight, kWidth, kPatchStart);
    const float expected[3] = {-std::expm1(0.5f), 0.0f, std::expm1(0.8f)};
    const at::Tensor flat = points.reshape({-1, 3});
    for (int64_t i = 0; i < flat.size(0); ++i) {
      for (int64_t c = 0; c < 3; ++c) ASSERT_FLOAT_EQ(flat[i][c].item<float>(), expected[c]);
    }
    EXPECT_TRUE(at::allclose(conf, at::full_like(conf, 1 + std::exp(0.2f)), 1e-6, 0));
  }
}

// Hand-derived end-to-end case pinning the fusion path. pos_embed off; layer{1..4}_rn and every
// resConfUnit conv are all zero (weights and biases), so the pyramid is 0 and each field stays
// spatially constant: such a residual unit maps x to relu(x) (upstream's in-place ReLU makes the
// skip add relu(x), not x); each out_conv is identity + bias.
//   refinenet4: unit2(0) = 0                           → +(−1)  → −1
//   refinenet3: −1 + unit1(0) = −1; unit2 → relu(−1) = 0 → +0.5  → 0.5
//   refinenet2: 0.5 + 0 = 0.5; unit2 → 0.5             → +(−2)  → −1.5
//   refinenet1: −1.5 + 0; unit2 → 0                    → +0.25  → 0.25
//   output_conv1 (centre tap identity) +0.1 → 0.35; output_conv2.0 (identity) → relu → 0.35;
//   output_conv2.2 (identity) → raw (0.35, 0.35) → depth e^0.35, conf 1 + e^0.35.
// With a skip of x instead, refinenet1 would give −2.25 and the raw output relu(−2.15) = 0.
TEST(DptHeadTest, HandDerivedConstantFusion) {
  DptHeadConfig cfg = TinyConfig(true);
  cfg.pos_embed = false;
  const std::string prefix = "depth_head.";
  Params params = RandomParams(cfg, prefix, 9);
  const std::map<std::string, float> out_conv_bias = {
      {"refinenet4", -1.0f}, {"refinenet3", 0.5f}, {"refinenet2", -2.0f}, {"refinenet1", 0.25f}};
  for (auto& [name, t] : params) {
    const bool in_scratch = name.find(".scratch.") != std::string::npos;
    if (name.find(".layer") != std::string::npos || name.find("resConfUnit") != std::string::npos) {
      t.zero_();
    }
    if (in_scratch && name.find("out_conv.weight") != std::string::npos) {
      t = at::eye(8).reshape({8, 8, 1, 1});
    }
    for (const auto& [block, bias] : out_conv_bias) {
      if (name == prefix + "scratch." + block + ".out_conv.bias") t.fill_(bias);
    }
  }
  auto centre_identity = [](int64_t out, int64_t in, int64_t k) {
    at::Tensor w = at::zeros({out, in, k, k});
    for (int64_t c = 0; c < std::min(out, in); ++c) w[c][c][k / 2][k / 2] = 1;
    return w;
  };
  params[prefix + "scratch.output_conv1.weight"] = centre_identity(4, 8, 3);
  params[prefix + "scratch.output_conv1.bias"].fill_(0.1f);
  params[prefix + "scratch.output_conv2.0.weight"] = centre_identity(32, 4, 3);
  params[prefix + "scratch.output_conv2.0.bias"].zero_();
  params[prefix + "scratch.output_conv2.2.weight"] = centre_identity(2, 32, 1);
  params[prefix + "scratch.output_conv2.2.bias"].zero_();

  const DptHead head = LoadHead(cfg, params, prefix, "hand_fusion");
  const auto [depth, conf] = head.Forward(RandomTokens(10), kHeight, kWidth, kPatchStart);
  EXPECT_TRUE(at::allclose(depth, at::full_like(depth, std::exp(0.35f)), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(conf, at::full_like(conf, 1 + std::exp(0.35f)), 1e-5, 1e-6));
}

TEST(DptHeadTest, FramesAreIndependent) {
  DptHeadConfig cfg = TinyConfig(false);
  const DptHead head = LoadHead(cfg, RandomParams(cfg, "point_head.", 11), "point_head.", "ind");
  const std::vector<at::Tensor> tokens = RandomTokens(12);
  std::vector<at::Tensor> changed = Clone(tokens);
  for (at::Tensor& t : changed) t[1].normal_();
  const auto [pred_a, conf_a] = head.Forward(tokens, kHeight, kWidth, kPatchStart);
  const auto [pred_b, conf_b] = head.Forward(changed, kHeight, kWidth, kPatchStart);
  EXPECT_TRUE(at::allclose(pred_a[0], pred_b[0], 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(conf_a[0], conf_b[0], 1e-6, 1e-6));
  EXPECT_FALSE(at::allclose(pred_a[1], pred_b[1], 1e-3, 1e-3));

  // One frame per chunk gives the same result.
  cfg.frames_chunk_size = 1;
  const DptHead chunked =
      LoadHead(cfg, RandomParams(cfg, "point_head.", 11), "point_head.", "ind_chunked");
  const auto [pred_c, conf_c] = chunked.Forward(tokens, kHeight, kWidth, kPatchStart);
  EXPECT_TRUE(at::allclose(pred_a, pred_c, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(conf_a, conf_c, 1e-5, 1e-6));
}

TEST(DptHeadTest, SpecialTokensAreIgnored) {
  const DptHeadConfig cfg = TinyConfig(true);
  const DptHead head = LoadHead(cfg, RandomParams(cfg, "depth_head.", 13), "depth_head.", "spec");
  const std::vector<at::Tensor> tokens = RandomTokens(14);
  std::vector<at::Tensor> special = Clone(tokens);
  for (at::Tensor& t : special) t.slice(1, 0, kPatchStart).normal_(0, 10);
  std::vector<at::Tensor> patch = Clone(tokens);
  patch[0][0][kPatchStart].normal_(0, 10);  // first patch token of frame 0, shallowest layer

  const auto [depth, conf] = head.Forward(tokens, kHeight, kWidth, kPatchStart);
  const auto [depth_s, conf_s] = head.Forward(special, kHeight, kWidth, kPatchStart);
  const auto [depth_p, conf_p] = head.Forward(patch, kHeight, kWidth, kPatchStart);
  EXPECT_TRUE(at::equal(depth, depth_s));
  EXPECT_TRUE(at::equal(conf, conf_s));
  EXPECT_FALSE(at::allclose(depth[0], depth_p[0], 1e-4, 1e-4));
}

TEST(DptHeadTest, MissingKeyThrowsNamingIt) {
  const DptHeadConfig cfg = TinyConfig(true);
  Params params = RandomParams(cfg, "depth_head.", 15);
  const std::string missing = "depth_head.scratch.refinenet2.resConfUnit1.conv2.bias";
  ASSERT_EQ(params.erase(missing), 1u);
  std::unique_ptr<Checkpoint> ckpt = WriteAndOpen(params, "missing");
  try {
    DptHead::Load(*ckpt, cfg, "depth_head.");
    FAIL() << "Load succeeded without " << missing;
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(missing));
  }
}

TEST(DptHeadTest, LoadRejectsUnknownActivation) {
  DptHeadConfig cfg = TinyConfig(true);
  std::unique_ptr<Checkpoint> ckpt =
      WriteAndOpen(RandomParams(cfg, "depth_head.", 16), "bad_activation");
  cfg.activation = "softplus";
  EXPECT_THROW(DptHead::Load(*ckpt, cfg, "depth_head."), c10::Error);
}

TEST(DptHeadTest, ParameterShapesAreUniqueAndAllTaken) {
  for (const bool depth : {true, false}) {
    const DptHeadConfig cfg = TinyConfig(depth);
    const auto shapes = DptHead::ParameterShapes(cfg);
    std::set<std::string> names;
    for (const auto& entry : shapes) {
      EXPECT_TRUE(names.insert(entry.first).second) << "duplicate " << entry.first;
    }
    std::unique_ptr<Checkpoint> ckpt =
        WriteAndOpen(RandomParams(cfg, Prefix(depth), 17), depth ? "all_depth" : "all_point");
    DptHead::Load(*ckpt, cfg, Prefix(depth));
    const absl::Status all_taken = ckpt->CheckAllTaken();
    EXPECT_TRUE(all_taken.ok()) << all_taken;
  }
}

// Names and shapes of the real depth head (embed_dim 1024) as in upstream's state_dict.
TEST(DptHeadTest, ParameterShapesMatchUpstreamDepthHead) {
  const auto shapes = DptHead::ParameterShapes(DepthHeadConfig(1024));
  const std::map<std::string, std::vector<int64_t>> by_name(shapes.begin(), shapes.end());
  EXPECT_EQ(shapes.size(), 62u);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"norm.weight", {2048}},
      {"projects.0.weight", {256, 2048, 1, 1}},
      {"projects.3.bias", {1024}},
      {"resize_layers.0.weight", {256, 256, 4, 4}},
      {"resize_layers.1.weight", {512, 512, 2, 2}},
      {"resize_layers.3.weight", {1024, 1024, 3, 3}},
      {"scratch.layer1_rn.weight", {256, 256, 3, 3}},
      {"scratch.layer4_rn.weight", {256, 1024, 3, 3}},
      {"scratch.refinenet1.resConfUnit1.conv1.weight", {256, 256, 3, 3}},
      {"scratch.refinenet4.resConfUnit2.conv2.bias", {256}},
      {"scratch.refinenet3.out_conv.weight", {256, 256, 1, 1}},
      {"scratch.output_conv1.weight", {128, 256, 3, 3}},
      {"scratch.output_conv2.0.weight", {32, 128, 3, 3}},
      {"scratch.output_conv2.2.weight", {2, 32, 1, 1}},
      {"scratch.output_conv2.2.bias", {2}},
  };
  for (const auto& [name, shape] : expected) {
    auto it = by_name.find(name);
    ASSERT_NE(it, by_name.end()) << name;
    EXPECT_EQ(it->second, shape) << name;
  }
  for (const std::string absent : {"resize_layers.2.weight", "scratch.layer1_rn.bias",
                                   "scratch.refinenet4.resConfUnit1.conv1.weight"}) {
    EXPECT_EQ(by_name.count(absent), 0u) << absent;
  }
}

// Hand-computed: 2×3 grid, aspect 42/28 = 1.5, so √(a²+1) = √3.25; u ∈ {−1, 0, 1}/√3.25 and
// v ∈ {−0.5, 0.5}/√3.25. With C = 8 the frequencies are ω = (1, 100^(−1/2) = 0.1).
TEST(DptHeadTest, UvPositionEmbeddingByHand) {
  const at::Tensor emb = DptUvPositionEmbedding(2, 3, 8, 1.5);
  ASSERT_EQ(emb.sizes(), at::IntArrayRef({8, 2, 3}));
  const double u = 1.0 / std::sqrt(3.25);   // column 2
  const double v = -0.5 / std::sqrt(3.25);  // row 0
  const double expected[8] = {std::sin(u), std::sin(0.1 * u), std::cos(u), std::cos(0.1 * u),
                              std::sin(v), std::sin(0.1 * v), std::cos(v), std::cos(0.1 * v)};
  for (int64_t c = 0; c < 8; ++c) {
    EXPECT_NEAR(emb[c][0][2].item<float>(), expected[c], 1e-6) << "channel " << c;
  }
  // Centre column: u = 0.
  EXPECT_NEAR(emb[0][1][1].item<float>(), 0.0, 1e-7);
  EXPECT_NEAR(emb[2][1][1].item<float>(), 1.0, 1e-7);
}

}  // namespace
}  // namespace streamkv::models::stream3r
