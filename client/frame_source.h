// Where a client's frames come from: a folder of images, or a synthetic moving pattern.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::client {

// A finite sequence of frames (images only; the runner numbers them). Not thread-safe.
class FrameSource {
 public:
  virtual ~FrameSource() = default;
  // The next frame's image, or nullopt at the end. An error ends the stream.
  virtual absl::StatusOr<std::optional<v1::Frame>> Next() = 0;
  // Frames in all, when known (for progress display).
  virtual std::optional<int64_t> size() const = 0;
};

// The JPEG and PNG files of `dir` in name order, sent as encoded bytes (the server decodes them).
// NotFound/InvalidArgument when the folder is missing or holds no image.
absl::StatusOr<std::unique_ptr<FrameSource>> ImageFolderSource(const std::string& dir);

enum class SyntheticEncoding { kRaw, kJpeg };

// `count` frames of height × width showing a smoothly moving colour pattern, as raw RGB or JPEG.
std::unique_ptr<FrameSource> SyntheticSource(int64_t count, int64_t height, int64_t width,
                                             SyntheticEncoding encoding);

// Compresses interleaved RGB (height · width · 3 bytes) to JPEG with libjpeg-turbo.
absl::StatusOr<std::string> EncodeJpeg(const std::string& rgb, int64_t height, int64_t width,
                                       int quality = 90);

}  // namespace streamkv::client
