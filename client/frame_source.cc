#include "client/frame_source.h"

#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace streamkv::client {
namespace {

class FolderSource final : public FrameSource {
 public:
  explicit FolderSource(std::vector<std::filesystem::path> paths) : paths_(std::move(paths)) {}

  absl::StatusOr<std::optional<v1::Frame>> Next() override {
    if (next_ == paths_.size()) return std::nullopt;
    const std::filesystem::path& path = paths_[next_++];
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
    v1::Frame frame;
    frame.set_encoded(std::string(std::istreambuf_iterator<char>(in), {}));
    return frame;
  }
  std::optional<int64_t> size() const override { return static_cast<int64_t>(paths_.size()); }

 private:
  const std::vector<std::filesystem::path> paths_;
  size_t next_ = 0;
};

class Synthetic final : public FrameSource {
 public:
  Synthetic(int64_t count, int64_t height, int64_t width, SyntheticEncoding encoding)
      : count_(count), height_(height), width_(width), encoding_(encoding) {}

  absl::StatusOr<std::optional<v1::Frame>> Next() override {
    if (index_ == count_) return std::nullopt;
    const std::string rgb = Pattern(index_++);
    v1::Frame frame;
    if (encoding_ == SyntheticEncoding::kJpeg) {
      absl::StatusOr<std::string> jpeg = EncodeJpeg(rgb, height_, width_);
      if (!jpeg.ok()) return jpeg.status();
      frame.set_encoded(*std::move(jpeg));
    } else {
      v1::RawImage& raw = *frame.mutable_raw();
      raw.set_height(static_cast<uint32_t>(height_));
      raw.set_width(static_cast<uint32_t>(width_));
      raw.set_rgb(rgb);
    }
    return frame;
  }
  std::optional<int64_t> size() const override { return count_; }

 private:
  // Diagonal colour bands drifting with the frame index, like a camera panning over a wall.
  std::string Pattern(int64_t index) const {
    std::string rgb(static_cast<size_t>(height_ * width_ * 3), '\0');
    const double shift = 3.0 * static_cast<double>(index);
    for (int64_t y = 0; y < height_; ++y) {
      for (int64_t x = 0; x < width_; ++x) {
        const double u = (static_cast<double>(x) + shift) / static_cast<double>(width_);
        const double v = static_cast<double>(y) / static_cast<double>(height_);
        char* pixel = &rgb[static_cast<size_t>((y * width_ + x) * 3)];
        pixel[0] = static_cast<char>(127.5 + 127.5 * std::sin(6.28 * (u + v)));
        pixel[1] = static_cast<char>(127.5 + 127.5 * std::sin(6.28 * (2 * u - v) + 1));
        pixel[2] = static_cast<char>(255 * v);
      }
    }
    return rgb;
  }

  const int64_t count_, height_, width_;
  const SyntheticEncoding encoding_;
  int64_t index_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FrameSource>> ImageFolderSource(const std::string& dir) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) {
    return absl::NotFoundError(absl::StrCat(dir, " is not a folder"));
  }
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string ext = absl::AsciiStrToLower(entry.path().extension().string());
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") paths.push_back(entry.path());
  }
  if (paths.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, " holds no JPEG or PNG"));
  std::sort(paths.begin(), paths.end());
  return std::unique_ptr<FrameSource>(new FolderSource(std::move(paths)));
}

std::unique_ptr<FrameSource> SyntheticSource(int64_t count, int64_t height, int64_t width,
                                             SyntheticEncoding encoding) {
  return std::make_unique<Synthetic>(count, height, width, encoding);
}

absl::StatusOr<std::string> EncodeJpeg(const std::string& rgb, int64_t height, int64_t width,
                                       int quality) {
  if (static_cast<int64_t>(rgb.size()) != height * width * 3) {
    return absl::InvalidArgumentError("EncodeJpeg: buffer size does not match the image size");
  }
  tjhandle handle = tjInitCompress();
  if (handle == nullptr) return absl::InternalError("libjpeg-turbo: cannot start a compressor");
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  const int failed = tjCompress2(handle, reinterpret_cast<const unsigned char*>(rgb.data()),
                                 static_cast<int>(width), 0, static_cast<int>(height), TJPF_RGB,
                                 &buffer, &size, TJSAMP_420, quality, 0);
  std::string jpeg;
  if (!failed) jpeg.assign(reinterpret_cast<const char*>(buffer), size);
  const std::string message = failed ? tjGetErrorStr2(handle) : "";
  tjFree(buffer);
  tjDestroy(handle);
  if (failed) return absl::InternalError(absl::StrCat("libjpeg-turbo: ", message));
  return jpeg;
}

}  // namespace streamkv::client
