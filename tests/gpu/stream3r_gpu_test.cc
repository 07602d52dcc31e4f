// The STream3R runtime on CUDA (bfloat16 backbone) against the CPU float32 runtime, and the
// model's attention entry point (fused attention on LibTorch 2.x) against CPU. Every test skips
// itself without a CUDA GPU.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cache/policy_params.h"
#include "models/stream3r/config.h"
#include "models/stream3r/layers.h"
#include "models/stream3r/stream3r_model.h"
#include "models/stream3r/tiny_model.h"

namespace streamkv::models::stream3r {
namespace {

constexpr int64_t kHeight = 56;  // 4 patch rows at the tiny model's width of 112: no resize
constexpr int64_t kWidth = 112;
constexpr int64_t kFrames = 3;

// The tiny model at head dims the CUDA kernel serves: aggregator 2 heads × 64, camera trunk
// 2 heads × 128 (the real model's head dims), so scored attention runs the two-pass kernel.
Stream3rConfig KernelSizedTinyConfig() {
  Stream3rConfig c = TinyStream3rConfig();
  c.aggregator.embed_dim = 128;
  c.aggregator.num_heads = 2;
  c.aggregator.patch_embed_num_heads = 2;
  c.camera_head.dim_in = 2 * c.aggregator.embed_dim;
  c.camera_head.num_heads = 2;
  const DptHeadConfig tiny_depth = c.depth_head, tiny_point = c.point_head;
  c.depth_head = DepthHeadConfig(c.aggregator.embed_dim);
  c.point_head = PointHeadConfig(c.aggregator.embed_dim);
  for (auto [head, tiny] :
       {std::pair{&c.depth_head, &tiny_depth}, std::pair{&c.point_head, &tiny_point}}) {
    head->features = tiny->features;
    head->out_channels = tiny->out_channels;
    head->intermediate_layer_idx = tiny->intermediate_layer_idx;
  }
  return c;
}

// The output `name` of `result`; a test failure when it is missing.
at::Tensor Output(const FrameResult& result, const std::string& name) {
  at::Tensor output = result.Output(name);
  if (!output.defined()) ADD_FAILURE() << "no output " << name;
  return output;
}

// ‖actual − expected‖₂ / ‖expected‖₂: robust to the odd pixel where bfloat16 rounding is
// amplified (e.g. by exp in the depth head), strict on systematic error.
double RelativeError(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor a = actual.cpu().to(at::kDouble), e = expected.cpu().to(at::kDouble);
  return (a - e).norm().item<double>() / std::max(e.norm().item<double>(), 1e-12);
}

struct PolicyCase {
  std::string name;
  cache::PolicyParams params;
};

// Tolerance. The CUDA run keeps the aggregator and its caches in bfloat16 (8 significand bits,
// relative rounding 2^-9 ≈ 2e-3 per operation), the heads in float32. Through the tiny model's
// 4 frame + 4 global blocks, the relative error of the aggregated tokens stays around 1e-2; we
// allow 5e-2 on dense outputs (depth, points and their confidences, norm-wise) and atol 5e-2 +
// rtol 5e-2 elementwise on the 9-D pose encoding (translation, quaternion and fields of view are
// O(1)). With layerwise eviction, frame 2 attends to the tokens each run kept; scores are
// float32 in both runs, so near-ties aside the same tokens survive and the same bounds hold.
constexpr double kDenseRelTol = 5e-2;
constexpr double kPoseTol = 5e-2;

void CompareStreams(const Stream3rConfig& config, const std::string& dir_name) {
  const std::string dir = ::testing::TempDir() + "/" + dir_name;
  ASSERT_TRUE(WriteRandomStream3r(dir, config, /*seed=*/7).ok());
  const auto load = [&](const Stream3rModelOptions& options) {
    absl::StatusOr<std::unique_ptr<Stream3rModel>> model =
        Stream3rModel::Load(dir + "/config.json", dir + "/model.safetensors", options);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  };
  const std::unique_ptr<Stream3rModel> cpu = load({c10::Device(c10::kCPU), at::kFloat});
  const std::unique_ptr<Stream3rModel> gpu = load({c10::Device(c10::kCUDA, 0), at::kBFloat16});
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(gpu, nullptr);
  at::manual_seed(11);
  const at::Tensor frames = at::rand({kFrames, 3, kHeight, kWidth});

  const std::vector<PolicyCase> policies = {{"none", {}}, {"layerwise", {{"budget_frames", "2"}}}};
  for (const PolicyCase& policy : policies) {
    SCOPED_TRACE("policy " + policy.name);
    absl::StatusOr<std::unique_ptr<StreamState>> cpu_stream =
        cpu->OpenStream({policy.name, policy.params, kHeight, kWidth});
    absl::StatusOr<std::unique_ptr<StreamState>> gpu_stream =
        gpu->OpenStream({policy.name, policy.params, kHeight, kWidth});
    ASSERT_TRUE(cpu_stream.ok()) << cpu_stream.status();
    ASSERT_TRUE(gpu_stream.ok()) << gpu_stream.status();
    for (int64_t i = 0; i < kFrames; ++i) {
      SCOPED_TRACE("frame " + std::to_string(i));
      absl::StatusOr<FrameResult> expected = cpu->ProcessFrame(**cpu_stream, {frames[i]});
      absl::StatusOr<FrameResult> actual = gpu->ProcessFrame(**gpu_stream, {frames[i]});
      ASSERT_TRUE(expected.ok()) << expected.status();
      ASSERT_TRUE(actual.ok()) << actual.status();
      for (const char* name : {"depth", "depth_conf", "world_points", "world_points_conf"}) {
        const at::Tensor a = Output(*actual, name);
        ASSERT_TRUE(a.defined());
        ASSERT_TRUE(at::isfinite(a).all().item<bool>()) << name;
        EXPECT_LE(RelativeError(a, Output(*expected, name)), kDenseRelTol) << name;
      }
      const at::Tensor pose = Output(*actual, "pose_enc").cpu().to(at::kFloat);
      const at::Tensor pose_ref = Output(*expected, "pose_enc").cpu().to(at::kFloat);
      EXPECT_TRUE(at::allclose(pose, pose_ref, kPoseTol, kPoseTol))
          << "pose_enc differs by " << (pose - pose_ref).abs().max().item<float>();
      // Both runs cache the same number of tokens per layer (the budgets follow from the
      // attention variances; allow one token of rounding per layer).
      const cache::KvCache& cpu_cache = *(*cpu_stream)->caches()[0];
      const cache::KvCache& gpu_cache = *(*gpu_stream)->caches()[0];
      for (int64_t layer = 0; layer < cpu_cache.num_layers(); ++layer) {
        EXPECT_NEAR(gpu_cache.length(layer), cpu_cache.length(layer), 1) << "layer " << layer;
      }
    }
  }
}

TEST(Stream3rGpuTest, TinyModelOnCudaBf16MatchesCpuFloat32) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  CompareStreams(TinyStream3rConfig(), "tiny_stream3r_gpu");
}

TEST(Stream3rGpuTest, KernelSizedTinyModelOnCudaBf16MatchesCpuFloat32) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  CompareStreams(KernelSizedTinyConfig(), "kernel_sized_stream3r_gpu");
}

TEST(Stream3rGpuTest, SoftmaxAttentionOnCudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "needs a CUDA GPU";
  // Score-free attention: fused on LibTorch 2.x, the two-pass kernel or the reference before.
  // Masked (block-causal) and unmasked, bfloat16 vs CPU float32 on the same rounded inputs.
  at::manual_seed(2);
  const int64_t frames = 3, tokens = 37;
  const at::TensorOptions bf16 = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor q = at::randn({1, 2, frames * tokens, 64}, bf16);
  const at::Tensor k = at::randn({1, 2, frames * tokens, 64}, bf16);
  const at::Tensor v = at::randn({1, 2, frames * tokens, 64}, bf16);
  const at::Tensor mask = BlockCausalMask(frames, tokens, bf16);
  for (bool masked : {false, true}) {
    SCOPED_TRACE(masked ? "masked" : "unmasked");
    const at::Tensor actual = SoftmaxAttention(q, k, v, masked ? mask : at::Tensor());
    const at::Tensor expected =
        SoftmaxAttention(q.cpu().to(at::kFloat), k.cpu().to(at::kFloat), v.cpu().to(at::kFloat),
                         masked ? mask.cpu().to(at::kFloat) : at::Tensor());
    ASSERT_EQ(actual.sizes(), expected.sizes());
    // bfloat16 output rounding on |output| ≲ 3.
    EXPECT_TRUE(at::allclose(actual.cpu().to(at::kFloat), expected, 2e-2, 2e-2))
        << (actual.cpu().to(at::kFloat) - expected).abs().max().item<float>();
  }
}

}  // namespace
}  // namespace streamkv::models::stream3r
