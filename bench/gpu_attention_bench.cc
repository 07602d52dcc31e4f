// GPU: the two-pass attention-with-scores kernel against materialised attention, per frame of
// queries (N = 1041, one STream3R frame at 518×392) against caches of T ∈ {8k, 32k, 128k} keys,
// H = 16, D = 64, bfloat16. Reports the median time over repetitions and the peak memory the call
// allocated beyond its inputs (CUDA caching-allocator statistics).
//
//   materialised:  logits = q·kᵀ·scale [H, N, T] (bf16), p = softmax in float32 [H, N, T],
//                  output = p·v, scores reduced from p (what the research code does)
//   kernel:        AttentionWithKeyScores (kernels/cuda/attention_with_scores.cu)
//   fused:         at::scaled_dot_product_attention, no scores (score-free policies; LibTorch 2.x)
//
// Usage: streamkv_gpu_attention_bench [repetitions (default 10)] [max T (default 131072)]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/version.h>

#include "kernels/attention_with_scores.h"

#ifdef STREAMKV_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

namespace streamkv::kernels {
namespace {

#ifdef STREAMKV_WITH_CUDA

constexpr int64_t kQueries = 1041;
constexpr int64_t kHeads = 16;
constexpr int64_t kHeadDim = 64;

struct Measurement {
  double median_ms = 0;
  double peak_mib = 0;  // peak allocated during one call minus what was allocated before it
  bool ok = true;
  std::string error;
};

int64_t AllocatedPeak(int device) {
  // Index 0 is StatType::AGGREGATE in every LibTorch version (1.13: C array, 2.x: std::array).
  return c10::cuda::CUDACachingAllocator::getDeviceStats(device).allocated_bytes[0].peak;
}
int64_t AllocatedNow(int device) {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(device).allocated_bytes[0].current;
}

// One untimed warm-up call measures peak memory; then `reps` calls timed with CUDA events on the
// current stream.
Measurement Measure(const std::function<void()>& body, int reps) {
  Measurement m;
  const int device = c10::cuda::current_device();
  try {
    cudaDeviceSynchronize();
    const int64_t before = AllocatedNow(device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(device);
    body();
    cudaDeviceSynchronize();
    m.peak_mib = static_cast<double>(AllocatedPeak(device) - before) / (1024.0 * 1024.0);

    const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    std::vector<double> times;
    for (int r = 0; r < reps; ++r) {
      cudaEventRecord(start, stream);
      body();
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      times.push_back(ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(times.begin(), times.end());
    m.median_ms = times[times.size() / 2];
  } catch (const c10::Error& e) {  // e.g. out of memory for the materialised matrix
    m.ok = false;
    m.error = e.what_without_backtrace();
    c10::cuda::CUDACachingAllocator::emptyCache();
  }
  return m;
}

void Print(int64_t t, const char* method, const Measurement& m) {
  if (m.ok) {
    std::printf("| %7lld | %-28s | %10.3f | %10.1f |\n", static_cast<long long>(t), method,
                m.median_ms, m.peak_mib);
  } else {
    std::printf("| %7lld | %-28s | failed: %s |\n", static_cast<long long>(t), method,
                m.error.substr(0, 80).c_str());
  }
  std::fflush(stdout);
}

int Run(int reps, int64_t max_t) {
  if (!at::hasCUDA()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  at::NoGradGuard no_grad;
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  std::printf("N=%lld H=%lld D=%lld bf16, median of %d; peak = allocated beyond the inputs\n\n",
              static_cast<long long>(kQueries), static_cast<long long>(kHeads),
              static_cast<long long>(kHeadDim), reps);
  std::printf("| T       | method                       | time (ms)  | peak (MiB) |\n");
  std::printf("|---------|------------------------------|------------|------------|\n");
  for (int64_t t : {int64_t{8192}, int64_t{32768}, int64_t{131072}}) {
    if (t > max_t) continue;
    at::manual_seed(0);
    const at::TensorOptions opts = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
    const at::Tensor q = at::randn({kHeads, kQueries, kHeadDim}, opts);
    const at::Tensor k = at::randn({kHeads, t, kHeadDim}, opts);
    const at::Tensor v = at::randn({kHeads, t, kHeadDim}, opts);

    AttentionScoresOptions mean_sum;  // what layerwise / h2o ask for
    AttentionScoresOptions per_head;
    per_head.head_mean_scores = false;
    per_head.per_head_scores = true;
    AttentionScoresOptions mean_max;
    mean_max.reduction = QueryReduction::kMax;
    AttentionScoresOptions output_only;
    output_only.head_mean_scores = false;

    const auto materialised = [&] {
      const at::Tensor logits = at::bmm(q, k.transpose(1, 2)).mul_(scale);  // [H, N, T] bf16
      const at::Tensor probs = at::softmax(logits, -1, at::kFloat);         // [H, N, T] f32
      const at::Tensor out = at::bmm(probs.to(at::kBFloat16), v);           // [H, N, D]
      const at::Tensor scores = probs.mean(0).sum(0);                       // [T]
      (void)out;
      (void)scores;
    };
    Print(t, "materialised, head-mean sum", Measure(materialised, reps));
    const std::vector<std::pair<const char*, AttentionScoresOptions>> kernel_cases = {
        {"kernel, head-mean sum", mean_sum},
        {"kernel, per-head sum", per_head},
        {"kernel, head-mean max", mean_max},
        {"kernel, output only", output_only}};
    for (const auto& entry : kernel_cases) {
      const AttentionScoresOptions& options = entry.second;
      const auto kernel = [&] { (void)AttentionWithKeyScores(q, k, v, scale, options); };
      Print(t, entry.first, Measure(kernel, reps));
    }
#if TORCH_VERSION_MAJOR >= 2
    const c10::optional<at::Tensor> no_mask;
    const auto fused = [&] {
      (void)at::scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                             no_mask, /*dropout_p=*/0.0, /*is_causal=*/false);
    };
    Print(t, "fused SDPA, output only", Measure(fused, reps));
#endif
  }
  return 0;
}

#else  // !STREAMKV_WITH_CUDA

int Run(int, int64_t) {
  std::printf("streamkv_gpu_attention_bench needs a CUDA build (nvcc and a CUDA LibTorch)\n");
  return 0;
}

#endif  // STREAMKV_WITH_CUDA

}  // namespace
}  // namespace streamkv::kernels

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
  const int64_t max_t = argc > 2 ? std::atoll(argv[2]) : 131072;
  return streamkv::kernels::Run(reps, max_t);
}
