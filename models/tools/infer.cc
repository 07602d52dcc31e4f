// Offline inference: streams a folder of images (JPEG/PNG, in name order) or a .npy stack of
// frames through a model with an eviction policy.
//
//   streamkv-infer --model_dir=DIR --input=frames/ --out=OUT --policy=layerwise
//                  --policy_params=budget_frames=16 [--save_kept_ids]
//
// Writes OUT/frame_NNNNNN/<output>.npy per frame (upstream output keys), OUT/cache_tokens.csv
// (frame, layer, tokens, evicted) and, with --save_kept_ids, OUT/frame_NNNNNN/kept_ids/
// layer_LL.npy: the ids (frame·P_tok + position) of the tokens each layer keeps after the frame.
#include <algorithm>
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
#include "absl/strings/ascii.h"
#include "models/io/npy.h"
#ifdef STREAMKV_WITH_IMAGE_IO
#include "models/io/image.h"
#endif
#include "models/stream3r/stream3r_model.h"

ABSL_FLAG(std::string, model_dir, "", "Folder with config.json and model.safetensors");
ABSL_FLAG(std::string, input, "",
          "Folder of JPEG/PNG images (name order), or a .npy stack [S, 3, H, W] of uint8 or "
          "float32 in [0, 1]");
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

// Frames [3, H, W] from a folder of images or a .npy stack.
absl::StatusOr<std::vector<at::Tensor>> ReadFrames(const std::string& input) {
  std::vector<at::Tensor> frames;
  if (!std::filesystem::is_directory(input)) {
    absl::StatusOr<at::Tensor> stack = ReadNpy(input);
    if (!stack.ok()) return stack.status();
    if (stack->dim() != 4 || stack->size(1) != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input ", input, " must be [S, 3, H, W], got ", stack->dim(), " dims"));
    }
    for (int64_t i = 0; i < stack->size(0); ++i) frames.push_back((*stack)[i]);
    return frames;
  }
#ifdef STREAMKV_WITH_IMAGE_IO
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(input)) {
    const std::string ext = absl::AsciiStrToLower(entry.path().extension().string());
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  if (paths.empty()) return absl::InvalidArgumentError(absl::StrCat(input, " has no images"));
  for (const std::filesystem::path& path : paths) {
    absl::StatusOr<at::Tensor> image = ReadImageFile(path.string());
    if (!image.ok()) return image.status();
    frames.push_back(*image);
  }
  return frames;
#else
  return absl::UnimplementedError("built without JPEG/PNG decoding; pass a .npy stack");
#endif
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

  absl::StatusOr<std::vector<at::Tensor>> frames = ReadFrames(absl::GetFlag(FLAGS_input));
  if (!frames.ok()) return Fail(frames.status().message());
  absl::StatusOr<cache::PolicyParams> params = cache::ParsePolicyParams(absl::GetFlag(FLAGS_policy_params));
  if (!params.ok()) return Fail(params.status().message());
  StreamOptions stream_options{absl::GetFlag(FLAGS_policy), *params, frames->front().size(1),
                               frames->front().size(2)};
  absl::StatusOr<std::unique_ptr<StreamState>> stream = (*model)->OpenStream(stream_options);
  if (!stream.ok()) return Fail(stream.status().message());

  const std::filesystem::path out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  std::ofstream csv(out / "cache_tokens.csv");
  csv << "frame,layer,tokens,evicted\n";
  for (int64_t i = 0; i < static_cast<int64_t>(frames->size()); ++i) {
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
