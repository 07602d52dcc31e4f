// End-to-end STream3R streaming benchmark: per-frame latency and peak RSS for one policy.
//
//   streamkv-bench-stream3r --size=tiny --frames=100 --policy=layerwise
//                           --policy_params=budget_frames=16
//
// Weights are random (written once to --work_dir). Run one policy per process: peak RSS is the
// process's high-water mark. On CUDA it also reports peak GPU memory; a frame that fails (e.g. out
// of memory under `none`) ends the run with the frame number. --csv writes per-frame figures.
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "models/stream3r/stream3r_model.h"
#include "models/stream3r/tiny_model.h"

#ifdef STREAMKV_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

ABSL_FLAG(std::string, size, "tiny", "tiny | mid | full (the released architecture)");
ABSL_FLAG(int64_t, frames, 100, "Frames streamed");
ABSL_FLAG(int64_t, height, 0, "Input frame height (default: 0.75 × the model's width)");
ABSL_FLAG(std::string, policy, "none", "Eviction policy");
ABSL_FLAG(std::string, policy_params, "", "name=value,...");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, work_dir, "out/bench-models", "Where random checkpoints are kept");
ABSL_FLAG(std::string, csv, "", "Optional per-frame CSV: frame,total_ms,evict_ms,cache_tokens");

namespace streamkv::models::stream3r {
namespace {

Stream3rConfig ConfigForSize(const std::string& size) {
  if (size == "full") return Stream3rConfig{};
  Stream3rConfig c = TinyStream3rConfig();
  if (size == "mid") {
    // A quarter-width backbone at 224: 16 patches per row, 12 aa blocks.
    c.aggregator.img_size = 224;
    c.aggregator.embed_dim = 256;
    c.aggregator.depth = 12;
    c.aggregator.num_heads = 4;
    c.aggregator.patch_embed_depth = 4;
    c.aggregator.patch_embed_num_heads = 4;
    c.camera_head.dim_in = 512;
    c.camera_head.trunk_depth = 2;
    c.camera_head.num_heads = 4;
    for (DptHeadConfig* head : {&c.depth_head, &c.point_head}) {
      head->dim_in = 512;
      head->features = 64;
      head->out_channels = {32, 64, 128, 128};
      head->intermediate_layer_idx = {2, 5, 8, 11};
    }
  }
  return c;
}

int64_t PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

// Peak bytes the CUDA caching allocator handed out on `device`, in MiB; -1 without CUDA.
int64_t PeakGpuMiB(c10::Device device) {
#ifdef STREAMKV_WITH_CUDA
  if (device.is_cuda()) {
    const int index = device.index() < 0 ? 0 : device.index();
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].peak /
           (1 << 20);
  }
#endif
  (void)device;
  return -1;
}

int Run() {
  const std::string size = absl::GetFlag(FLAGS_size);
  if (size != "tiny" && size != "mid" && size != "full") {
    std::cerr << "error: --size must be tiny, mid or full\n";
    return 2;
  }
  const Stream3rConfig config = ConfigForSize(size);
  const std::string dir = absl::StrCat(absl::GetFlag(FLAGS_work_dir), "/", size);
  if (!std::filesystem::exists(dir + "/model.safetensors")) {
    if (absl::Status s = WriteRandomStream3r(dir, config, 0); !s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      return 1;
    }
  }
  Stream3rModelOptions options;
  options.device = c10::Device(absl::GetFlag(FLAGS_device));
  if (options.device.is_cuda()) options.backbone_dtype = c10::kBFloat16;
  auto model = Stream3rModel::Load(dir + "/config.json", dir + "/model.safetensors", options);
  if (!model.ok()) {
    std::cerr << "error: " << model.status().message() << "\n";
    return 1;
  }
  const int64_t width = config.aggregator.img_size;
  const int64_t height = absl::GetFlag(FLAGS_height) > 0 ? absl::GetFlag(FLAGS_height)
                                                         : width * 3 / 4;
  absl::StatusOr<cache::PolicyParams> params =
      cache::ParsePolicyParams(absl::GetFlag(FLAGS_policy_params));
  if (!params.ok()) {
    std::cerr << "error: " << params.status().message() << "\n";
    return 2;
  }
  StreamOptions stream_options{absl::GetFlag(FLAGS_policy), *params, height, width};
  auto stream = (*model)->OpenStream(stream_options);
  if (!stream.ok()) {
    std::cerr << "error: " << stream.status().message() << "\n";
    return 1;
  }
  at::manual_seed(0);
  const at::Tensor frame = at::randint(0, 256, {3, height, width}, at::kByte);
  std::ofstream csv;
  if (!absl::GetFlag(FLAGS_csv).empty()) {
    csv.open(absl::GetFlag(FLAGS_csv));
    csv << "frame,total_ms,evict_ms,cache_tokens\n";
  }
  int64_t frames = absl::GetFlag(FLAGS_frames);
  std::vector<double> total_ms, evict_ms;
  for (int64_t i = 0; i < frames; ++i) {
    auto result = (*model)->ProcessFrame(**stream, {frame});
    if (!result.ok()) {
      std::printf("stopped at frame %lld: %s\n", static_cast<long long>(i + 1),
                  std::string(result.status().message()).c_str());
      frames = i;
      break;
    }
    const FrameTimings& t = result->timings;
    total_ms.push_back(t.preprocess_ms + t.model_ms + t.evict_ms);
    evict_ms.push_back(t.evict_ms);
    if (csv.is_open()) {
      csv << i + 1 << ',' << total_ms.back() << ',' << t.evict_ms << ','
          << (*stream)->caches().front()->Snapshot().total_tokens << '\n';
    }
  }
  if (frames == 0) return 1;
  // Mean latency of frames [first, last] (1-based; nan when the run was shorter than `first`):
  // single frames are noisy.
  auto window = [&](int64_t first, int64_t last) {
    if (first > frames) return std::nan("");
    first = std::max<int64_t>(first, 1);
    last = std::min(last, frames);
    return std::accumulate(total_ms.begin() + first - 1, total_ms.begin() + last, 0.0) /
           static_cast<double>(last - first + 1);
  };
  const double evict = std::accumulate(evict_ms.begin(), evict_ms.end(), 0.0) / frames;
  std::printf("size=%s frames=%lld %lldx%lld policy=%s %s threads=%d\n", size.c_str(),
              static_cast<long long>(frames), static_cast<long long>(height),
              static_cast<long long>(width), stream_options.policy.c_str(),
              absl::GetFlag(FLAGS_policy_params).c_str(), at::get_num_threads());
  std::printf("ms/frame: frame 1 %.1f | frames 46-55 %.1f | frames 96-105 %.1f | last 10 %.1f | "
              "all %.1f | evict %.2f (%.1f%%)\n",
              window(1, 1), window(46, 55), window(96, 105), window(frames - 9, frames),
              window(1, frames), evict, 100.0 * evict / window(1, frames));
  std::printf("cache tokens %lld  peak RSS %lld MiB  peak GPU %lld MiB\n",
              static_cast<long long>((*stream)->caches().front()->Snapshot().total_tokens),
              static_cast<long long>(PeakRssMiB()),
              static_cast<long long>(PeakGpuMiB(options.device)));
  return 0;
}

}  // namespace
}  // namespace streamkv::models::stream3r

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return streamkv::models::stream3r::Run();
}
