// Streams synthetic attention through eviction policies and records per-layer cache sizes.
//
//   streamkv-simulate --frames=200 --out=out/simulation.csv
//   streamkv-simulate --policies="layerwise:budget_frames=8,temp=0.2;h2o:granularity=layer"
//
// The cache geometry defaults to STream3R's 24 global layers at 518×392 (1041 tokens per frame)
// with one small head, so 200 unbounded frames fit in memory; only token counts matter here.
// Attention is synthetic: per layer a log-normal spread whose width grows with depth, camera and
// register tokens drawing more attention, recent frames more than old ones.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_split.h"
#include "cache/policy_factory.h"

ABSL_FLAG(std::string, policies,
          "none;sliding_window:start_size=1,recent_size=15,unit=frames;"
          "h2o:heavy_size=8328,recent_size=8328,granularity=layer;global_ratio:ratio=0.3;"
          "layerwise:budget_frames=16",
          "Policies to simulate, ';'-separated, each as name[:param=value,...]");
ABSL_FLAG(int64_t, frames, 200, "Frames streamed through each policy");
ABSL_FLAG(int64_t, layers, 24, "Cached layers");
ABSL_FLAG(int64_t, heads, 1, "Attention heads");
ABSL_FLAG(int64_t, head_dim, 8, "Head dimension");
ABSL_FLAG(int64_t, special_tokens, 5, "Camera + register tokens per frame");
ABSL_FLAG(int64_t, patch_tokens, 1036, "Patch tokens per frame (37·28 at 518×392)");
ABSL_FLAG(std::string, out, "out/simulation.csv", "CSV written: policy,frame,layer,tokens,...");
ABSL_FLAG(uint64_t, seed, 0, "Random seed of the synthetic attention");

namespace streamkv::cache {
namespace {

struct PolicySpec {
  std::string text;  // as given, used as the CSV's policy column
  std::string name;
  PolicyParams params;
};

absl::StatusOr<PolicySpec> ParsePolicySpec(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(':', 1));
  absl::StatusOr<PolicyParams> params =
      ParsePolicyParams(parts.size() == 2 ? parts[1] : std::string());
  if (!params.ok()) return params.status();
  return PolicySpec{text, parts[0], *std::move(params)};
}

// Synthetic attention of one frame's queries over a layer's cached tokens.
class SyntheticAttention {
 public:
  SyntheticAttention(int64_t layers, int64_t queries) : layers_(layers), queries_(queries) {}

  // [T], or [H, T] when per head, reduced over queries as requested.
  at::Tensor Scores(const LayerView& view, int64_t layer, int64_t frame, const ScoreRequest& r,
                    int64_t heads) const {
    const int64_t length = view.frame.size(1);
    const double spread = 0.5 + 2.0 * static_cast<double>(layer) / static_cast<double>(layers_);
    const at::Tensor age = (frame - view.frame.select(0, 0)).to(at::kFloat);
    const at::Tensor special = SpecialTokenMask(view).select(0, 0).to(at::kFloat);
    at::Tensor logits = at::randn({heads, length}) * spread + special * 1.5 - 0.02 * age;
    at::Tensor probs = at::softmax(logits, 1);  // one representative query per head
    at::Tensor scores = r.reduction == kernels::QueryReduction::kMax ? probs : probs * queries_;
    return r.per_head ? scores : scores.mean(0);
  }

 private:
  const int64_t layers_;
  const int64_t queries_;
};

int Run() {
  CacheGeometry geometry;
  geometry.num_layers = absl::GetFlag(FLAGS_layers);
  geometry.num_heads = absl::GetFlag(FLAGS_heads);
  geometry.head_dim = absl::GetFlag(FLAGS_head_dim);
  const int64_t special = absl::GetFlag(FLAGS_special_tokens);
  const int64_t patches = absl::GetFlag(FLAGS_patch_tokens);
  geometry.tokens_per_frame = special + patches;
  const int64_t frames = absl::GetFlag(FLAGS_frames);
  if (geometry.num_layers < 1 || geometry.num_heads < 1 || geometry.head_dim < 1 || special < 0 ||
      special > 255 || patches < 1 || frames < 1) {
    std::cerr << "error: layers, heads, head_dim, patch_tokens and frames must be positive and "
                 "special_tokens in [0, 255]\n";
    return 2;
  }

  std::vector<PolicySpec> specs;
  for (absl::string_view text :
       absl::StrSplit(absl::GetFlag(FLAGS_policies), ';', absl::SkipEmpty())) {
    absl::StatusOr<PolicySpec> spec = ParsePolicySpec(std::string(text));
    if (!spec.ok()) {
      std::cerr << "error: " << spec.status().message() << "\n";
      return 2;
    }
    specs.push_back(*spec);
  }

  const std::filesystem::path out_path = absl::GetFlag(FLAGS_out);
  std::error_code error;
  if (out_path.has_parent_path()) std::filesystem::create_directories(out_path.parent_path(), error);
  std::ofstream csv(out_path);
  if (!csv) {
    std::cerr << "error: cannot write " << out_path << "\n";
    return 2;
  }
  csv << "policy,frame,layer,tokens,evicted,bytes\n";

  at::Tensor roles = at::full({geometry.tokens_per_frame},
                              static_cast<int64_t>(TokenRole::kPatch), at::kByte);
  if (special > 0) {
    roles[0] = static_cast<int64_t>(TokenRole::kCamera);
    roles.narrow(0, 1, special - 1).fill_(static_cast<int64_t>(TokenRole::kRegister));
  }
  const at::Tensor kv = at::zeros({geometry.num_heads, geometry.tokens_per_frame,
                                   geometry.head_dim});
  const SyntheticAttention attention(geometry.num_layers, geometry.tokens_per_frame);

  std::printf("%-70s %12s %12s %14s %10s\n", "policy", "final tokens", "peak tokens",
              "peak KV MiB", "ms/frame");
  for (const PolicySpec& spec : specs) {
    absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy =
        CreatePolicy(spec.name, spec.params, geometry);
    if (!policy.ok()) {
      std::cerr << "error: " << policy.status().message() << "\n";
      return 2;
    }
    at::manual_seed(absl::GetFlag(FLAGS_seed));
    KvCache cache(CacheOptionsFor(**policy, geometry, at::kCPU));
    const ScoreRequest request = (*policy)->score_request();
    int64_t peak_tokens = 0;
    int64_t peak_bytes = 0;
    int64_t overflow_reported = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t frame = 0; frame < frames; ++frame) {
      for (int64_t layer = 0; layer < geometry.num_layers; ++layer) {
        cache.Append(layer, kv, kv, FrameTokens{frame, roles});
        if (request.needed) {
          (*policy)->ObserveLayer(
              frame, layer,
              attention.Scores(cache.layer(layer), layer, frame, request, geometry.num_heads),
              cache);
        }
      }
      const EvictionOutcome outcome = (*policy)->EndFrame(frame, cache);
      if (outcome.protected_overflow > 0 && overflow_reported++ == 0) {
        std::cerr << "warning: " << spec.text << ": protected tokens exceed the budget by "
                  << outcome.protected_overflow << " tokens from frame " << frame << "\n";
      }
      const CacheSnapshot snapshot = cache.Snapshot();
      peak_tokens = std::max(peak_tokens, snapshot.total_tokens);
      peak_bytes = std::max(peak_bytes, snapshot.allocated_bytes);
      for (int64_t layer = 0; layer < geometry.num_layers; ++layer) {
        csv << '"' << spec.text << "\"," << frame << ',' << layer << ','
            << snapshot.tokens[layer] << ',' << outcome.evicted[layer] << ','
            << snapshot.bytes[layer] << '\n';
      }
    }
    const double ms = std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - start)
                          .count();
    std::printf("%-70s %12lld %12lld %14.1f %10.2f\n", spec.text.c_str(),
                static_cast<long long>(cache.Snapshot().total_tokens),
                static_cast<long long>(peak_tokens), peak_bytes / 1048576.0,
                ms / static_cast<double>(frames));
  }
  std::printf("per-layer tokens per frame written to %s\n", out_path.string().c_str());
  return 0;
}

}  // namespace
}  // namespace streamkv::cache

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Streams synthetic attention through eviction policies.");
  absl::ParseCommandLine(argc, argv);
  return streamkv::cache::Run();
}
