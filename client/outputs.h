// What the client does with answers: decode output tensors, write .npy per frame, the camera
// trajectory (TUM), a coloured point cloud (.ply) and per-layer cache tokens (CSV).
#pragma once

#include <array>
#include <cstdint>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::client {

// An output tensor as float32 values, row-major.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Decodes float32 or float16 bytes; InvalidArgument when the data does not match the shape.
absl::StatusOr<HostTensor> ToHostTensor(const v1::Tensor& tensor);
// The output `name` of `result`, or null.
const v1::Tensor* FindOutput(const v1::FrameResult& result, absl::string_view name);
// IEEE binary16 → binary32.
float HalfToFloat(uint16_t half);

// A camera's pose in the world: position and orientation as a unit quaternion (x, y, z, w).
struct CameraPose {
  std::array<double, 3> position;
  std::array<double, 4> quaternion;
};
// The pose of a camera whose extrinsic [R | t] (3 × 4, row-major) maps world to camera
// coordinates: position −Rᵀt, orientation Rᵀ.
CameraPose PoseFromExtrinsic(const float* extrinsic);

struct ResultWriterOptions {
  std::string dir;             // created if missing
  bool npy = true;             // dir/frame_NNNNNN/<output>.npy, as streamkv-infer writes them
  bool trajectory = true;      // dir/trajectory.tum: "time tx ty tz qx qy qz qw" per frame
  bool point_cloud = true;     // dir/points.ply: binary, xyz + rgb
  bool tokens_csv = true;      // dir/cache_tokens.csv: frame,layer,tokens,evicted
  double fps = 30;             // trajectory time stamps: frame index / fps
  double ply_conf_percentile = 50;   // per frame, drop points below this confidence percentile
  int64_t ply_max_points = 2000000;  // uniform sample beyond this
};

// Writes the outputs of one session's frames. Not thread-safe.
class ResultWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ResultWriter>> Create(ResultWriterOptions options);
  // Outputs the frame carries are written; the others are skipped (e.g. no camera output).
  absl::Status Add(int64_t frame_index, const v1::FrameResult& result);
  // Writes the point cloud and flushes; returns the files written.
  absl::StatusOr<std::vector<std::string>> Finish();

 private:
  explicit ResultWriter(ResultWriterOptions options) : options_(std::move(options)) {}
  absl::Status AddPoints(const v1::FrameResult& result);

  const ResultWriterOptions options_;
  std::ofstream trajectory_;
  std::ofstream tokens_;
  struct Point {
    float xyz[3];
    uint8_t rgb[3];
  };
  std::vector<Point> points_;
  int64_t points_seen_ = 0;
  std::mt19937_64 sampler_{0};
  int64_t frames_ = 0;
};

}  // namespace streamkv::client
