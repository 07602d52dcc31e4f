// CPU float32 cost of attention with key scores, per frame of queries against a cache of T keys.
// N = 1041 is one STream3R frame at 518×392 (37·28 patches + 5 special tokens); N = 64 keeps the
// large-T cases cheap (N = 1041 at T = 64k is ~280 GFLOP).
#include <chrono>
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>
#include <benchmark/benchmark.h>

#include "kernels/attention_with_scores.h"

namespace streamkv::kernels {
namespace {

constexpr int64_t kHeads = 16;
constexpr int64_t kHeadDim = 64;

struct Inputs {
  at::Tensor q, k, v;
  double scale;
};

Inputs MakeInputs(int64_t num_queries, int64_t num_keys) {
  at::manual_seed(0);
  return {at::randn({kHeads, num_queries, kHeadDim}), at::randn({kHeads, num_keys, kHeadDim}),
          at::randn({kHeads, num_keys, kHeadDim}), 1.0 / std::sqrt(static_cast<double>(kHeadDim))};
}

// Runs `body` once per iteration under manual (wall-clock) timing, then reports items = keys and
// the wall time per key of one call.
template <typename Body>
void RunTimed(benchmark::State& state, int64_t num_keys, Body body) {
  double total_seconds = 0;
  for (auto _ : state) {
    const auto begin = std::chrono::steady_clock::now();
    body();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - begin;
    state.SetIterationTime(elapsed.count());
    total_seconds += elapsed.count();
  }
  state.SetItemsProcessed(state.iterations() * num_keys);
  state.counters["ns_per_key"] =
      total_seconds * 1e9 / static_cast<double>(state.iterations() * num_keys);
}

// args: N, T. Default options: head-mean sum scores, query_chunk 128.
void BM_AttentionWithKeyScores(benchmark::State& state) {
  const int64_t num_queries = state.range(0), num_keys = state.range(1);
  const Inputs in = MakeInputs(num_queries, num_keys);
  RunTimed(state, num_keys, [&] {
    AttentionWithScores result = AttentionWithKeyScores(in.q, in.k, in.v, in.scale);
    benchmark::DoNotOptimize(result.output.data_ptr());
    benchmark::DoNotOptimize(result.key_scores.data_ptr());
  });
}

// args: N, T, query_chunk. How the scratch size H·query_chunk·T trades GEMM efficiency against
// cache misses and page faults on first touch.
void BM_AttentionQueryChunk(benchmark::State& state) {
  const int64_t num_queries = state.range(0), num_keys = state.range(1);
  const Inputs in = MakeInputs(num_queries, num_keys);
  AttentionScoresOptions options;
  options.query_chunk = state.range(2);
  RunTimed(state, num_keys, [&] {
    AttentionWithScores result = AttentionWithKeyScores(in.q, in.k, in.v, in.scale, options);
    benchmark::DoNotOptimize(result.output.data_ptr());
  });
}

// Baseline without scores: the whole [H, N, T] probability matrix materialised at once.
void BM_AttentionMaterialised(benchmark::State& state) {
  const int64_t num_queries = state.range(0), num_keys = state.range(1);
  const Inputs in = MakeInputs(num_queries, num_keys);
  at::NoGradGuard no_grad;
  RunTimed(state, num_keys, [&] {
    const at::Tensor probs = at::softmax(at::bmm(in.q, in.k.transpose(1, 2)) * in.scale, -1);
    at::Tensor output = at::bmm(probs, in.v);
    benchmark::DoNotOptimize(output.data_ptr());
  });
  state.SetLabel("materialised");
}

void AllSizes(benchmark::internal::Benchmark* b) {
  for (const int64_t n : {64, 1041}) {
    for (const int64_t t : {1024, 4096, 16384, 65536}) b->Args({n, t});
  }
}

// Anything slower than MinTime runs a single iteration, which bounds the N = 1041, T = 64k case.
BENCHMARK(BM_AttentionWithKeyScores)
    ->Apply(AllSizes)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.2);
BENCHMARK(BM_AttentionQueryChunk)
    ->ArgsProduct({{1041}, {4096}, {16, 32, 64, 128}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.2);
BENCHMARK(BM_AttentionMaterialised)
    ->Args({64, 16384})
    ->Args({1041, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.2);

}  // namespace
}  // namespace streamkv::kernels
