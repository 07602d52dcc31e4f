// Offline inference: streams a .npy stack of frames through a model with an eviction policy.
//
//   streamkv-infer --model_dir=DIR --input=frames.npy --out=OUT --policy=layerwise \
//       --policy_params=budget_frames=16 [--save_kept_ids]
//
// Writes OUT/frame_NNNNNN/<output>.npy per frame (upstream output keys), OUT/cache_tokens.csv
// (frame, layer, tokens, evicted) and, with --save_kept_ids, OUT/frame_NNNNNN/kept_ids/
// layer_LL.npy: the ids (frame·P_tok + position) of the tokens each layer keeps after the frame.
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
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "models/io/npy.h"
#include "models/stream3r/stream3r_model.h"

ABSL_FLAG(std::string, model_dir, "", "Folder with config.json and model.safetensors");
ABSL_FLAG(std::string, input, "", ".npy stack of frames [S, 3, H, W], uint8 or float32 in [0, 1]");
ABSL_FLAG(std::string, out, "out/infer", "Output folder");
ABSL_FLAG(std::string, policy, "none", "Eviction policy name");
ABSL_FLAG(std::string, policy_params, "", "Policy parameters as name=value,name=value");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda[:N]");
ABSL_FLAG(bool, save_kept_ids, false, "Also write the ids of the tokens kept in each layer");

namespace streamkv::models {
namespace {

int Fail(absl::string_view message) {
  std::cerr << "error: " << message << "\n";
  return 1;
}

absl::StatusOr<cache::PolicyParams> ParsePolicyParams(const std::string& text) {
  cache::PolicyParams params;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--policy_params: expected name=value, got '", item, "'"));
    }
    params[kv[0]] = kv[1];
  }
  return params;
}

// Ids (frame·P_tok + position) of the tokens `layer` holds, [G, T] int64.
at::Tensor KeptIds(const cache::KvCache& cache, int64_t layer) {
  const cache::LayerView view = cache.layer(layer);
  return view.frame.to(at::kLong) * cache.options().geometry.tokens_per_frame +
         view.position.to(at::kLong);
}

int Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  if (model_dir.empty() || absl::GetFlag(FLAGS_input).empty()) {
    return Fail("--model_dir and --input are required");
  }
  stream3r::Stream3rModelOptions options;
  try {
    options.device = c10::Device(absl::GetFlag(FLAGS_device));
  } catch (const c10::Error&) {
    return Fail(absl::StrCat("--device: unknown device '", absl::GetFlag(FLAGS_device), "'"));
  }
  if (options.device.is_cuda()) options.backbone_dtype = c10::kBFloat16;
  absl::StatusOr<std::unique_ptr<stream3r::Stream3rModel>> model = stream3r::Stream3rModel::Load(
      model_dir + "/config.json", model_dir + "/model.safetensors", options);
  if (!model.ok()) return Fail(model.status().message());

  absl::StatusOr<at::Tensor> frames = ReadNpy(absl::GetFlag(FLAGS_input));
  if (!frames.ok()) return Fail(frames.status().message());
  if (frames->dim() != 4 || frames->size(1) != 3) {
    return Fail(absl::StrCat("--input must be [S, 3, H, W], got ", frames->dim(), " dims"));
  }
  absl::StatusOr<cache::PolicyParams> params = ParsePolicyParams(absl::GetFlag(FLAGS_policy_params));
  if (!params.ok()) return Fail(params.status().message());
  StreamOptions stream_options{absl::GetFlag(FLAGS_policy), *params, frames->size(2),
                               frames->size(3)};
  absl::StatusOr<std::unique_ptr<StreamState>> stream = (*model)->OpenStream(stream_options);
  if (!stream.ok()) return Fail(stream.status().message());

  const std::filesystem::path out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  std::ofstream csv(out / "cache_tokens.csv");
  csv << "frame,layer,tokens,evicted\n";
  for (int64_t i = 0; i < frames->size(0); ++i) {
    absl::StatusOr<FrameResult> result = (*model)->ProcessFrame(**stream, {(*frames)[i]});
    if (!result.ok()) return Fail(result.status().message());
    const std::filesystem::path dir = out / absl::StrFormat("frame_%06d", i);
    std::filesystem::create_directories(dir);
    for (const auto& [name, value] : result->outputs) {
      if (absl::Status s = WriteNpy(dir / (name + ".npy"), value.cpu()); !s.ok()) {
        return Fail(s.message());
      }
    }
    const cache::KvCache& cache = *(*stream)->caches().front();
    for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
      csv << i << ',' << layer << ',' << cache.length(layer) << ','
          << result->eviction.evicted[layer] << '\n';
      if (absl::GetFlag(FLAGS_save_kept_ids)) {
        std::filesystem::create_directories(dir / "kept_ids");
        const std::string path = dir / "kept_ids" / absl::StrFormat("layer_%02d.npy", layer);
        if (absl::Status s = WriteNpy(path, KeptIds(cache, layer).cpu()); !s.ok()) {
          return Fail(s.message());
        }
      }
    }
    std::printf("frame %lld: preprocess %.1f ms, model %.1f ms, evict %.1f ms, cache %lld tokens\n",
                static_cast<long long>(i), result->timings.preprocess_ms,
                result->timings.model_ms, result->timings.evict_ms,
                static_cast<long long>(cache.Snapshot().total_tokens));
  }
  std::printf("outputs written to %s\n", out.string().c_str());
  return 0;
}

}  // namespace
}  // namespace streamkv::models

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Streams a .npy stack of frames through a model.");
  absl::ParseCommandLine(argc, argv);
  return streamkv::models::Run();
}
