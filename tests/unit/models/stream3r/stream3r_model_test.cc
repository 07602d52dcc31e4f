#include "models/stream3r/stream3r_model.h"

#include <filesystem>
#include <set>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "models/stream3r/tiny_model.h"

namespace streamkv::models::stream3r {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kHeight = 56;  // 4 patch rows at the tiny model's width of 112: no resize
constexpr int64_t kWidth = 112;

class Stream3rModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/tiny_stream3r");
    ASSERT_TRUE(WriteRandomStream3r(*dir_, TinyStream3rConfig(), /*seed=*/7).ok());
  }

  static std::unique_ptr<Stream3rModel> LoadTiny() {
    absl::StatusOr<std::unique_ptr<Stream3rModel>> model = Stream3rModel::Load(
        *dir_ + "/config.json", *dir_ + "/model.safetensors", Stream3rModelOptions{});
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  }

  static at::Tensor Frames(int64_t count) {
    at::manual_seed(11);
    return at::rand({count, 3, kHeight, kWidth});
  }

  static std::unique_ptr<StreamState> Open(const Stream3rModel& model, const std::string& policy,
                                           cache::PolicyParams params = {}) {
    absl::StatusOr<std::unique_ptr<StreamState>> stream =
        model.OpenStream({policy, std::move(params), kHeight, kWidth});
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? std::move(*stream) : nullptr;
  }

  static std::string* dir_;
};

std::string* Stream3rModelTest::dir_ = nullptr;

// The output `name` of `result`; a test failure when it is missing.
at::Tensor Output(const FrameResult& result, const std::string& name) {
  at::Tensor output = result.Output(name);
  if (!output.defined()) ADD_FAILURE() << "no output " << name;
  return output;
}

std::set<int64_t> CachedFrames(const cache::KvCache& cache, int64_t layer) {
  const at::Tensor frames = cache.layer(layer).frame.to(at::kLong).flatten();
  return std::set<int64_t>(frames.data_ptr<int64_t>(), frames.data_ptr<int64_t>() + frames.numel());
}

TEST_F(Stream3rModelTest, StreamingWithoutEvictionEqualsBlockCausalBatch) {
  std::unique_ptr<Stream3rModel> model = LoadTiny();
  ASSERT_NE(model, nullptr);
  const at::Tensor frames = Frames(3);
  const auto batch = model->PredictBatchCausal(frames);
  std::unique_ptr<StreamState> stream = Open(*model, "none");
  for (int64_t i = 0; i < frames.size(0); ++i) {
    absl::StatusOr<FrameResult> result = model->ProcessFrame(*stream, {frames[i]});
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->outputs.size(), batch.size());
    for (size_t k = 0; k < batch.size(); ++k) {
      const auto& [name, expected] = batch[k];
      const at::Tensor& actual = result->outputs[k].second;
      EXPECT_EQ(result->outputs[k].first, name);
      EXPECT_TRUE(at::allclose(actual, expected[i], /*rtol=*/1e-4, /*atol=*/1e-5))
          << name << " of frame " << i << " differs by "
          << (actual - expected[i]).abs().max().item<float>();
    }
  }
}

TEST_F(Stream3rModelTest, OutputsHaveUpstreamNamesAndShapes) {
  std::unique_ptr<Stream3rModel> model = LoadTiny();
  ASSERT_NE(model, nullptr);
  std::unique_ptr<StreamState> stream = Open(*model, "none");
  absl::StatusOr<FrameResult> result = model->ProcessFrame(*stream, {Frames(1)[0]});
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<std::string> names;
  for (const auto& [name, value] : result->outputs) names.push_back(name);
  EXPECT_EQ(names, model->output_names());
  EXPECT_EQ(model->cache_names(), (std::vector<std::string>{"backbone", "camera_trunk"}));
  EXPECT_EQ(stream->caches().size(), model->cache_names().size());
  EXPECT_EQ(Output(*result, "pose_enc").sizes(), (at::IntArrayRef{9}));
  EXPECT_EQ(Output(*result, "extrinsic").sizes(), (at::IntArrayRef{3, 4}));
  EXPECT_EQ(Output(*result, "intrinsic").sizes(), (at::IntArrayRef{3, 3}));
  EXPECT_EQ(Output(*result, "depth").sizes(), (at::IntArrayRef{kHeight, kWidth, 1}));
  EXPECT_EQ(Output(*result, "depth_conf").sizes(), (at::IntArrayRef{kHeight, kWidth}));
  EXPECT_EQ(Output(*result, "world_points").sizes(), (at::IntArrayRef{kHeight, kWidth, 3}));
  EXPECT_EQ(Output(*result, "world_points_conf").sizes(), (at::IntArrayRef{kHeight, kWidth}));
  EXPECT_EQ(Output(*result, "images").sizes(), (at::IntArrayRef{3, kHeight, kWidth}));
  EXPECT_GT(Output(*result, "depth").min().item<float>(), 0.0f);
  EXPECT_GT(Output(*result, "depth_conf").min().item<float>(), 1.0f);
}

TEST_F(Stream3rModelTest, CachesHoldWhatThePolicyKeptAndOutputsFollowThem) {
  std::unique_ptr<Stream3rModel> model = LoadTiny();
  ASSERT_NE(model, nullptr);
  const at::Tensor frames = Frames(4);
  std::unique_ptr<StreamState> full = Open(*model, "none");
  std::unique_ptr<StreamState> window =
      Open(*model, "sliding_window", {{"unit", "frames"}, {"start_size", "1"},
                                      {"recent_size", "1"}});
  const int64_t tokens_per_frame = 5 + 4 * 8;  // camera + 4 registers + 4×8 patches
  for (int64_t i = 0; i < frames.size(0); ++i) {
    absl::StatusOr<FrameResult> a = model->ProcessFrame(*full, {frames[i]});
    absl::StatusOr<FrameResult> b = model->ProcessFrame(*window, {frames[i]});
    ASSERT_TRUE(a.ok() && b.ok());
    const cache::KvCache& backbone = *window->caches()[0];
    const cache::KvCache& trunk = *window->caches()[1];
    const std::set<int64_t> expected =
        i == 0 ? std::set<int64_t>{0} : std::set<int64_t>{0, i};
    for (int64_t layer = 0; layer < backbone.num_layers(); ++layer) {
      EXPECT_EQ(CachedFrames(backbone, layer), expected) << "frame " << i << " layer " << layer;
      EXPECT_EQ(backbone.length(layer), static_cast<int64_t>(expected.size()) * tokens_per_frame);
    }
    for (int64_t layer = 0; layer < trunk.num_layers(); ++layer) {
      EXPECT_EQ(CachedFrames(trunk, layer), expected) << "trunk layer " << layer;
    }
    EXPECT_EQ(full->caches()[0]->length(0), (i + 1) * tokens_per_frame);
    // Frames 0–2 saw the same tokens in both streams (eviction happens after a frame's
    // attention); frame 3 attends to frames {0, 2, 3} instead of {0, 1, 2, 3}.
    const bool same = at::allclose(Output(*a, "depth"), Output(*b, "depth"), 1e-5, 1e-6);
    EXPECT_EQ(same, i <= 2) << "frame " << i;
  }
}

TEST_F(Stream3rModelTest, BadFramesAreRejectedAndTheStreamContinues) {
  std::unique_ptr<Stream3rModel> model = LoadTiny();
  ASSERT_NE(model, nullptr);
  std::unique_ptr<StreamState> stream = Open(*model, "none");
  EXPECT_THAT(std::string(model->ProcessFrame(*stream, {at::rand({3, 28, kWidth})})
                              .status()
                              .message()),
              HasSubstr("opened for 56x112"));
  EXPECT_THAT(std::string(model->ProcessFrame(*stream, {at::rand({4, kHeight, kWidth})})
                              .status()
                              .message()),
              HasSubstr("[3, H, W]"));
  EXPECT_EQ(stream->frames_processed(), 0);
  EXPECT_EQ(stream->caches()[0]->length(0), 0);
  EXPECT_TRUE(model->ProcessFrame(*stream, {Frames(1)[0]}).ok());
  EXPECT_EQ(stream->frames_processed(), 1);
}

TEST_F(Stream3rModelTest, OpenStreamValidatesPolicyAndFrameSize) {
  std::unique_ptr<Stream3rModel> model = LoadTiny();
  ASSERT_NE(model, nullptr);
  absl::StatusOr<std::unique_ptr<StreamState>> bad_policy =
      model->OpenStream({"layerwise", {{"temp", "-1"}}, kHeight, kWidth});
  EXPECT_THAT(std::string(bad_policy.status().message()), HasSubstr("temp"));
  EXPECT_THAT(std::string(model->OpenStream({"lru", {}, kHeight, kWidth}).status().message()),
              HasSubstr("unknown policy 'lru'"));
  EXPECT_THAT(std::string(model->OpenStream({"none", {}, 0, kWidth}).status().message()),
              HasSubstr("frame_height and frame_width"));
}

TEST_F(Stream3rModelTest, LoadingReportsMismatchedCheckpoints) {
  Stream3rConfig other = TinyStream3rConfig();
  other.aggregator.embed_dim = 48;
  other.camera_head.dim_in = 96;
  const std::string dir = ::testing::TempDir() + "/other_stream3r";
  ASSERT_TRUE(WriteRandomStream3r(dir, other, 1).ok());
  std::filesystem::copy_file(*dir_ + "/config.json", dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  absl::StatusOr<std::unique_ptr<Stream3rModel>> model = Stream3rModel::Load(
      dir + "/config.json", dir + "/model.safetensors", Stream3rModelOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("aggregator."));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("expected"));
}

TEST_F(Stream3rModelTest, RandomWeightsAreDeterministic) {
  const auto a = RandomStream3rWeights(TinyStream3rConfig(), 3);
  const auto b = RandomStream3rWeights(TinyStream3rConfig(), 3);
  const auto c = RandomStream3rWeights(TinyStream3rConfig(), 4);
  ASSERT_EQ(a.size(), b.size());
  bool any_differs = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
    any_differs = any_differs || !at::equal(a[i].second, c[i].second);
  }
  EXPECT_TRUE(any_differs);
}

}  // namespace
}  // namespace streamkv::models::stream3r
