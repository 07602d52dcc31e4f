#include "client/outputs.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/io/npy_writer.h"

namespace streamkv::client {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian");

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint8_t ToByte(float unit) {
  return static_cast<uint8_t>(std::clamp(std::lround(unit * 255.0f), 0L, 255L));
}

}  // namespace

float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1f;
  const uint32_t mantissa = half & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero and subnormals
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), static_cast<int>(exponent) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &magnitude, sizeof(bits));
  bits |= sign;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

absl::StatusOr<HostTensor> ToHostTensor(const v1::Tensor& tensor) {
  HostTensor host;
  host.shape.assign(tensor.shape().begin(), tensor.shape().end());
  const int64_t n = Elements(host.shape);
  const bool half = tensor.dtype() == v1::TENSOR_DTYPE_FLOAT16;
  const int64_t element = half ? 2 : 4;
  if (tensor.dtype() != v1::TENSOR_DTYPE_FLOAT16 && tensor.dtype() != v1::TENSOR_DTYPE_FLOAT32) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name(), ": unknown dtype"));
  }
  if (static_cast<int64_t>(tensor.data().size()) != n * element) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name(), " has ",
                                                   tensor.data().size(), " bytes, its shape needs ",
                                                   n * element));
  }
  host.values.resize(static_cast<size_t>(n));
  if (half) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, tensor.data().data() + 2 * i, 2);
      host.values[i] = HalfToFloat(bits);
    }
  } else {
    std::memcpy(host.values.data(), tensor.data().data(), tensor.data().size());
  }
  return host;
}

const v1::Tensor* FindOutput(const v1::FrameResult& result, absl::string_view name) {
  for (const v1::Tensor& tensor : result.outputs()) {
    if (tensor.name() == name) return &tensor;
  }
  return nullptr;
}

CameraPose PoseFromExtrinsic(const float* e) {
  // Camera-to-world rotation M = Rᵀ; position c = −Rᵀt.
  double m[3][3];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) m[i][j] = e[j * 4 + i];
  }
  CameraPose pose;
  for (int i = 0; i < 3; ++i) {
    pose.position[i] = -(m[i][0] * e[3] + m[i][1] * e[7] + m[i][2] * e[11]);
  }
  // Rotation matrix → quaternion, branching on the largest diagonal term for stability.
  const double trace = m[0][0] + m[1][1] + m[2][2];
  double x, y, z, w;
  if (trace > 0) {
    const double s = 2 * std::sqrt(1 + trace);
    w = s / 4;
    x = (m[2][1] - m[1][2]) / s;
    y = (m[0][2] - m[2][0]) / s;
    z = (m[1][0] - m[0][1]) / s;
  } else if (m[0][0] > m[1][1] && m[0][0] > m[2][2]) {
    const double s = 2 * std::sqrt(1 + m[0][0] - m[1][1] - m[2][2]);
    w = (m[2][1] - m[1][2]) / s;
    x = s / 4;
    y = (m[0][1] + m[1][0]) / s;
    z = (m[0][2] + m[2][0]) / s;
  } else if (m[1][1] > m[2][2]) {
    const double s = 2 * std::sqrt(1 + m[1][1] - m[0][0] - m[2][2]);
    w = (m[0][2] - m[2][0]) / s;
    x = (m[0][1] + m[1][0]) / s;
    y = s / 4;
    z = (m[1][2] + m[2][1]) / s;
  } else {
    const double s = 2 * std::sqrt(1 + m[2][2] - m[0][0] - m[1][1]);
    w = (m[1][0] - m[0][1]) / s;
    x = (m[0][2] + m[2][0]) / s;
    y = (m[1][2] + m[2][1]) / s;
    z = s / 4;
  }
  const double norm = std::sqrt(x * x + y * y + z * z + w * w);
  const double sign = w < 0 ? -1 : 1;  // the w >= 0 hemisphere, so equal rotations print equally
  pose.quaternion = {sign * x / norm, sign * y / norm, sign * z / norm, sign * w / norm};
  return pose;
}

absl::StatusOr<std::unique_ptr<ResultWriter>> ResultWriter::Create(ResultWriterOptions options) {
  std::error_code error;
  std::filesystem::create_directories(options.dir, error);
  if (error) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create ", options.dir, ": ",
                                                   error.message()));
  }
  std::unique_ptr<ResultWriter> writer(new ResultWriter(options));
  if (options.trajectory) {
    writer->trajectory_.open(options.dir + "/trajectory.tum");
    writer->trajectory_ << "# timestamp tx ty tz qx qy qz qw (camera-to-world)\n";
  }
  if (options.tokens_csv) {
    writer->tokens_.open(options.dir + "/cache_tokens.csv");
    writer->tokens_ << "frame,layer,tokens,evicted\n";
  }
  if ((options.trajectory && !writer->trajectory_) || (options.tokens_csv && !writer->tokens_)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write in ", options.dir));
  }
  return writer;
}

absl::Status ResultWriter::Add(int64_t frame_index, const v1::FrameResult& result) {
  ++frames_;
  if (options_.npy) {
    const std::string dir = absl::StrFormat("%s/frame_%06d", options_.dir, frame_index);
    std::error_code error;
    std::filesystem::create_directories(dir, error);
    for (const v1::Tensor& tensor : result.outputs()) {
      const char* descr = tensor.dtype() == v1::TENSOR_DTYPE_FLOAT16 ? "<f2" : "<f4";
      if (absl::Status s = WriteNpyBytes(dir + "/" + tensor.name() + ".npy", descr,
                                         {tensor.shape().begin(), tensor.shape().end()},
                                         tensor.data());
          !s.ok()) {
        return s;
      }
    }
  }
  if (options_.trajectory) {
    if (const v1::Tensor* extrinsic = FindOutput(result, "extrinsic")) {
      absl::StatusOr<HostTensor> e = ToHostTensor(*extrinsic);
      if (!e.ok()) return e.status();
      if (e->values.size() != 12) return absl::InvalidArgumentError("extrinsic is not 3x4");
      const CameraPose pose = PoseFromExtrinsic(e->values.data());
      trajectory_ << absl::StrFormat("%.6f %.9g %.9g %.9g %.9g %.9g %.9g %.9g\n",
                                     static_cast<double>(frame_index) / options_.fps,
                                     pose.position[0], pose.position[1], pose.position[2],
                                     pose.quaternion[0], pose.quaternion[1], pose.quaternion[2],
                                     pose.quaternion[3]);
    }
  }
  if (options_.tokens_csv) {
    const v1::CacheState& cache = result.cache();
    for (int layer = 0; layer < cache.layer_tokens_size(); ++layer) {
      tokens_ << frame_index << ',' << layer << ',' << cache.layer_tokens(layer) << ','
              << (layer < cache.layer_evicted_size() ? cache.layer_evicted(layer) : 0) << '\n';
    }
  }
  if (options_.point_cloud) return AddPoints(result);
  return absl::OkStatus();
}

absl::Status ResultWriter::AddPoints(const v1::FrameResult& result) {
  const v1::Tensor* points = FindOutput(result, "world_points");
  const v1::Tensor* conf = FindOutput(result, "world_points_conf");
  const v1::Tensor* image = FindOutput(result, "images");
  if (points == nullptr || conf == nullptr) return absl::OkStatus();
  absl::StatusOr<HostTensor> xyz = ToHostTensor(*points);
  if (!xyz.ok()) return xyz.status();
  absl::StatusOr<HostTensor> c = ToHostTensor(*conf);
  if (!c.ok()) return c.status();
  const int64_t n = static_cast<int64_t>(c->values.size());
  if (static_cast<int64_t>(xyz->values.size()) != 3 * n) {
    return absl::InvalidArgumentError("world_points and world_points_conf disagree in size");
  }
  HostTensor rgb;
  if (image != nullptr) {
    absl::StatusOr<HostTensor> decoded = ToHostTensor(*image);
    if (!decoded.ok()) return decoded.status();
    if (static_cast<int64_t>(decoded->values.size()) == 3 * n) rgb = *std::move(decoded);
  }
  if (n == 0) return absl::OkStatus();
  std::vector<float> sorted = c->values;
  const size_t rank = static_cast<size_t>(
      std::clamp(options_.ply_conf_percentile / 100.0, 0.0, 1.0) * static_cast<double>(n - 1));
  std::nth_element(sorted.begin(), sorted.begin() + rank, sorted.end());
  const float threshold = sorted[rank];
  for (int64_t i = 0; i < n; ++i) {
    if (c->values[i] < threshold) continue;
    Point point;
    for (int k = 0; k < 3; ++k) {
      point.xyz[k] = xyz->values[3 * i + k];
      // images is [3, H, W]: channel k of pixel i.
      point.rgb[k] = rgb.values.empty() ? 255 : ToByte(rgb.values[k * n + i]);
    }
    // Reservoir sampling keeps a uniform sample of at most ply_max_points.
    ++points_seen_;
    if (static_cast<int64_t>(points_.size()) < options_.ply_max_points) {
      points_.push_back(point);
    } else {
      const int64_t slot = static_cast<int64_t>(sampler_() % static_cast<uint64_t>(points_seen_));
      if (slot < options_.ply_max_points) points_[slot] = point;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ResultWriter::Finish() {
  std::vector<std::string> written;
  if (options_.npy && frames_ > 0) written.push_back(options_.dir + "/frame_*/*.npy");
  if (options_.trajectory) {
    trajectory_.close();
    written.push_back(options_.dir + "/trajectory.tum");
  }
  if (options_.tokens_csv) {
    tokens_.close();
    written.push_back(options_.dir + "/cache_tokens.csv");
  }
  if (options_.point_cloud) {
    const std::string path = options_.dir + "/points.ply";
    std::ofstream ply(path, std::ios::binary);
    ply << "ply\nformat binary_little_endian 1.0\nelement vertex " << points_.size()
        << "\nproperty float x\nproperty float y\nproperty float z\n"
           "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n";
    for (const Point& point : points_) {
      ply.write(reinterpret_cast<const char*>(point.xyz), sizeof(point.xyz));
      ply.write(reinterpret_cast<const char*>(point.rgb), sizeof(point.rgb));
    }
    if (!ply) return absl::InternalError(absl::StrCat("cannot write ", path));
    written.push_back(path);
  }
  return written;
}

}  // namespace streamkv::client
