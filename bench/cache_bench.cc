// CPU float32 cost of the cache's per-frame bookkeeping at STream3R head sizes (H=16, D=64): score
// accumulation by the policies, compaction of K/V and metadata, and a whole layerwise eviction
// step, for one layer holding T tokens.
#include <cstdint>
#include <memory>

#include <ATen/ATen.h>
#include <benchmark/benchmark.h>

#include "cache/policy_factory.h"

namespace streamkv::cache {
namespace {

constexpr int64_t kHeads = 16;
constexpr int64_t kHeadDim = 64;
constexpr int64_t kTokensPerFrame = 1041;  // 37·28 patches + 5 special tokens at 518×392

CacheGeometry OneLayer() {
  CacheGeometry g;
  g.num_layers = 1;
  g.num_heads = kHeads;
  g.head_dim = kHeadDim;
  g.tokens_per_frame = kTokensPerFrame;
  return g;
}

// Fills layer 0 with `tokens` tokens in frames of kTokensPerFrame (camera, 4 registers, patches).
void Fill(KvCache& cache, int64_t tokens, int64_t first_frame = 0) {
  at::Tensor roles = at::full({kTokensPerFrame}, static_cast<int64_t>(TokenRole::kPatch), at::kByte);
  roles.narrow(0, 0, 5).fill_(static_cast<int64_t>(TokenRole::kRegister));
  int64_t frame = first_frame;
  for (int64_t left = tokens; left > 0; left -= kTokensPerFrame, ++frame) {
    const int64_t n = std::min(left, kTokensPerFrame);
    const at::Tensor kv = at::randn({kHeads, n, kHeadDim});
    cache.Append(0, kv, kv, FrameTokens{frame, roles.narrow(0, 0, n)});
  }
}

void SetPerToken(benchmark::State& state, int64_t tokens) {
  state.SetItemsProcessed(state.iterations() * tokens);
  // Inverted rate: seconds per token, printed with an SI prefix (e.g. 3.1n = 3.1 ns).
  state.counters["time_per_token"] = benchmark::Counter(
      static_cast<double>(tokens),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

std::unique_ptr<EvictionPolicy> Policy(const char* name, const PolicyParams& params) {
  return std::move(CreatePolicy(name, params, OneLayer())).value();
}

// One ObserveLayer: CAM and exposure update over T tokens (layerwise) or [H, T] (h2o per head).
void BM_ScoreAccumulation(benchmark::State& state, const char* name, PolicyParams params) {
  const int64_t tokens = state.range(0);
  std::unique_ptr<EvictionPolicy> policy = Policy(name, params);
  KvCache cache(CacheOptionsFor(*policy, OneLayer(), at::kCPU));
  Fill(cache, tokens);
  const at::Tensor scores =
      policy->score_request().per_head ? at::rand({kHeads, tokens}) : at::rand({tokens});
  const int64_t frame = tokens / kTokensPerFrame;
  for (auto _ : state) {
    policy->ObserveLayer(frame, 0, scores, cache);
    benchmark::ClobberMemory();
  }
  SetPerToken(state, tokens);
}
BENCHMARK_CAPTURE(BM_ScoreAccumulation, layerwise, "layerwise", {{"budget_tokens", "1000000"}})
    ->RangeMultiplier(4)->Range(1024, 65536)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_ScoreAccumulation, h2o_per_head, "h2o", {{"granularity", "head"}})
    ->RangeMultiplier(4)->Range(1024, 65536)->Unit(benchmark::kMicrosecond);

// Compacting one layer of T tokens (K, V and metadata) down to a random half, order kept.
void BM_Compaction(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  KvCacheOptions options;
  options.geometry = OneLayer();
  options.initial_capacity = tokens;
  KvCache cache(options);
  Fill(cache, tokens);
  at::manual_seed(0);
  const at::Tensor keep = std::get<0>(at::randperm(tokens).narrow(0, 0, tokens / 2).sort());
  int64_t frame = tokens;
  for (auto _ : state) {
    cache.Compact(0, keep);
    state.PauseTiming();
    frame += tokens;  // past every frame Fill used
    Fill(cache, tokens - tokens / 2, frame);
    state.ResumeTiming();
  }
  SetPerToken(state, tokens);
}
BENCHMARK(BM_Compaction)->RangeMultiplier(4)->Range(1024, 65536)->Unit(benchmark::kMicrosecond);

// A whole layerwise step on one layer: observe, rank, select and compact one frame away.
void BM_LayerwiseFrame(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  std::unique_ptr<EvictionPolicy> policy =
      Policy("layerwise", {{"budget_tokens", std::to_string(tokens)}});
  KvCache cache(CacheOptionsFor(*policy, OneLayer(), at::kCPU));
  Fill(cache, tokens);
  int64_t frame = tokens;
  policy->ObserveLayer(0, 0, at::rand({tokens}), cache);  // frame 0 is the protected first frame
  for (auto _ : state) {
    state.PauseTiming();
    Fill(cache, kTokensPerFrame, ++frame);
    const at::Tensor scores = at::rand({cache.length(0)});
    state.ResumeTiming();
    policy->ObserveLayer(frame, 0, scores, cache);
    benchmark::DoNotOptimize(policy->EndFrame(frame, cache));
  }
  SetPerToken(state, tokens);
}
BENCHMARK(BM_LayerwiseFrame)->RangeMultiplier(4)->Range(4096, 65536)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace streamkv::cache
